"""Train step bootstrap: fetch the uploaded training source, unpack it and run it.

    python3 fetch_and_train.py --source-uri gs://bucket/source/<hash>/training_src.tar.gz \
        [--workdir DIR] -- <arguments for python -m training_src>

Standard library only (google-cloud-storage only for real ``gs://`` reads), because the
compiled pipeline inlines this file into the train step's command (``python3 -c``) and the
local run executes it as a script. ``ORCHESTRATOR_LOCAL_BUCKET_ROOT=/dir`` maps ``gs://b/k`` to
``/dir/b/k``; ``STORAGE_EMULATOR_HOST`` selects a storage emulator.
"""

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def read_bytes(uri):
    if not uri.startswith("gs://"):
        return Path(uri).read_bytes()
    bucket, _, key = uri[len("gs://") :].partition("/")
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
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    try:
        data = read_bytes(args.source_uri)
    except OSError as error:
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
    return subprocess.run([sys.executable, "-m", "training_src", *rest], cwd=workdir).returncode


if __name__ == "__main__":
    sys.exit(main())
