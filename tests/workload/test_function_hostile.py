"""Hostile messages to the trigger function (issue 11): nothing a message names reaches outside
the configured bucket, on the local directory bucket, fake-gcs-server or through what the
pipeline reads; no rejection tells whether a host path exists; every outcome is one log line.

Through a real functions-framework process and in process (``deliver``), as the Cloud Function
and the orchestrator's local executor call it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import objects
from orchestrator.errors import StepFailed
from orchestrator.run import steps
from tests.fixtures.functions import FunctionServer
from tests.fixtures.gcs import GcsServer
from tests.fixtures.gitrepo import GitRepo
from tests.workload.conftest import LocalBucket
from tests.workload.test_function import (
    SHA,
    encode,
    function_env,
    load_function,
    registry_entries,
    runs_in,
    valid_message,
)

REPO = Path(__file__).resolve().parents[2]
#: subprocesses import this checkout's code, whatever the environment's install points at
SUBPROCESS_ENV = {"PYTHONPATH": str(REPO)}


def evil_tarball(marker: Path) -> bytes:
    """A training source whose code, if anything ran it, would write ``marker``."""
    code = f"open({str(marker)!r}, 'w').write('ran')\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("training_src/__init__.py", b""), ("training_src/__main__.py", code)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def planted(local_bucket: LocalBucket) -> Iterator[tuple[Path, Path]]:
    """An evil tarball two levels above the bucket's directory (where ``gs://<bucket>/../../
    somewhere/evil.tar.gz`` points on the directory backend), and the file it would write."""
    somewhere = local_bucket.root.parent / "somewhere"
    somewhere.mkdir(exist_ok=True)
    marker = somewhere / "ran.txt"
    (somewhere / "evil.tar.gz").write_bytes(evil_tarball(marker))
    yield somewhere, marker
    assert not marker.exists(), "code from outside the bucket ran"


def hostile_messages(bucket: LocalBucket, host_file: str) -> dict[str, tuple[dict[str, Any], str]]:
    """case -> (message data, the start of the rejection reason)."""
    b = bucket.bucket
    clean = "is not a gs://<bucket>/<key> URI with a clean key"
    return {
        "source-dotdot": (
            valid_message(bucket, source_uri=f"gs://{b}/../../somewhere/evil.tar.gz"),
            f"field 'source_uri': 'gs://{b}/../../somewhere/evil.tar.gz' {clean}",
        ),
        "spec-host-file": (
            valid_message(bucket, pipeline_spec_uri=f"gs://{b}/../../..{host_file}"),
            f"field 'pipeline_spec_uri': 'gs://{b}/../../..{host_file}' {clean}",
        ),
        "spec-absolute-key": (
            valid_message(bucket, pipeline_spec_uri=f"gs://{b}/{host_file}"),
            f"field 'pipeline_spec_uri': 'gs://{b}/{host_file}' {clean}",
        ),
        "spec-dot": (
            valid_message(bucket, pipeline_spec_uri=f"gs://{b}/./pipelines/spec.yaml"),
            f"field 'pipeline_spec_uri': 'gs://{b}/./pipelines/spec.yaml' {clean}",
        ),
        "spec-backslash": (
            valid_message(bucket, pipeline_spec_uri=f"gs://{b}/..\\..\\x"),
            f"field 'pipeline_spec_uri': 'gs://{b}/..\\\\..\\\\x' {clean}",
        ),
        "source-nul": (
            valid_message(bucket, source_uri=f"gs://{b}/x\0.tar.gz"),
            f"message data holds a string with a NUL or a lone surrogate: 'gs://{b}/x\\x00.tar.gz'",
        ),
        "bucket-dotdot": (
            valid_message(bucket, source_uri="gs://../x.tar.gz"),
            "field 'source_uri': 'gs://../x.tar.gz' is not a gs://<bucket>/<key> URI",
        ),
        "source-other-bucket": (
            valid_message(bucket, source_uri="gs://someone-else/evil.tar.gz"),
            "the training source gs://someone-else/evil.tar.gz is outside the configured "
            f"bucket gs://{b}",
        ),
        "data-dotdot": (
            valid_message(bucket, data_uri=f"gs://{b}/../../..{host_file}"),
            f"field 'data_uri': 'gs://{b}/../../..{host_file}' {clean}",
        ),
        "schema-1-data-parameter": (
            valid_message(
                bucket, schema=1, parameters={"data_uri": f"gs://{b}/../../..{host_file}"}
            ),
            f"parameter 'data_uri': 'gs://{b}/../../..{host_file}' {clean}",
        ),
        "local-data": (
            valid_message(bucket, data_uri=host_file),
            f"the data {host_file} is a local path, which the function reads only when the "
            "orchestrator hands it the run in process (CT_ALLOW_LOCAL_DATA)",
        ),
        "schema-1-local-data-parameter": (
            valid_message(bucket, schema=1, parameters={"data_uri": host_file}),
            f"the data {host_file} is a local path, which the function reads only when",
        ),
    }


#: a host file that exists, and one that does not: each rejection must read the same
HOST_FILES = ("/etc/passwd", "/nonexistent-ct-host-file")
CASES = sorted(hostile_messages(LocalBucket(Path(), "b", "", "", Path()), "/x"))


@pytest.fixture(scope="module")
def served(
    functions_framework: Callable[..., FunctionServer],
    local_bucket: LocalBucket,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[FunctionServer, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("hostile-root")
    env = {**function_env(local_bucket, root), **SUBPROCESS_ENV}
    server = functions_framework(
        source=REPO / "function/main.py", target="on_message", env=env, cwd=REPO
    )
    return server, root, env


def _lines(server: FunctionServer, message_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(x)
        for x in server.log().splitlines()
        if x.startswith('{"severity"') and json.loads(x).get("message_id") == message_id
    ]


@pytest.mark.parametrize("case", CASES)
def test_uris_outside_the_bucket_are_rejected_through_functions_framework(
    served: tuple[FunctionServer, Path, dict[str, str]],
    local_bucket: LocalBucket,
    planted: tuple[Path, Path],
    case: str,
) -> None:
    server, root, env = served
    reasons = []
    for host_file in HOST_FILES:
        data, reason = hostile_messages(local_bucket, host_file)[case]
        message_id = f"h-{case}-{len(reasons)}"
        attributes = {"commit": SHA, "schema": str(data["schema"])}
        status, _ = server.post_pubsub(encode(data), attributes, message_id=message_id)
        assert status == 200  # acknowledged: redelivery cannot make it acceptable
        [line] = _lines(server, message_id)
        assert line["severity"] == "ERROR"
        assert line["message"].startswith(f"rejected message {message_id}: {reason}")
        reasons.append(line["message"].split(": ", 1)[1].replace(host_file, "<path>"))
    # whether the host path exists changes nothing in the answer
    assert reasons[0] == reasons[1]
    assert runs_in(root) == []
    assert registry_entries(local_bucket, env) == []


def _deliver(fn: Any, data: bytes, attributes: dict[str, str], message_id: str, env: Any) -> Any:
    envelope = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
        }
    }
    return fn.deliver(envelope, None, env)


@pytest.mark.parametrize("backend", ["local-dir", "fake-gcs-server"])
def test_uris_outside_the_bucket_are_rejected_in_process_on_every_storage_backend(
    local_bucket: LocalBucket,
    gcs_server: GcsServer,
    planted: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
) -> None:
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root")
    if backend == "fake-gcs-server":
        with contextlib.suppress(urllib.error.HTTPError):  # 409: made by an earlier test
            gcs_server.create_bucket(local_bucket.bucket)  # the same name, nothing in it
        env = {**{k: v for k, v in env.items() if k != objects.LOCAL_BUCKET_ROOT_VAR},
               **gcs_server.env}  # fmt: skip
    for case in CASES:
        for host_file in HOST_FILES:
            data, reason = hostile_messages(local_bucket, host_file)[case]
            attributes = {"commit": SHA, "schema": str(data["schema"])}
            assert _deliver(fn, encode(data), attributes, f"p-{case}", env) is None
            [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
            assert line["message"].startswith(f"rejected message p-{case}: {reason}"), case
    assert not (tmp_path / "root").exists()


def test_a_notification_for_an_object_outside_the_bucket_is_rejected(
    local_bucket: LocalBucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root", CT_DATA_PREFIX="data/")
    attributes = {
        "eventType": "OBJECT_FINALIZE",
        "bucketId": local_bucket.bucket,
        "objectId": "data/../../../etc/passwd",
        "objectGeneration": "1",
        "payloadFormat": "NONE",
    }
    assert _deliver(fn, b"", attributes, "n-1", env) is None
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert line["message"].startswith(
        "rejected message n-1: the notification names an unusable object: 'data/../../../etc/"
        "passwd': an object name must be a clean relative key"
    )


def test_in_process_the_function_reads_a_local_data_path(
    local_bucket: LocalBucket, tmp_path: Path
) -> None:
    """What the orchestrator's in-process call allows (trigger --data FILE): the file must
    exist; a served function never gets this far (above)."""
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root", CT_ALLOW_LOCAL_DATA="true")
    config = fn.Config.from_env(env)
    with pytest.raises(fn.MessageError, match=r"the data /nonexistent/x\.csv does not exist"):
        fn.prepare(encode(valid_message(local_bucket, data_uri="/nonexistent/x.csv")), {},
                   config, env)  # fmt: skip
    data = tmp_path / "x.csv"
    data.write_text("label\n1\n")
    request = fn.prepare(encode(valid_message(local_bucket, data_uri=str(data))), {}, config, env)
    assert request.data_uri == str(data)


# -- what the pipeline reads ------------------------------------------------------------------


READERS = ["pipeline/fetch_and_train.py", "components/validator/main.py", "training_src/storage.py"]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    "uri",
    ["gs://b-1/../../etc/passwd", "gs://../etc/passwd", "gs://b-1//etc/passwd",
     "gs://b-1/a/./b", "gs://b-1/a\\..\\b", "gs://b-1/a\0b"],
)  # fmt: skip
def test_the_pipelines_readers_refuse_keys_that_leave_the_bucket(
    reader: str, uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: the copies of "read a gs:// URI" the pipeline runs refuse what the
    function already refused, before any backend sees it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"reader_{abs(hash(reader))}", REPO / reader)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv(objects.LOCAL_BUCKET_ROOT_VAR, str(tmp_path / "root"))
    with pytest.raises(ValueError, match="is not a gs://<bucket>/<key> URI"):
        module.read_bytes(uri)


def test_the_train_bootstrap_refuses_a_source_outside_the_bucket(
    local_bucket: LocalBucket, planted: tuple[Path, Path]
) -> None:
    somewhere, marker = planted
    uri = f"gs://{local_bucket.bucket}/../../{somewhere.name}/evil.tar.gz"
    done = subprocess.run(
        [sys.executable, str(REPO / "pipeline/fetch_and_train.py"), "--source-uri", uri],
        env={**os.environ, objects.LOCAL_BUCKET_ROOT_VAR: str(local_bucket.root)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"train: cannot fetch {uri}: ")
    assert not marker.exists()


# -- messages that say too little or too much (item 4) ----------------------------------------


def test_a_truncated_spec_is_named_by_its_uri(
    local_bucket: LocalBucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root")
    spec = local_bucket.spec_path.read_bytes()
    uri = f"gs://{local_bucket.bucket}/pipelines/truncated-{os.getpid()}.yaml"
    objects.write(uri, spec[: len(spec) // 3] + b"\n  - [", env, if_generation=None)
    data = encode(valid_message(local_bucket, pipeline_spec_uri=uri))
    assert _deliver(fn, data, {}, "t-1", env) is None
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert line["message"].startswith(
        f"rejected message t-1: the pipeline spec {uri} is not a compiled KFP pipeline ("
    )


def test_log_lines_are_one_line_whatever_the_message_holds(
    local_bucket: LocalBucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root", CT_DATA_PREFIX="data/")
    # a message id with a line break, rejected
    assert _deliver(fn, b"{", {}, "evil\nid\x1b[2J", env) is None
    # an object name with a line break, ignored
    attributes = {
        "eventType": "OBJECT_FINALIZE",
        "bucketId": local_bucket.bucket,
        "objectId": "elsewhere/a\nINFO forged line",
        "objectGeneration": "1",
        "payloadFormat": "NONE",
    }
    assert _deliver(fn, b"", attributes, "n\n2", env) is not None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    messages = [json.loads(line)["message"] for line in lines]
    assert messages[0].startswith("rejected message evil\\nid\\x1b[2J: message data is not JSON")
    assert messages[1] == (
        f"ignored message n\\n2: gs://{local_bucket.bucket}/elsewhere/a\\nINFO forged line is "
        "outside the data prefix 'data/'"
    )
    assert not any(c in m for m in messages for c in "\n\r\x1b")


def test_the_publish_step_names_the_spec_the_function_cannot_read(
    make_git_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.workload_repo import append_line, workload_repo
    from tests.test_run_steps import context

    repo = workload_repo(make_git_repo)
    append_line(repo, "training_src/train.py", "# change")
    repo.commit()
    monkeypatch.chdir(repo.path.parent)
    ctx = context(repo)
    objects.write(ctx.artifacts.spec_uri, b"pipelineSpec: [", ctx.env, if_generation=None)
    with pytest.raises(StepFailed) as error:
        steps.run_step(steps.action_from_id("publish"), ctx)
    assert str(error.value).startswith(
        "the trigger function rejected the message: the pipeline spec "
        f"{ctx.artifacts.spec_uri} is not a compiled KFP pipeline ("
    )
