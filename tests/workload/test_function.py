"""function/: a real functions-framework process receiving Pub/Sub CloudEvents over HTTP, and
``handle_message`` in process as the orchestrator calls it."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import sys
import threading
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator import message, objects
from tests.fixtures._services import free_port
from tests.fixtures.functions import FunctionServer
from tests.workload.conftest import LocalBucket

REPO = Path(__file__).resolve().parents[2]
SHA = "89abcdef0123456789abcdef0123456789abcdef"
PARAMS = tomllib.loads((REPO / "pipeline/params.toml").read_text())


def load_function() -> ModuleType:
    """Load function/main.py by path, as the orchestrator's local executor does."""
    if "ct_function_main" in sys.modules:
        return sys.modules["ct_function_main"]
    spec = importlib.util.spec_from_file_location("ct_function_main", REPO / "function/main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ct_function_main"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


IMAGES = {"validator": "r/validator:1", "evaluator": "r/evaluator:1"}


def valid_message(bucket: LocalBucket, **overrides: Any) -> dict[str, Any]:
    """A schema-2 run request for the bucket's spec and source (``schema=1`` drops the new
    fields)."""
    data: dict[str, Any] = {
        "schema": 2,
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": bucket.spec_uri,
        "source_uri": bucket.source_uri,
        "images": dict(IMAGES),
        "parameters": dict(PARAMS),
        "actions": [{"id": "upload_source", "summary": "training_src/train.py (rule source)"}],
        "data_uri": "",
        "data_version": "",
        "reason": "commit",
        "request_id": "request-1",
        "retry": False,
    }
    data.update(overrides)
    if data["schema"] == 1:
        for name in ("data_uri", "data_version", "reason", "request_id", "retry"):
            data.pop(name, None)
    return data


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def runs_in(root: Path) -> list[Path]:
    return (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.exists()
        else []
    )


def function_env(bucket: LocalBucket, pipeline_root: Path, **extra: str) -> dict[str, str]:
    """The function's environment; its registry under a prefix of its own (the local bucket
    is shared by the session)."""
    return {
        "CT_BUCKET": bucket.bucket,
        "CT_BACKEND": "local",
        "CT_PIPELINE_ROOT": str(pipeline_root),
        "CT_STATE_PREFIX": f"ct-{uuid.uuid4().hex[:10]}",
        "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(bucket.root),
        **extra,
    }


def registry_entries(bucket: LocalBucket, env: dict[str, str]) -> list[str]:
    return objects.list_keys(bucket.bucket, f"{env['CT_STATE_PREFIX']}/runs/", env)


def expected_run_id(bucket: LocalBucket, data: dict[str, Any]) -> str:
    return message.run_identity(
        hashlib.sha256(bucket.spec_path.read_bytes()).hexdigest(),
        data["source_uri"],
        data["images"],
        data["parameters"],
        data.get("data_uri", ""),
        data.get("data_version", ""),
    )


@pytest.fixture(scope="module")
def rejecting_server(
    functions_framework: Callable[..., FunctionServer],
    local_bucket: LocalBucket,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[FunctionServer, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("reject-root")
    env = function_env(local_bucket, root)
    server = functions_framework(
        source=REPO / "function/main.py", target="on_message", env=env, cwd=REPO
    )
    return server, root, env


def _malformed(bucket: LocalBucket) -> list[tuple[str, bytes | str, bool, str]]:
    """(case, data, raw base64 field?, expected reason)."""
    params_bad = {**PARAMS, "hidden_units": "sixty-four"}
    missing = valid_message(bucket)
    del missing["source_uri"]
    return [
        ("bad-base64", "@@not-base64@@", True, "message data is not valid base64"),
        ("bad-json", b"{'schema': 1", False, "message data is not JSON"),
        ("empty", b"", False, "message data is empty"),
        ("deep", b"[" * 100_000, False, "message data is nested too deeply"),
        (
            "digits",
            b'{"schema": ' + b"9" * 5000 + b"}",
            False,
            "message data holds an integer of 5000 digits (at most 64)",
        ),
        ("nan", b'{"schema": NaN}', False, "message data holds NaN, which is not a JSON number"),
        (
            "deep-closed",
            b"[" * 100_000 + b"]" * 100_000,
            False,
            "message data is nested too deeply",
        ),
        (
            "deep-objects",
            b'{"p":' * 100_000 + b"1" + b"}" * 100_000,
            False,
            "message data is nested too deeply",
        ),
        (
            "digits-in-parameters",
            _with_raw_parameter(bucket, "hidden_units", b"9" * 5000),
            False,
            "message data holds an integer of 5000 digits (at most 64)",
        ),
        (
            "nan-in-parameters",
            _with_raw_parameter(bucket, "alpha", b"NaN"),
            False,
            "message data holds NaN, which is not a JSON number",
        ),
        (
            "infinity-in-parameters",
            _with_raw_parameter(bucket, "alpha", b"-Infinity"),
            False,
            "message data holds -Infinity, which is not a JSON number",
        ),
        (
            "overflow-in-parameters",
            _with_raw_parameter(bucket, "alpha", b"1e999"),
            False,
            "message data holds a number too large for a double: '1e999'",
        ),
        (
            "schema",
            encode(valid_message(bucket, schema=7)),
            False,
            "schema version 7 is not supported (expected 1 or 2)",
        ),
        (
            "request-id",
            encode(valid_message(bucket, request_id="a b")),
            False,
            "field 'request_id' must be 1 to 64 characters",
        ),
        (
            "not-a-pipeline",
            encode(valid_message(bucket, pipeline_spec_uri=bucket.source_uri)),
            False,
            f"the pipeline spec {bucket.source_uri} is not a compiled KFP pipeline",
        ),
        (
            "local-data-missing",
            encode(valid_message(bucket, data_uri="/nonexistent/new.csv")),
            False,
            "the data /nonexistent/new.csv is a local path, which the function reads only "
            "when the orchestrator hands it the run in process (CT_ALLOW_LOCAL_DATA)",
        ),
        (
            "sha",
            encode(valid_message(bucket, commit="1234")),
            False,
            "field 'commit' must be a 40-character lowercase hex sha, not '1234'",
        ),
        (
            "outside-bucket",
            encode(valid_message(bucket, pipeline_spec_uri="gs://someone-else/p.yaml")),
            False,
            f"the pipeline spec gs://someone-else/p.yaml is outside the configured bucket gs://{bucket.bucket}",
        ),
        (
            "param-type",
            encode(valid_message(bucket, parameters=params_bad)),
            False,
            "parameter 'hidden_units' must be number integer, not str 'sixty-four'",
        ),
        (
            "unknown-param",
            encode(valid_message(bucket, parameters={**PARAMS, "dropout": 0.1})),
            False,
            "parameter 'dropout' is not a pipeline parameter",
        ),
        ("missing-field", encode(missing), False, "missing field(s): source_uri"),
        (
            "no-spec",
            encode(valid_message(bucket, pipeline_spec_uri=f"gs://{bucket.bucket}/nothing.yaml")),
            False,
            f"the pipeline spec gs://{bucket.bucket}/nothing.yaml does not exist",
        ),
    ]


def _with_raw_parameter(bucket: LocalBucket, name: str, raw: bytes) -> bytes:
    """A valid message whose parameter ``name`` is the JSON text ``raw`` (what json.dumps
    cannot write: NaN, Infinity, huge literals)."""
    placeholder = "__raw_parameter__"
    data = encode(valid_message(bucket, parameters={**PARAMS, name: placeholder}))
    return data.replace(json.dumps(placeholder).encode(), raw)


CASES = [
    "bad-base64",
    "bad-json",
    "empty",
    "deep",
    "digits",
    "nan",
    "deep-closed",
    "deep-objects",
    "digits-in-parameters",
    "nan-in-parameters",
    "infinity-in-parameters",
    "overflow-in-parameters",
    "schema",
    "request-id",
    "not-a-pipeline",
    "local-data-missing",
    "sha",
    "outside-bucket",
    "param-type",
    "unknown-param",
    "missing-field",
    "no-spec",
]


@pytest.mark.parametrize("case", CASES)
def test_malformed_message_is_acked_with_a_reason_and_no_run(
    rejecting_server: tuple[FunctionServer, Path, dict[str, str]],
    local_bucket: LocalBucket,
    case: str,
) -> None:
    server, root, env = rejecting_server
    (_, data, raw, reason) = next(c for c in _malformed(local_bucket) if c[0] == case)
    status, _ = server.post_pubsub(
        data,
        {"commit": SHA, "schema": "2"} if case not in ("sha", "schema") else {},
        message_id=f"m-{case}",
        raw_data=raw,
    )
    assert status == 200  # acknowledged: no endless redelivery
    lines = [
        json.loads(x) for x in server.log().splitlines() if x.startswith("{") and f"m-{case}" in x
    ]
    assert len(lines) == 1
    assert lines[0]["message"].startswith(f"rejected message m-{case}: {reason}")
    assert lines[0]["severity"] == "ERROR"
    assert runs_in(root) == []
    assert registry_entries(local_bucket, env) == []


@pytest.mark.parametrize(
    ("case", "envelope", "reason"),
    [
        ("no-message", {"unexpected": True}, "the event carries no Pub/Sub message data"),
        (
            "list-attributes",
            {"message": {"data": "e30=", "attributes": ["commit"], "messageId": "m-list"}},
            "message attributes must map names to strings, not a list",
        ),
        (
            "string-attributes",
            {"message": {"data": "e30=", "attributes": "commit", "messageId": "m-str"}},
            "message attributes must map names to strings, not a string",
        ),
        (
            "data-not-a-string",
            {"message": {"data": ["e30="], "messageId": "m-data"}},
            "the event carries no Pub/Sub message data",
        ),
        (
            "message-id-a-list",
            {"message": {"data": "e30=", "messageId": ["x"]}},
            "field 'schema' is missing or not an integer",
        ),
        (
            "attribute-not-a-string",
            {"message": {"data": "e30=", "attributes": {"commit": 5}, "messageId": "m-int"}},
            "message attribute 'commit' must be a string, not an integer",
        ),
        # The CloudEvent's data is not a Pub/Sub envelope at all.
        (
            "data-a-list",
            [{"message": {"data": "e30="}}],
            "the event carries no Pub/Sub message data",
        ),
        ("data-a-string", "e30=", "the event carries no Pub/Sub message data"),
        ("data-null", None, "the event carries no Pub/Sub message data"),
        ("data-a-number", 12, "the event carries no Pub/Sub message data"),
        ("message-a-list", {"message": ["e30="]}, "the event carries no Pub/Sub message data"),
        ("message-a-string", {"message": "e30="}, "the event carries no Pub/Sub message data"),
        ("message-null", {"message": None}, "the event carries no Pub/Sub message data"),
        (
            "publish-time-hostile",
            {"message": {"data": "e30=", "messageId": "m-t", "publishTime": "9" * 5000}},
            "field 'schema' is missing or not an integer",
        ),
    ],
)
def test_hostile_envelopes_are_rejected(
    rejecting_server: tuple[FunctionServer, Path, dict[str, str]],
    case: str,
    envelope: Any,
    reason: str,
) -> None:
    server, root, _ = rejecting_server
    before = len(server.log().splitlines())
    status, _ = server.post_cloudevent(envelope)
    assert status == 200
    new = [json.loads(x) for x in server.log().splitlines()[before:] if x.startswith("{")]
    pubsub = envelope.get("message") if isinstance(envelope, dict) else None
    message_id = pubsub.get("messageId", "?") if isinstance(pubsub, dict) else "?"
    message_id = message_id if isinstance(message_id, str) else "?"
    assert [line["message"] for line in new] == [f"rejected message {message_id}: {reason}"]
    assert runs_in(root) == []


def pubsub_time(seconds_ago: float) -> str:
    """A ``publishTime`` as Pub/Sub writes it (RFC 3339, UTC, nanoseconds)."""
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}123Z"


def pubsub_envelope(
    data: bytes, message_id: str, published: str | None, attributes: dict[str, str] | None = None
) -> dict[str, Any]:
    """The CloudEvent data of a Pub/Sub message as Eventarc delivers it
    (https://cloud.google.com/eventarc/docs/cloudevents: ``message.publishTime``)."""
    pubsub: dict[str, Any] = {
        "data": base64.b64encode(data).decode(),
        "attributes": dict(attributes or {}),
        "messageId": message_id,
    }
    if published is not None:
        pubsub["publishTime"] = published
    return {"message": pubsub, "subscription": "projects/p/subscriptions/eventarc-ct-trigger-sub"}


def post_structured(server: FunctionServer, data: Any, time: str) -> int:
    """A structured-mode CloudEvent (``application/cloudevents+json``) with its ``time``."""
    event = {
        "specversion": "1.0",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": "//pubsub.googleapis.com/projects/p/topics/ct-builds",
        "id": uuid.uuid4().hex,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    }
    request = urllib.request.Request(
        server.url,
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/cloudevents+json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def lines_for(server: FunctionServer, message_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in map(
            json.loads, (x for x in server.log().splitlines() if x.startswith('{"severity"'))
        )
        if line.get("message_id") == message_id
    ]


@pytest.fixture(scope="module")
def failing_servers(
    functions_framework: Callable[..., FunctionServer],
    local_bucket: LocalBucket,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[FunctionServer, FunctionServer, str, Path]:
    """(storage unreachable, misconfigured with CT_MAX_EVENT_AGE=60, the closed storage URL,
    the pipeline root): every message fails, transiently or for the deployment's sake."""
    closed = f"http://127.0.0.1:{free_port()}"
    root = tmp_path_factory.mktemp("failing-root")
    unreachable = functions_framework(
        source=REPO / "function/main.py",
        target="on_message",
        env={
            "CT_BUCKET": local_bucket.bucket,
            "CT_BACKEND": "local",
            "CT_PIPELINE_ROOT": str(root),
            "STORAGE_EMULATOR_HOST": closed,
            "ORCHESTRATOR_LOCAL_BUCKET_ROOT": "",  # whatever runs these tests may set it
        },
        cwd=REPO,
    )
    misconfigured = functions_framework(
        source=REPO / "function/main.py",
        target="on_message",
        env={"CT_BUCKET": local_bucket.bucket, "CT_BACKEND": "local", "CT_MAX_EVENT_AGE": "60"},
        cwd=REPO,
    )
    return unreachable, misconfigured, closed, root


def test_transient_failures_are_raised_for_redelivery(
    failing_servers: tuple[FunctionServer, FunctionServer, str, Path], local_bucket: LocalBucket
) -> None:
    """Storage unreachable, or the function misconfigured: not acknowledged (HTTP 500, so
    Pub/Sub redelivers), with one log line saying so."""
    unreachable, misconfigured, closed, root = failing_servers
    data = encode(valid_message(local_bucket))
    for server, expected in (
        (
            unreachable,
            {
                "severity": "WARNING",
                "message": "transient failure for message m-1, will be redelivered: Unreachable: "
                f"cannot reach the Cloud Storage emulator at {closed}: ",
            },
        ),
        (
            misconfigured,
            {
                "severity": "ERROR",
                "message": "cannot handle message m-1, the function is misconfigured (it will be "
                "redelivered): the local backend needs CT_PIPELINE_ROOT (a local directory)",
            },
        ),
    ):
        status, _ = server.post_pubsub(data, {}, message_id="m-1")
        assert status == 500
        [line] = lines_for(server, "m-1")
        assert line["severity"] == expected["severity"]
        assert line["message"].startswith(expected["message"]), line
    assert runs_in(root) == []


@pytest.mark.parametrize(
    ("server_index", "seconds_ago", "acknowledged"),
    [
        (0, 2 * 3600, True),  # default CT_MAX_EVENT_AGE: one hour
        (0, 3000, False),
        (1, 300, True),  # CT_MAX_EVENT_AGE=60
        (1, 20, False),
    ],
)
def test_a_failing_message_past_the_age_cap_is_acknowledged_with_one_error_line(
    failing_servers: tuple[FunctionServer, FunctionServer, str, Path],
    local_bucket: LocalBucket,
    server_index: int,
    seconds_ago: float,
    acknowledged: bool,
) -> None:
    """Deployed with --retry, a failing message would be retried for up to 7 days: past
    CT_MAX_EVENT_AGE (from its publishTime) it is acknowledged (HTTP 2xx) with one ERROR line
    naming it; a younger one is still raised (HTTP 500), to be redelivered."""
    server = failing_servers[server_index]
    message_id = f"m-age-{server_index}-{seconds_ago}"
    envelope = pubsub_envelope(
        encode(valid_message(local_bucket)), message_id, pubsub_time(seconds_ago)
    )
    status, _ = server.post_cloudevent(envelope)
    [line] = lines_for(server, message_id)
    if not acknowledged:
        assert status == 500
        assert "will be redelivered" in line["message"]
        return
    assert 200 <= status < 300
    assert line["severity"] == "ERROR"
    cap = 3600 if server_index == 0 else 60
    published = "2.0 h" if seconds_ago == 2 * 3600 else "5 min"
    reason = (
        "Unreachable: cannot reach the Cloud Storage emulator at "
        if server_index == 0
        else "the function is misconfigured: the local backend needs CT_PIPELINE_ROOT"
    )
    assert line["message"].startswith(
        f"gave up on message {message_id}, published {published} ago "
        f"(CT_MAX_EVENT_AGE is {cap} s): {reason}"
    ), line


def test_without_publish_time_the_cloudevent_time_is_the_age(
    failing_servers: tuple[FunctionServer, FunctionServer, str, Path], local_bucket: LocalBucket
) -> None:
    """A structured-mode CloudEvent whose data has no publishTime: its ``time`` counts."""
    unreachable = failing_servers[0]
    data = encode(valid_message(local_bucket))
    old = post_structured(unreachable, pubsub_envelope(data, "m-ce-old", None), pubsub_time(7200))
    fresh = post_structured(unreachable, pubsub_envelope(data, "m-ce-new", None), pubsub_time(5))
    assert (old, fresh) == (200, 500)
    [line] = lines_for(unreachable, "m-ce-old")
    assert line["message"].startswith("gave up on message m-ce-old, published 2.0 h ago")


def test_deliver_in_process_decides_by_age_and_acknowledges_what_cannot_succeed(
    local_bucket: LocalBucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``deliver``, the body of on_message, with a clock: the age cap reads its own setting, so a
    bad CT_MAX_EVENT_AGE (itself a misconfiguration) still stops at the default hour."""
    fn = load_function()
    envelope = pubsub_envelope(
        encode(valid_message(local_bucket)), "m-clock", "2030-01-01T00:00:00.5Z"
    )
    published = fn.parse_time("2030-01-01T00:00:00.5Z")
    bad = {"CT_BUCKET": local_bucket.bucket, "CT_BACKEND": "local", "CT_MAX_EVENT_AGE": "1h"}
    with pytest.raises(fn.ConfigError, match="CT_MAX_EVENT_AGE must be 1 to 604800 seconds"):
        fn.deliver(envelope, None, bad, clock=lambda: published + 3599)
    assert fn.deliver(envelope, None, bad, clock=lambda: published + 3601) is None
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    assert [line["severity"] for line in lines] == ["ERROR", "ERROR"]
    assert lines[1]["message"] == (
        "gave up on message m-clock, published 60 min ago (CT_MAX_EVENT_AGE is 3600 s): the "
        "function is misconfigured: CT_MAX_EVENT_AGE must be 1 to 604800 seconds, not '1h'"
    )
    # A malformed message is acknowledged at once, whatever its age.
    rejected = pubsub_envelope(b"{", "m-bad", None)
    assert fn.deliver(rejected, None, function_env(local_bucket, tmp_path)) is None
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    assert line["message"].startswith("rejected message m-bad: message data is not JSON")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-02-26T19:13:55.749Z", 1614366835.749),  # Eventarc's documented example
        ("2021-02-26T19:13:55.749123456Z", 1614366835.749123456),
        ("2021-02-26T19:13:55Z", 1614366835.0),
        ("2021-02-26T21:13:55.5+02:00", 1614366835.5),
        ("2021-02-26t19:13:55z", 1614366835.0),
        ("2021-02-30T19:13:55Z", None),
        ("2021-02-26T19:13:55", None),  # no zone: not RFC 3339
        ("yesterday", None),
        ("9" * 5000, None),
        (1614366835, None),
        (None, None),
        ({"seconds": 1}, None),
    ],
)
def test_publish_times_are_read_as_rfc_3339(text: object, expected: float | None) -> None:
    fn = load_function()
    parsed = fn.parse_time(text)
    assert parsed == pytest.approx(expected) if expected is not None else parsed is None


@pytest.mark.slow
def test_valid_message_runs_once_and_duplicate_starts_nothing(
    functions_framework: Callable[..., FunctionServer], local_bucket: LocalBucket, tmp_path: Path
) -> None:
    root = tmp_path / "pipeline-root"
    env = function_env(local_bucket, root)
    server = functions_framework(
        source=REPO / "function/main.py", target="on_message", env=env, cwd=REPO
    )
    sent = valid_message(local_bucket)
    encoded = message.encode(message.decode(encode(sent)))
    first = server.post_pubsub(encoded.data, encoded.attributes, message_id="first")
    assert first[0] == 200, server.log()
    again = server.post_pubsub(encoded.data, encoded.attributes, message_id="again")
    assert again[0] == 200
    logged = {
        line["message_id"]: line
        for line in map(
            json.loads, (x for x in server.log().splitlines() if x.startswith('{"severity"'))
        )
        if "message_id" in line
    }
    run_id = expected_run_id(local_bucket, sent)
    assert logged["first"]["run"]["status"] == "succeeded", server.log()[-3000:]
    assert logged["first"]["run"]["run_id"] == run_id
    assert logged["first"]["run"]["metrics"]["accuracy"] > 0.9
    assert logged["first"]["message"] == f"message first: run {run_id} succeeded"
    assert logged["again"]["run"]["status"] == "duplicate"
    assert logged["again"]["run"]["run_id"] == run_id
    # The duplicate reports the result of the run that happened.
    assert logged["again"]["run"]["metrics"] == logged["first"]["run"]["metrics"]
    assert logged["again"]["run"]["detail"] == "already succeeded"
    assert (
        logged["again"]["message"] == f"message again: run {run_id} duplicate (already succeeded)"
    )
    assert [p.name for p in runs_in(root)] == [run_id]
    # One registry entry, written through objects.py, with the run's outcome.
    assert registry_entries(local_bucket, env) == [f"{env['CT_STATE_PREFIX']}/runs/{run_id}.json"]
    uri = f"gs://{local_bucket.bucket}/{env['CT_STATE_PREFIX']}/runs/{run_id}.json"
    stored = objects.read(uri, env)
    assert stored is not None
    entry = json.loads(stored.data)
    assert set(entry) == {
        "run_id", "status", "request_id", "attempt", "job_id", "commit", "data_uri", "started",
        "lease_expires", "host", "pid", "metrics", "detail",
    }  # fmt: skip
    assert {k: entry[k] for k in ("run_id", "status", "request_id", "attempt", "job_id")} == {
        "run_id": run_id,
        "status": "succeeded",
        "request_id": "request-1",
        "attempt": 1,
        "job_id": run_id,
    }
    assert (entry["commit"], entry["data_uri"], entry["lease_expires"]) == (SHA, "", "")
    assert entry["metrics"] == logged["first"]["run"]["metrics"]


@pytest.mark.slow
def test_in_process_concurrent_duplicates_start_one_run(
    local_bucket: LocalBucket, tmp_path: Path
) -> None:
    """handle_message, as the orchestrator's local executor calls it: the registry admits one
    run (a real local pipeline run; the registry in the directory bucket)."""
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root")
    config = fn.Config.from_env(env)
    data = encode(valid_message(local_bucket, parameters={**PARAMS, "max_iter": 60}))
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def deliver() -> None:
        barrier.wait()
        results.append(fn.handle_message(data, {}, config, env))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["duplicate", "succeeded"]
    duplicate = next(r for r in results if r.status == "duplicate")
    assert duplicate.detail.startswith("in progress: attempt 1 on ")
    assert duplicate.previous_status == "running"
    assert len(runs_in(tmp_path / "root")) == 1


def test_schema_1_messages_still_run_and_are_the_same_state(
    local_bucket: LocalBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old publisher's schema-1 message names the same run as schema 2 for the same state
    (its data_uri parameter aside)."""
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root")
    config = fn.Config.from_env(env)
    v1 = valid_message(local_bucket, schema=1)
    request = fn.prepare(encode(v1), {"commit": SHA, "schema": "1"}, config, env)
    assert request.run_id == expected_run_id(local_bucket, valid_message(local_bucket))
    assert request.message.schema == 1 and request.message.request_id == ""


def test_run_id_is_the_state_not_the_commit(local_bucket: LocalBucket, tmp_path: Path) -> None:
    fn = load_function()
    env = function_env(local_bucket, tmp_path / "root")
    config = fn.Config.from_env(env)
    base = valid_message(local_bucket)
    ids = {
        fn.prepare(encode(valid_message(local_bucket, **change)), {}, config, env).run_id
        for change in (
            {},
            {"commit": "f" * 40, "ref": "refs/heads/other", "request_id": "r-2"},
            {"reason": "manual", "request_id": "r-3", "actions": []},
        )
    }
    assert ids == {expected_run_id(local_bucket, base)}
    other = fn.prepare(
        encode(valid_message(local_bucket, parameters={**PARAMS, "hidden_units": 32})),
        {},
        config,
        env,
    )
    assert other.run_id != expected_run_id(local_bucket, base)


def test_the_job_id_of_an_attempt() -> None:
    fn = load_function()
    assert fn.job_id_for("ct-0123", 1) == "ct-0123"
    assert fn.job_id_for("ct-0123", 3) == "ct-0123-a3"


def test_config_errors_are_clear() -> None:
    fn = load_function()
    with pytest.raises(fn.ConfigError, match="CT_BUCKET is not set"):
        fn.Config.from_env({})
    with pytest.raises(fn.ConfigError, match="CT_BACKEND must be vertex, kfp or local"):
        fn.Config.from_env({"CT_BUCKET": "bkt", "CT_BACKEND": "nope"})
    with pytest.raises(fn.ConfigError, match="CT_PROJECT and CT_PIPELINE_ROOT"):
        fn.Config.from_env({"CT_BUCKET": "bkt"})
    local = {"CT_BUCKET": "bkt", "CT_BACKEND": "local", "CT_PIPELINE_ROOT": "/tmp/r"}
    with pytest.raises(fn.ConfigError, match="CT_BUCKET 'Bad_Bucket!' is not a bucket name"):
        fn.Config.from_env({**local, "CT_BUCKET": "Bad_Bucket!"})
    with pytest.raises(fn.ConfigError, match=r"CT_STATE_PREFIX: 'a/\.\./b'"):
        fn.Config.from_env({**local, "CT_STATE_PREFIX": "a/../b"})
    with pytest.raises(fn.ConfigError, match=r"CT_LEDGER_URI: 'ledger\.json' is not a gs:"):
        fn.Config.from_env({**local, "CT_LEDGER_URI": "ledger.json"})
    with pytest.raises(fn.ConfigError, match="CT_LEASE_SECONDS must be 5 to 86400 seconds"):
        fn.Config.from_env({**local, "CT_LEASE_SECONDS": "1"})
    for bad in ("0", "604801", "1h", "-5", "9" * 5000, "\u0663"):
        with pytest.raises(fn.ConfigError, match="CT_MAX_EVENT_AGE must be 1 to 604800 seconds"):
            fn.Config.from_env({**local, "CT_MAX_EVENT_AGE": bad})
    with pytest.raises(fn.ConfigError, match=r"CT_KFP_IAP_CLIENT_ID .* or CT_KFP_TOKEN .*not both"):
        fn.Config.from_env({**local, "CT_KFP_IAP_CLIENT_ID": "x", "CT_KFP_TOKEN": "y"})
    with pytest.raises(
        fn.ConfigError,
        match=r"CT_DATA_PREFIX 'ct/' overlaps CT_STATE_PREFIX \(gs://bkt/ct/\): the function's",
    ):
        fn.Config.from_env({**local, "CT_DATA_PREFIX": "ct/"})
    with pytest.raises(fn.ConfigError, match="CT_DATA_PREFIX 'runs/' overlaps CT_PIPELINE_ROOT"):
        fn.Config.from_env(
            {
                "CT_BUCKET": "bkt",
                "CT_PROJECT": "p",
                "CT_PIPELINE_ROOT": "gs://bkt/runs/root",
                "CT_DATA_PREFIX": "runs/",
            }
        )


def test_config_defaults_for_state_and_data() -> None:
    fn = load_function()
    config = fn.Config.from_env(
        {"CT_BUCKET": "bkt", "CT_BACKEND": "local", "CT_PIPELINE_ROOT": "r"}
    )
    assert (config.state_prefix, config.data_prefix, config.data_bucket) == ("ct", "", "")
    assert config.ledger_uri == "gs://bkt/ct/ledger/main/default.json"
    assert config.registry_uri("ct-1") == "gs://bkt/ct/runs/ct-1.json"
    assert (config.notification_bucket, config.lease_seconds) == ("bkt", 300)
    assert config.max_event_age == 3600
    assert fn.Config.from_env(
        {"CT_BUCKET": "bkt", "CT_BACKEND": "local", "CT_PIPELINE_ROOT": "r",
         "CT_MAX_EVENT_AGE": "604800"}
    ).max_event_age == 604800  # fmt: skip
