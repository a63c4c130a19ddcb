"""Train step bootstrap: fetch the uploaded training source, unpack it and run it.

    python3 fetch_and_train.py --source-uri gs://bucket/source/<hash>/training_src.tar.gz \
        [--workdir DIR] [--executor-input JSON --log-metrics FILE] \
        -- <arguments for python -m training_src>

Standard library only (google-cloud-storage only for real ``gs://`` reads), because the
compiled pipeline inlines this file into the train step's command (``python3 -c``) and the
local run executes it as a script. ``ORCHESTRATOR_LOCAL_BUCKET_ROOT=/dir`` maps ``gs://b/k`` to
``/dir/b/k``; ``STORAGE_EMULATOR_HOST`` selects a storage emulator. Inlined, it must never hold
KFP's placeholder syntax (two opening braces): the launcher substitutes placeholders in the
whole command, code included.

With ``--executor-input`` (the executor input placeholder) and ``--log-metrics`` (the metrics
file the training wrote, the ``metrics`` output artifact's path), a successful run also reports the
file's scalar metrics as that artifact's metadata, in the executor output file the executor
input names (``outputs.outputFile``). That metadata is what a ``system.Metrics`` artifact shows
in Vertex AI Pipelines and the Kubeflow UI: what ``Metrics.log_metric`` writes in a Python
component (``kfp.dsl.executor.Executor.write_executor_output``), and how Google's own container
components report artifact metadata (``update_output_artifact`` in kubeflow/pipelines,
``components/google-cloud/google_cloud_pipeline_components/container/utils/artifact_utils.py``).
"""

import argparse
import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: The train step's output artifact (``Output[Metrics]``) whose metadata carries the metrics.
METRICS_OUTPUT = "metrics"


def scalar_metrics(metrics):
    """The top-level finite numbers of a metrics record (not booleans): what a Metrics
    artifact can show as scalars. Nested records (per class, the confusion matrix) stay in
    the artifact's file."""
    return {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def write_executor_output(executor_input, metrics, output=METRICS_OUTPUT):
    """Report ``metrics`` as the metadata of the output artifact ``output`` in the executor
    output file; every other output artifact is reported as announced."""
    outputs = json.loads(executor_input).get("outputs", {})
    path = Path(outputs["outputFile"])
    executor_output = {"artifacts": {}}
    if path.is_file():  # whatever this step reported already stays
        executor_output = json.loads(path.read_text() or "{}")
        executor_output.setdefault("artifacts", {})
    for name, announced in outputs.get("artifacts", {}).items():
        artifacts = [dict(a) for a in announced.get("artifacts", [])]
        if name == output and artifacts:
            artifacts[0]["metadata"] = {**artifacts[0].get("metadata", {}), **metrics}
        executor_output["artifacts"][name] = {"artifacts": artifacts}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(executor_output))
    return path


def split_gs_uri(uri):
    """``gs://bucket/key`` -> ``(bucket, key)``. A key that is not a clean relative name (a
    ``..``, ``.`` or empty segment, a leading ``/``, a backslash or NUL) is refused: with a
    local directory bucket it would reach outside the bucket (``orchestrator/objects.py``)."""
    bucket, _, key = uri[len("gs://") :].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]+[a-z0-9]", bucket) or len(bucket) > 222 or not key:
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI")
    if "\\" in key or "\0" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI with a clean key")
    return bucket, key


def read_bytes(uri):
    if not uri.startswith("gs://"):
        return Path(uri).read_bytes()
    bucket, key = split_gs_uri(uri)
    if os.environ.get("ORCHESTRATOR_LOCAL_BUCKET_ROOT"):
        return (Path(os.environ["ORCHESTRATOR_LOCAL_BUCKET_ROOT"]) / bucket / key).read_bytes()
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="local", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    return client.bucket(bucket).blob(key).download_as_bytes()


def unpack(data, target):
    """Extract a gzip tarball, refusing absolute paths, '..' and links out of ``target``."""
    root = Path(target).resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            path = (root / member.name).resolve()
            if root not in path.parents and path != root:
                raise ValueError(f"unsafe path in the source tarball: {member.name}")
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"unexpected entry type in the source tarball: {member.name}")
        archive.extractall(root)  # noqa: S202 - every member was checked above


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fetch_and_train")
    parser.add_argument("--source-uri", required=True)
    parser.add_argument("--workdir")
    parser.add_argument("--executor-input", help="the executor input (JSON)")
    parser.add_argument("--log-metrics", help="the metrics file to report with --executor-input")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if bool(args.executor_input) != bool(args.log_metrics):
        parser.error("--executor-input and --log-metrics go together")
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    try:
        data = read_bytes(args.source_uri)
    except (OSError, ValueError) as error:
        print(f"train: cannot fetch {args.source_uri}: {error}", file=sys.stderr)
        return 2
    workdir = args.workdir or tempfile.mkdtemp(prefix="training_src-")
    try:
        unpack(data, workdir)
    except (tarfile.TarError, ValueError) as error:
        print(f"train: {args.source_uri} is not a usable source tarball: {error}", file=sys.stderr)
        return 2
    if not (Path(workdir) / "training_src" / "__main__.py").is_file():
        print(f"train: {args.source_uri} has no training_src/__main__.py", file=sys.stderr)
        return 2
    print(f"train: running training source from {args.source_uri}", flush=True)
    code = subprocess.run([sys.executable, "-m", "training_src", *rest], cwd=workdir).returncode
    if code == 0 and args.executor_input:
        metrics = scalar_metrics(json.loads(Path(args.log_metrics).read_text()))
        written = write_executor_output(args.executor_input, metrics)
        print(f"train: logged {', '.join(sorted(metrics))} to {written}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
