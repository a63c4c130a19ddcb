"""Fuzzing the trigger function with hypothesis (issue 11, "Hostile input"): whatever CloudEvent
data, Pub/Sub envelope, attributes or run request arrive, ``deliver`` (the body of
``on_message``) returns normally, so functions-framework acknowledges, after exactly one log
line of one line; it raises only for a transient failure it wants redelivered, which none of
these inputs is.

In process, as the orchestrator's local executor calls the function, on the local directory
bucket with the local backend. The backend itself is replaced by a stand-in that records the
request: what is fuzzed is the decoding and validation of the message, not kfp.local (a valid
message that reached it would otherwise start a real pipeline run per example).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import message, objects
from tests.fixtures.functions import FunctionServer
from tests.workload.conftest import LocalBucket
from tests.workload.test_function import (
    PARAMS,
    REPO,
    SHA,
    function_env,
    load_function,
    valid_message,
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
#: a key Cloud Storage takes (1024 bytes at most) but no file system does (255 per name)
LONG_KEY = f"gs://ct-test-bucket/{'a' * 300}.yaml"
WEIRD = st.text(max_size=30) | st.sampled_from(
    ["", "gs://ct-test-bucket/../x", "gs://other/x", "/etc/passwd", "a\nb", "\x1b[2J", "\udcff",
     "x" * 5000, "9" * 5000, "gs://ct-test-bucket/", "gs://ct-test-bucket/a//b", "HEAD",
     LONG_KEY, "gs://ct-test-bucket/pipelines/spec.yaml/x"]
)  # fmt: skip


@st.composite
def run_requests(draw: st.DrawFn, bucket: LocalBucket) -> bytes:
    """A run request: a valid one with fields removed, added or replaced by hostile values,
    or not a run request at all (JSON of any shape, bytes that are not JSON)."""
    kind = draw(st.sampled_from(["near-valid", "near-valid", "json", "bytes"]))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    data: dict[str, Any] = valid_message(bucket, schema=draw(st.sampled_from([1, 2, 2, 3])))
    names = [*sorted(data), "extra", "data_uri"]
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        if draw(st.booleans()):
            data.pop(name, None)
        else:
            data[name] = draw(JSON | WEIRD)
    if draw(st.booleans()):
        parameters = dict(PARAMS)
        parameters[draw(st.sampled_from([*PARAMS, "unknown", "a\nb"]))] = draw(JSON | WEIRD)
        data["parameters"] = parameters
    return json.dumps(data).encode()


NOTIFICATION = st.fixed_dictionaries(
    {
        "eventType": st.sampled_from(["OBJECT_FINALIZE", "OBJECT_DELETE", ""]) | WEIRD,
        "bucketId": st.sampled_from(["ct-test-bucket", "other"]) | WEIRD,
        "objectId": st.sampled_from(["data/x.csv", "data/../../etc/passwd", "data/"]) | WEIRD,
        "objectGeneration": st.sampled_from(["1", "99999999999999999999999", "-1"]) | WEIRD,
        "payloadFormat": st.sampled_from(["NONE", "JSON_API_V1"]) | WEIRD,
    }
)
ATTRIBUTES = (
    st.just({"commit": SHA, "schema": "2"})
    | st.dictionaries(st.sampled_from(["commit", "schema", "ct-trigger", "x"]), WEIRD, max_size=3)
    | NOTIFICATION
    | st.fixed_dictionaries({"ct-trigger": st.sampled_from(["schedule", "manual"]) | WEIRD})
    | JSON
)


@st.composite
def envelopes(draw: st.DrawFn, bucket: LocalBucket) -> object:
    """The CloudEvent's data as functions-framework hands it over: usually a Pub/Sub
    envelope (``message.data`` base64, ``attributes``, ``messageId``, ``publishTime``), each
    part possibly of the wrong type; sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    data = draw(run_requests(bucket))
    pubsub: dict[str, Any] = {
        "data": draw(
            st.just(base64.b64encode(data).decode())
            | st.just(data.decode("latin-1"))  # not base64
            | JSON
        ),
        "attributes": draw(ATTRIBUTES),
        "messageId": draw(st.text(max_size=20) | JSON),
        "publishTime": draw(st.sampled_from(["2030-01-01T00:00:00Z", "9" * 5000]) | JSON),
    }
    for name in draw(st.lists(st.sampled_from(sorted(pubsub)), max_size=2, unique=True)):
        del pubsub[name]
    return {"message": pubsub, "subscription": draw(st.text(max_size=10) | JSON)}


