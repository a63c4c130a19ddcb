"""function/: a real functions-framework process receiving Pub/Sub CloudEvents over HTTP."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator import message
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


def valid_message(bucket: LocalBucket, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": 1,
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": bucket.spec_uri,
        "source_uri": bucket.source_uri,
        "images": {"validator": "r/validator:1", "evaluator": "r/evaluator:1"},
        "parameters": dict(PARAMS),
        "actions": [{"id": "upload_source", "summary": "training_src/train.py (rule source)"}],
    }
    data.update(overrides)
    return data


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def runs_in(root: Path) -> list[Path]:
    return (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.exists()
        else []
    )


def function_env(bucket: LocalBucket, pipeline_root: Path) -> dict[str, str]:
    return {
        "CT_BUCKET": bucket.bucket,
        "CT_BACKEND": "local",
        "CT_PIPELINE_ROOT": str(pipeline_root),
        "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(bucket.root),
    }


@pytest.fixture(scope="module")
def rejecting_server(
    functions_framework: Callable[..., FunctionServer],
    local_bucket: LocalBucket,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[FunctionServer, Path]:
    root = tmp_path_factory.mktemp("reject-root")
    server = functions_framework(
        source=REPO / "function/main.py",
        target="on_message",
        env=function_env(local_bucket, root),
        cwd=REPO,
    )
    return server, root


def _malformed(bucket: LocalBucket) -> list[tuple[str, bytes | str, bool, str]]:
    """(case, data, raw base64 field?, expected reason)."""
    params_bad = {**PARAMS, "hidden_units": "sixty-four"}
    missing = valid_message(bucket)
    del missing["source_uri"]
    return [
        ("bad-base64", "@@not-base64@@", True, "message data is not valid base64"),
        ("bad-json", b"{'schema': 1", False, "message data is not JSON"),
        (
            "schema",
            encode(valid_message(bucket, schema=7)),
            False,
            "schema version 7 is not supported",
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


CASES = [
    "bad-base64",
    "bad-json",
    "schema",
    "sha",
    "outside-bucket",
    "param-type",
    "unknown-param",
    "missing-field",
    "no-spec",
]


@pytest.mark.parametrize("case", CASES)
def test_malformed_message_is_acked_with_a_reason_and_no_run(
    rejecting_server: tuple[FunctionServer, Path], local_bucket: LocalBucket, case: str
) -> None:
    server, root = rejecting_server
    (_, data, raw, reason) = next(c for c in _malformed(local_bucket) if c[0] == case)
    status, _ = server.post_pubsub(
        data,
        {"commit": SHA, "schema": "1"} if case != "sha" else {},
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
    assert not any((root / ".ct-ledger").glob("*")) if (root / ".ct-ledger").exists() else True


def test_event_without_pubsub_message_is_rejected(
    rejecting_server: tuple[FunctionServer, Path],
) -> None:
    server, root = rejecting_server
    status, _ = server.post_cloudevent({"unexpected": True})
    assert status == 200
    assert "rejected message ?: the event carries no Pub/Sub message data" in server.log()
    assert runs_in(root) == []


@pytest.mark.slow
def test_valid_message_runs_once_and_duplicate_starts_nothing(
    functions_framework: Callable[..., FunctionServer], local_bucket: LocalBucket, tmp_path: Path
) -> None:
    root = tmp_path / "pipeline-root"
    server = functions_framework(
        source=REPO / "function/main.py",
        target="on_message",
        env=function_env(local_bucket, root),
        cwd=REPO,
    )
    encoded = message.encode(message.decode(encode(valid_message(local_bucket))))
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
    assert logged["first"]["run"]["status"] == "succeeded", server.log()[-3000:]
    assert logged["first"]["run"]["metrics"]["accuracy"] > 0.9
    assert logged["again"]["run"]["status"] == "duplicate"
    assert logged["again"]["run"]["run_id"] == logged["first"]["run"]["run_id"]
    # The duplicate reports the result of the run that happened.
    assert logged["again"]["run"]["metrics"] == logged["first"]["run"]["metrics"]
    assert logged["again"]["run"]["detail"] == "already succeeded"
    assert [p.name for p in runs_in(root)] == [logged["first"]["run"]["run_id"]]
    ledger_dir = root / ".ct-ledger"
    ledger = json.loads((ledger_dir / f"{logged['first']['run']['run_id']}.json").read_text())
    assert ledger == {
        "commit": SHA,
        "status": "succeeded",
        "metrics": logged["first"]["run"]["metrics"],
    }
    assert [p.name for p in ledger_dir.iterdir()] == [f"{logged['first']['run']['run_id']}.json"]


def test_in_process_concurrent_duplicates_start_one_run(
    local_bucket: LocalBucket, tmp_path: Path
) -> None:
    """handle_message, as the orchestrator's local executor calls it: the ledger admits one run."""
    fn = load_function()
    config = fn.Config.from_env(function_env(local_bucket, tmp_path / "root"))
    data = encode(valid_message(local_bucket, parameters={**PARAMS, "max_iter": 60}))
    env = {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(local_bucket.root)}
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
    assert len(runs_in(tmp_path / "root")) == 1


def test_config_errors_are_clear() -> None:
    fn = load_function()
    with pytest.raises(fn.ConfigError, match="CT_BUCKET is not set"):
        fn.Config.from_env({})
    with pytest.raises(fn.ConfigError, match="CT_BACKEND must be vertex, kfp or local"):
        fn.Config.from_env({"CT_BUCKET": "b", "CT_BACKEND": "nope"})
    with pytest.raises(fn.ConfigError, match="CT_PROJECT and CT_PIPELINE_ROOT"):
        fn.Config.from_env({"CT_BUCKET": "b"})


def test_run_id_depends_on_commit_and_spec() -> None:
    fn = load_function()
    assert fn.run_id_for(SHA, b"spec") == fn.run_id_for(SHA, b"spec")
    assert fn.run_id_for(SHA, b"spec") != fn.run_id_for(SHA, b"spec2")
    assert fn.run_id_for(SHA, b"spec") != fn.run_id_for("f" * 40, b"spec")
