"""orchestrator.message: schemas 1 and 2, run identity, the deploy-ledger record, and every
rejection reason, hostile input included (each case a literal, each error exact)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator import message
from orchestrator.message import (
    ActionSummary,
    DeployedState,
    MessageError,
    PublishMessage,
    StateError,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"
SPEC = "gs://ct-bucket/pipelines/abc/pipeline.yaml"
SOURCE = "gs://ct-bucket/source/abc/training_src.tar.gz"
IMAGES = {"validator": "r/validator@sha256:" + "1" * 64, "evaluator": "r/evaluator:t"}
PARAMS: dict[str, message.ParamValue] = {"hidden_units": 64, "alpha": 0.0001, "flag": True}
SPEC_SHA = "9" * 64
LEDGER = "gs://ct-bucket/ct/ledger/main/default.json"


def sample(**overrides: Any) -> PublishMessage:
    fields: dict[str, Any] = {
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": SPEC,
        "source_uri": SOURCE,
        "images": IMAGES,
        "parameters": PARAMS,
        "actions": (ActionSummary("build_image:validator", "components/validator/main.py"),),
        "request_id": "req-1",
    }
    fields.update(overrides)
    return PublishMessage(**fields)


def raw(**overrides: Any) -> bytes:
    data = message.to_json_dict(sample())
    data.update(overrides)
    return json.dumps(data).encode()


def schema1(**overrides: Any) -> bytes:
    data = {
        "schema": 1,
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": SPEC,
        "source_uri": SOURCE,
        "images": IMAGES,
        "parameters": {**PARAMS, "data_uri": ""},
        "actions": [{"id": "upload_source", "summary": "training_src/train.py"}],
    }
    data.update(overrides)
    return json.dumps(data).encode()


# --- schema 2 and schema 1 ------------------------------------------------------------------


def test_round_trip_keeps_every_field() -> None:
    original = sample(
        data_uri="gs://data-bucket/data/new.csv",
        data_version="1712345678901234",
        reason="data",
        retry=True,
    )
    encoded = message.encode(original)
    assert message.decode(encoded.data, encoded.attributes) == original
    assert encoded.attributes == {"commit": SHA, "schema": "2"}
    assert encoded.ordering_key == "main"
    assert json.loads(encoded.data) == {
        "schema": 2,
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": SPEC,
        "source_uri": SOURCE,
        "images": IMAGES,
        "parameters": PARAMS,
        "actions": [{"id": "build_image:validator", "summary": "components/validator/main.py"}],
        "data_uri": "gs://data-bucket/data/new.csv",
        "data_version": "1712345678901234",
        "reason": "data",
        "request_id": "req-1",
        "retry": True,
    }


def test_defaults_of_a_new_message() -> None:
    first, second = (
        PublishMessage(commit=SHA, ref="refs/heads/main", pipeline_spec_uri=SPEC, source_uri=SOURCE)
        for _ in range(2)
    )
    assert (first.data_uri, first.data_version, first.reason) == ("", "", "commit")
    assert (first.retry, first.schema) == (False, 2)
    # one request id per publish: every new message has its own
    assert len(first.request_id) == 32 and first.request_id != second.request_id
    assert message.decode(message.encode(first).data) == first


def test_schema_1_decodes_with_defaults_for_the_new_fields() -> None:
    decoded = message.decode(schema1(), {"commit": SHA, "schema": "1"})
    assert decoded.schema == 1
    assert (decoded.data_uri, decoded.data_version, decoded.reason) == ("", "", "commit")
    assert (decoded.request_id, decoded.retry) == ("", False)
    assert dict(decoded.parameters) == {**PARAMS, "data_uri": ""}  # stays a parameter
    assert decoded.actions == (ActionSummary("upload_source", "training_src/train.py"),)


def test_schema_1_has_no_schema_2_fields() -> None:
    with pytest.raises(MessageError) as caught:
        message.decode(schema1(retry=True))
    assert str(caught.value) == "unknown field(s) for schema 1: 'retry'"


def test_encoding_is_stable() -> None:
    assert message.encode(sample()).data == message.encode(sample()).data


@pytest.mark.parametrize(
    ("ref", "key"),
    [
        ("refs/heads/main", "main"),
        ("refs/heads/feature/x", "feature/x"),
        ("refs/tags/v1", "tags/v1"),
    ],
)
def test_ordering_key_is_the_branch(ref: str, key: str) -> None:
    assert message.encode(sample(ref=ref)).ordering_key == key


def test_message_is_immutable() -> None:
    msg = sample()
    with pytest.raises(TypeError):
        msg.parameters["alpha"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    "data_uri",
    ["", "gs://b-1/data/x.csv", "/home/me/new.csv", "/tmp/data dir/é.csv"],
)
def test_data_uri_accepts_gs_and_absolute_paths(data_uri: str) -> None:
    assert message.decode(raw(data_uri=data_uri)).data_uri == data_uri


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (raw(schema=7), "schema version 7 is not supported (expected 1 or 2)"),
        (raw(schema="2"), "field 'schema' is missing or not an integer"),
        (raw(schema=True), "field 'schema' is missing or not an integer"),
        (raw(commit="abc"), "field 'commit' must be a 40-character lowercase hex sha, not 'abc'"),
        (
            raw(commit=SHA.upper()),
            f"field 'commit' must be a 40-character lowercase hex sha, not '{SHA.upper()}'",
        ),
        (raw(ref="main"), "field 'ref' must be a full git ref like refs/heads/main, not 'main'"),
        (
            raw(pipeline_spec_uri="https://x/y"),
            "field 'pipeline_spec_uri': 'https://x/y' is not a gs://<bucket>/<key> URI",
        ),
        (
            raw(source_uri="gs://bucket-only"),
            "field 'source_uri': 'gs://bucket-only' is not a gs://<bucket>/<key> URI",
        ),
        (
            raw(source_uri="gs://ct-bucket/a/../../etc/passwd"),
            "field 'source_uri': 'gs://ct-bucket/a/../../etc/passwd' is not a gs://<bucket>/<key> "
            "URI with a clean key (no empty, '.' or '..' segments, no backslash, NUL or line "
            "break)",
        ),
        (
            raw(images={"validator": ""}),
            "field 'images' must map component names to non-empty image references",
        ),
        (
            raw(parameters={"alpha": [1]}),
            "parameter 'alpha' must be a string, number or boolean, not a list",
        ),
        (
            raw(parameters={"alpha": None}),
            "parameter 'alpha' must be a string, number or boolean, not null",
        ),
        (raw(parameters=[]), "field 'parameters' must be a JSON object, not a list"),
        (
            raw(parameters={"data_uri": "gs://b-1/x.csv"}),
            "parameter 'data_uri' is not allowed: the data is the field 'data_uri'",
        ),
        (
            raw(actions=[{"id": "x"}]),
            "each action must be an object with string 'id' and 'summary'",
        ),
        (raw(actions="publish"), "field 'actions' must be a list, not a string"),
        (raw(extra=1), "unknown field(s) for schema 2: 'extra'"),
        (
            raw(data_uri="data/new.csv"),
            "field 'data_uri' must be '', a gs://<bucket>/<key> URI or an absolute local path, "
            "not 'data/new.csv'",
        ),
        (
            raw(data_uri="https://example.com/x.csv"),
            "field 'data_uri' must be '', a gs://<bucket>/<key> URI or an absolute local path, "
            "not 'https://example.com/x.csv'",
        ),
        (
            raw(data_uri=["gs://b-1/x"]),
            "field 'data_uri' must be '', a gs://<bucket>/<key> URI or an absolute local path, "
            "not ['gs://b-1/x']",
        ),
        (
            raw(data_uri="gs://b-1/"),
            "field 'data_uri': 'gs://b-1/' is not a gs://<bucket>/<key> URI",
        ),
        (
            raw(reason="cron"),
            "field 'reason' must be one of commit, manual, schedule, data, not 'cron'",
        ),
        (
            raw(request_id=""),
            "field 'request_id' must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-', "
            "not ''",
        ),
        (
            raw(request_id="a" * 65),
            "field 'request_id' must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-', "
            f"not '{'a' * 65}'",
        ),
        (
            raw(request_id="a/b"),
            "field 'request_id' must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-', "
            "not 'a/b'",
        ),
        (raw(retry="yes"), "field 'retry' must be true or false, not 'yes'"),
        (raw(retry=1), "field 'retry' must be true or false, not 1"),
        (
            raw(data_version="gen 1", data_uri="gs://b-1/x"),
            "field 'data_version' must be a string of at most 128 printable characters without "
            "spaces, not 'gen 1'",
        ),
        (raw(data_version="17"), "field 'data_version' is set but 'data_uri' is empty"),
    ],
)
def test_decode_rejects_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        message.decode(data)
    assert str(caught.value) == reason


def test_decode_rejects_a_missing_field() -> None:
    data = message.to_json_dict(sample())
    del data["source_uri"], data["retry"]
    with pytest.raises(MessageError) as caught:
        message.decode(json.dumps(data).encode())
    assert str(caught.value) == "missing field(s): retry, source_uri"


def test_attributes_must_agree_with_the_data() -> None:
    data = message.encode(sample()).data
    with pytest.raises(MessageError, match="attribute 'commit' does not match the data"):
        message.decode(data, {"commit": "f" * 40})
    with pytest.raises(MessageError, match="attribute 'schema' does not match the data"):
        message.decode(data, {"schema": "1"})


def test_encode_refuses_an_invalid_message() -> None:
    with pytest.raises(MessageError, match="commit"):
        message.encode(sample(commit="nope"))
    with pytest.raises(MessageError, match="request_id"):
        message.encode(sample(request_id=""))


def test_bad_base64_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="base64"):
        message.decode_base64("not*base64!")
    assert message.decode_base64("aGk=") == b"hi"
    with pytest.raises(MessageError) as caught:
        message.decode_base64(["aGk="])
    assert str(caught.value) == "message data must be a base64 string, not a list"


# --- hostile input: MessageError, never another exception -----------------------------------

HOSTILE: list[tuple[str, object, str]] = [
    ("empty", b"", "message data is empty"),
    ("not-bytes", "{}", "message data must be bytes, not a string"),
    ("none", None, "message data must be bytes, not null"),
    ("not-utf8", b'{"a": "\xff"}', "message data is not UTF-8 (byte 7)"),
    ("truncated", raw()[:-10], "message data is not JSON (Unterminated string starting at"),
    ("not-json", b"{'schema': 2}", "message data is not JSON (Expecting property name enclosed"),
    ("array", b"[1, 2]", "message data must be a JSON object, not a list"),
    ("string", b'"schema"', "message data must be a JSON object, not a string"),
    ("nested-100000", b"[" * 100_000 + b"]" * 100_000, "message data is nested too deeply"),
    (
        "nested-objects",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "message data is nested too deeply",
    ),
    (
        "5000-digits",
        b'{"schema": ' + b"7" * 5000 + b"}",
        "message data holds an integer of 5000 digits (at most 64)",
    ),
    ("nan", b'{"schema": 2, "x": NaN}', "message data holds NaN, which is not a JSON number"),
    (
        "infinity",
        b'{"x": -Infinity}',
        "message data holds -Infinity, which is not a JSON number",
    ),
    (
        "overflowing-float",
        b'{"x": 1e999}',
        "message data holds a number too large for a double: '1e999'",
    ),
    (
        "huge",
        b'{"x": "' + b"a" * (1 << 20) + b'"}',
        "message data is 1048585 bytes, more than the 1048576-byte limit",
    ),
    ("duplicate-key", b'{"schema": 2, "schema": 1}', "message data repeats the key 'schema'"),
    (
        "lone-surrogate",
        b'{"schema": 2, "ref": "\\ud800"}',
        "message data holds a string with a NUL or a lone surrogate: '\\ud800'",
    ),
    (
        "nul",
        b'{"schema": 2, "ref": "refs/heads/a\\u0000b"}',
        "message data holds a string with a NUL or a lone surrogate: 'refs/heads/a\\x00b'",
    ),
    (
        "huge-field",
        raw(commit="x" * 100_000),
        "field 'commit' must be a 40-character lowercase hex sha, not '" + "x" * 76 + "...",
    ),
]


@pytest.mark.parametrize(("data", "reason"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_data_is_a_message_error(data: object, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        message.decode(data)  # type: ignore[arg-type]
    assert str(caught.value).startswith(reason), str(caught.value)[:300]
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        (["commit", SHA], "message attributes must map names to strings, not a list"),
        ("commit", "message attributes must map names to strings, not a string"),
        ({"schema": 2}, "message attribute 'schema' must be a string, not an integer"),
        ({"commit": None}, "message attribute 'commit' must be a string, not null"),
        ({1: "x"}, "message attribute names must be strings, not an integer"),
    ],
)
def test_hostile_attributes_are_a_message_error(attributes: object, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        message.decode(raw(), attributes)  # type: ignore[arg-type]
    assert str(caught.value) == reason


# --- run identity ----------------------------------------------------------------------------


def identity(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "spec_sha256": SPEC_SHA,
        "source_uri": SOURCE,
        "images": IMAGES,
        "parameters": PARAMS,
        "data_uri": "",
        "data_version": "",
    }
    args.update(overrides)
    return message.run_identity(**args)


def test_run_identity_format() -> None:
    run_id = identity()
    assert run_id.startswith("ct-") and len(run_id) == 23
    assert int(run_id[3:], 16) >= 0 and run_id == run_id.lower()


@pytest.mark.parametrize(
    "change",
    [
        {"spec_sha256": "8" * 64},
        {"source_uri": "gs://ct-bucket/source/def/training_src.tar.gz"},
        {"images": {**IMAGES, "evaluator": "r/evaluator:u"}},
        {"parameters": {**PARAMS, "hidden_units": 32}},
        {"parameters": {**PARAMS, "hidden_units": 64.0}},  # a float is another value
        {"parameters": {**PARAMS, "extra": "x"}},
        {"data_uri": "gs://data/new.csv"},
        {"data_uri": "gs://data/new.csv", "data_version": "2"},
    ],
)
def test_run_identity_changes_with_what_is_trained(change: dict[str, Any]) -> None:
    assert identity(**change) != identity()


def test_run_identity_differs_between_data_versions() -> None:
    uri = "gs://data/new.csv"
    assert identity(data_uri=uri, data_version="1") != identity(data_uri=uri, data_version="2")


def test_run_identity_is_the_same_for_one_state_from_two_commits() -> None:
    """Two commits (and branches) publishing the same state name the same run."""
    first = sample(commit=SHA, ref="refs/heads/main", request_id="a")
    second = sample(commit=OTHER_SHA, ref="refs/heads/feature/x", request_id="b", reason="manual")
    ids = {
        message.run_identity(
            SPEC_SHA, m.source_uri, m.images, m.parameters, m.data_uri, m.data_version
        )
        for m in (first, second)
    }
    assert len(ids) == 1
    # key order does not matter either
    reordered = dict(reversed(list(PARAMS.items())))
    assert identity(parameters=reordered) == identity()


def test_run_identity_needs_a_spec_hash() -> None:
    with pytest.raises(ValueError, match="spec_sha256 must be 64 lowercase hex digits"):
        identity(spec_sha256="abc")


# --- the deploy-ledger record ----------------------------------------------------------------


def state(**overrides: Any) -> DeployedState:
    fields: dict[str, Any] = {
        "branch": "main",
        "pipeline": "default",
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": SPEC,
        "source_uri": SOURCE,
        "images": IMAGES,
        "parameters": PARAMS,
        "data_uri": "gs://data-bucket/data/base.csv",
        "hashes": {"source": "s1", "spec": "p1", "image:validator": "v1"},
        "run_id": "ct-0123456789abcdef0123",
        "published_message": "1234567890",
        "updated": "2024-05-01T12:00:00Z",
    }
    fields.update(overrides)
    return DeployedState(**fields)


def state_json(**overrides: Any) -> bytes:
    data = json.loads(message.encode_state(state()))
    data.update(overrides)
    return json.dumps(data).encode()


def test_state_round_trip_and_stable_encoding() -> None:
    original = state()
    data = message.encode_state(original)
    assert message.decode_state(data, source=LEDGER) == original
    assert data == message.encode_state(state())
    assert list(json.loads(data)) == sorted(json.loads(data))
    assert json.loads(data)["schema"] == 1


def test_state_optional_fields_default() -> None:
    data = json.loads(message.encode_state(state()))
    for name in ("data_uri", "hashes", "run_id", "published_message", "updated"):
        del data[name]
    decoded = message.decode_state(json.dumps(data).encode(), source=LEDGER)
    assert (decoded.data_uri, dict(decoded.hashes), decoded.run_id) == ("", {}, "")
    assert (decoded.published_message, decoded.updated, decoded.schema) == ("", "", 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "the record is empty"),
        (message.encode_state(state())[:-20], "the record is not JSON (Unterminated string"),
        (b"not json", "the record is not JSON (Expecting value at char 0)"),
        (b"\xff\xfe", "the record is not UTF-8 (byte 0)"),
        (b"[" * 100_000, "the record is nested too deeply"),
        (b'{"schema": ' + b"1" * 5000 + b"}", "the record holds an integer of 5000 digits"),
        (b'{"schema": NaN}', "the record holds NaN, which is not a JSON number"),
        (b"[]", "it must be a JSON object, not a list"),
        (state_json(schema=2), "schema version 2 is not supported (expected 1)"),
        (state_json(schema="1"), "field 'schema' is missing or not an integer"),
        (state_json(branch=""), "field 'branch' must be a branch name, not ''"),
        (state_json(pipeline="a/b"), "field 'pipeline' must be 1 to 64 of A-Z"),
        (state_json(commit="HEAD"), "field 'commit' must be a 40-character lowercase hex sha"),
        (state_json(ref=7), "field 'ref' must be a full git ref like refs/heads/main, not 7"),
        (state_json(source_uri="/tmp/x"), "field 'source_uri': '/tmp/x' is not a gs://"),
        (state_json(images=["validator"]), "field 'images' must map component names"),
        (state_json(parameters="x"), "field 'parameters' must be a JSON object, not a string"),
        (state_json(parameters={"data_uri": "gs://b-1/x"}), "parameter 'data_uri' is not allowed"),
        (state_json(data_uri="x.csv"), "field 'data_uri' must be '', a gs://<bucket>/<key> URI"),
        (state_json(hashes={"source": 1}), "field 'hashes' must map artifact names"),
        (state_json(run_id="ct 1"), "field 'run_id' must be a run identity or empty"),
        (state_json(updated="yesterday"), "field 'updated' must be an ISO 8601 UTC time"),
        (state_json(updated="2024-05-01T12:00:00+02:00"), "field 'updated' must be an ISO 8601"),
        (state_json(extra=1), "unknown field(s): 'extra'"),
    ],
)
def test_decode_state_rejects_naming_the_record(data: bytes, reason: str) -> None:
    with pytest.raises(StateError) as caught:
        message.decode_state(data, source=LEDGER)
    text = str(caught.value)
    assert text.startswith(f"the deploy-ledger record {LEDGER} is unusable: {reason}"), text
    assert "python -m orchestrator ledger set" in text
    assert caught.value.source == LEDGER


def test_decode_state_rejects_a_missing_field() -> None:
    data = json.loads(message.encode_state(state()))
    del data["commit"]
    with pytest.raises(StateError, match=r"missing field\(s\): commit"):
        message.decode_state(json.dumps(data).encode(), source=LEDGER)


def test_encode_state_refuses_an_invalid_record() -> None:
    with pytest.raises(StateError, match="field 'commit'"):
        message.encode_state(state(commit="nope"))