def deliver(fn: Any, envelope: object, env: dict[str, str]) -> tuple[object, list[str]]:
    """``deliver`` with the backend stood in for; its log lines."""

    def backend(request: Any, config: Any, environ: Any) -> Any:
        return fn.RunResult(request.run_id, "local", "succeeded")

    err = io.StringIO()
    with mock.patch.dict(fn.BACKENDS, {"local": backend}), contextlib.redirect_stderr(err):
        result = fn.deliver(envelope, None, env)
    return result, err.getvalue().splitlines()


def assert_acknowledged_with_one_line(result: object, lines: list[str]) -> None:
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["severity"] in ("INFO", "ERROR"), entry
    # one line to any reader: no C0 or C1 control, no Unicode line or paragraph separator
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", entry["message"]), entry
    # valid UTF-8 once parsed: no lone surrogate, in the message or the message id
    entry["message"].encode()
    str(entry.get("message_id", "")).encode()
    if entry["severity"] == "ERROR":
        assert result is None
        assert entry["message"].startswith("rejected message "), entry


@pytest.fixture(scope="module")
def fuzz_env(local_bucket: LocalBucket, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The function's settings, with data notifications on and a deploy ledger to retrain."""
    env = function_env(local_bucket, tmp_path_factory.mktemp("fuzz-root"), CT_DATA_PREFIX="data/")
    state = message.DeployedState(
        branch="main",
        pipeline="default",
        commit=SHA,
        ref="refs/heads/main",
        pipeline_spec_uri=local_bucket.spec_uri,
        source_uri=local_bucket.source_uri,
        images=dict(valid_message(local_bucket)["images"]),
        parameters=dict(PARAMS),
    )
    ledger = f"gs://{local_bucket.bucket}/{env['CT_STATE_PREFIX']}/ledger/main/default.json"
    objects.write(ledger, message.encode_state(state), env, if_generation=None)
    return env


@FUZZ
@given(data=st.data())
def test_fuzzed_envelopes_are_acknowledged_with_one_line(
    local_bucket: LocalBucket, fuzz_env: dict[str, str], data: st.DataObject
) -> None:
    envelope = data.draw(envelopes(local_bucket))
    # a registry of its own per example: a valid request is started, never a duplicate
    env = {**fuzz_env, "CT_STATE_PREFIX": f"{fuzz_env['CT_STATE_PREFIX']}-{uuid.uuid4().hex[:8]}"}
    env["CT_LEDGER_URI"] = (
        f"gs://{local_bucket.bucket}/{fuzz_env['CT_STATE_PREFIX']}/ledger/main/default.json"
    )
    result, lines = deliver(load_function(), envelope, env)
    assert_acknowledged_with_one_line(result, lines)


@FUZZ
@given(data=st.data())
def test_fuzzed_run_requests_are_started_or_rejected_with_one_line(
    local_bucket: LocalBucket, fuzz_env: dict[str, str], data: st.DataObject
) -> None:
    """The data payload alone, in a well-formed envelope with the attributes the orchestrator
    sets: the run request's decoding and validation against the spec."""
    payload = data.draw(run_requests(local_bucket))
    envelope = {
        "message": {
            "data": base64.b64encode(payload).decode(),
            "attributes": {"commit": SHA, "schema": "2"},
            "messageId": "fuzz",
        }
    }
    env = {**fuzz_env, "CT_STATE_PREFIX": f"{fuzz_env['CT_STATE_PREFIX']}-{uuid.uuid4().hex[:8]}"}
    result, lines = deliver(load_function(), envelope, env)
    assert_acknowledged_with_one_line(result, lines)


def test_the_stand_in_backend_starts_a_valid_request(
    local_bucket: LocalBucket, fuzz_env: dict[str, str], tmp_path: Path
) -> None:
    """The fuzzed runs reach the backend when the message is valid: the stand-in is called."""
    envelope = {
        "message": {
            "data": base64.b64encode(json.dumps(valid_message(local_bucket)).encode()).decode(),
            "attributes": {"commit": SHA, "schema": "2"},
            "messageId": "fuzz-valid",
        }
    }
    env = {**fuzz_env, "CT_STATE_PREFIX": f"fuzz-{uuid.uuid4().hex[:8]}"}
    result, lines = deliver(load_function(), envelope, env)
    assert getattr(result, "status", None) == "succeeded"
    assert json.loads(lines[0])["message"].startswith("message fuzz-valid: run ")


def test_a_lone_surrogate_in_an_attribute_or_the_message_id_is_logged_as_valid_utf8(
    local_bucket: LocalBucket, fuzz_env: dict[str, str]
) -> None:
    """Found by the fuzzing above: JSON's "\\udcff" escape becomes a lone surrogate in the
    parsed envelope, which the log line passed on for Cloud Logging to choke on."""
    attributes = {
        "eventType": "\udcff",
        "bucketId": local_bucket.bucket,
        "objectId": "data/x.csv",
        "objectGeneration": "1",
        "payloadFormat": "NONE",
    }
    envelope = {"message": {"data": "", "attributes": attributes, "messageId": "m-\udcff\n"}}
    result, lines = deliver(load_function(), envelope, fuzz_env)
    assert_acknowledged_with_one_line(result, lines)
    entry = json.loads(lines[0])
    assert entry["message_id"] == "m-\\udcff\\n"
    assert entry["message"] == (
        f"ignored message m-\\udcff\\n: \\udcff gs://{local_bucket.bucket}/data/x.csv: only "
        "OBJECT_FINALIZE (a new object) starts a run"
    )


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (
            LONG_KEY,
            f"{LONG_KEY}: the object name is too long for the local bucket directory ",
        ),
        (
            "gs://ct-test-bucket/pipelines/spec.yaml/x",
            "the pipeline spec gs://ct-test-bucket/pipelines/spec.yaml/x does not exist",
        ),
    ],
    ids=["long-key", "key-below-a-file"],
)
def test_a_spec_uri_the_directory_bucket_cannot_hold_is_rejected_not_redelivered(
    local_bucket: LocalBucket, fuzz_env: dict[str, str], uri: str, reason: str
) -> None:
    """Found by the fuzzing above: the directory backend's OSError (ENAMETOOLONG) escaped as
    a transient failure, so the message would have been redelivered for an hour."""
    data = json.dumps(valid_message(local_bucket, pipeline_spec_uri=uri)).encode()
    envelope = {"message": {"data": base64.b64encode(data).decode(), "messageId": "long"}}
    result, lines = deliver(load_function(), envelope, fuzz_env)
    assert_acknowledged_with_one_line(result, lines)
    assert json.loads(lines[0])["message"].startswith(f"rejected message long: {reason}")


@pytest.mark.parametrize(
    "attributes",
    [
        {"ct-trigger": "schedule"},
        {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": "ct-test-bucket",
            "objectId": "data/new.csv",
            "objectGeneration": "7",
            "payloadFormat": "NONE",
        },
    ],
    ids=["scheduled-retrain", "data-notification"],
)
def test_a_corrupt_ledger_is_named_by_its_uri_when_a_message_needs_it(
    local_bucket: LocalBucket, fuzz_env: dict[str, str], attributes: dict[str, str]
) -> None:
    """Errors about a bucket object name its URI: the deploy ledger a retrain starts from."""
    env = {**fuzz_env, "CT_STATE_PREFIX": f"fuzz-{uuid.uuid4().hex[:8]}"}
    ledger = f"gs://{local_bucket.bucket}/{env['CT_STATE_PREFIX']}/ledger/main/default.json"
    objects.write(ledger, b'{"schema": 1, "bra', env, if_generation=None)
    envelope = {"message": {"data": "", "attributes": attributes, "messageId": "corrupt"}}
    result, lines = deliver(load_function(), envelope, env)
    assert_acknowledged_with_one_line(result, lines)
    assert json.loads(lines[0])["message"].startswith(
        f"rejected message corrupt: the deploy-ledger record {ledger} is unusable: the record "
        "is not JSON"
    )


@pytest.fixture(scope="module")
def served(
    functions_framework: Callable[..., FunctionServer],
    local_bucket: LocalBucket,
    tmp_path_factory: pytest.TempPathFactory,
) -> FunctionServer:
    """The function in a real functions-framework process. Its bucket is not the one the
    fuzzed requests name, so that none can start a real pipeline run (the in-process tests
    above take valid ones to the backend)."""
    env = {
        **function_env(local_bucket, tmp_path_factory.mktemp("served-root")),
        "CT_BUCKET": "ct-other-bucket",
        "CT_DATA_PREFIX": "data/",
        "PYTHONPATH": str(REPO),
    }
    return functions_framework(
        source=REPO / "function/main.py", target="on_message", env=env, cwd=REPO
    )


@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_fuzzed_envelopes_through_functions_framework_are_acknowledged(
    served: FunctionServer, local_bucket: LocalBucket, data: st.DataObject
) -> None:
    """The same envelopes as JSON over HTTP, parsed by functions-framework: HTTP 200 (Pub/Sub
    takes it as an acknowledgement) and one log line."""
    envelope = data.draw(envelopes(local_bucket))
    before = len(_function_lines(served))
    status, _ = served.post_cloudevent(envelope)
    assert status == 200
    new = _function_lines(served)[before:]
    assert len(new) == 1, new
    assert_acknowledged_with_one_line(None if "rejected" in new[0] else object(), new)


def _function_lines(server: FunctionServer) -> list[str]:
    return [line for line in server.log().splitlines() if line.startswith('{"severity"')]
