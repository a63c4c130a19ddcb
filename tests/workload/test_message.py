"""orchestrator.message: encode/decode round trip and every rejection reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator import message
from orchestrator.message import ActionSummary, MessageError, PublishMessage

SHA = "0123456789abcdef0123456789abcdef01234567"


def sample(**overrides: Any) -> PublishMessage:
    fields: dict[str, Any] = {
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": "gs://ct-bucket/pipelines/abc/pipeline.yaml",
        "source_uri": "gs://ct-bucket/source/abc/training_src.tar.gz",
        "images": {"validator": "r/validator@sha256:" + "1" * 64, "evaluator": "r/evaluator:t"},
        "parameters": {"hidden_units": 64, "alpha": 0.0001, "data_uri": "", "flag": True},
        "actions": (ActionSummary("build_image:validator", "components/validator/main.py"),),
    }
    fields.update(overrides)
    return PublishMessage(**fields)


def raw(**overrides: Any) -> bytes:
    data = message.to_json_dict(sample())
    data.update(overrides)
    return json.dumps(data).encode()


def test_round_trip_keeps_every_field() -> None:
    original = sample()
    encoded = message.encode(original)
    assert message.decode(encoded.data, encoded.attributes) == original
    assert encoded.attributes == {"commit": SHA, "schema": "1"}
    assert encoded.ordering_key == "main"
    assert json.loads(encoded.data)["schema"] == 1


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
    ("data", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (raw(schema=2), "schema version 2 is not supported"),
        (raw(schema="1"), "'schema' is missing or not an integer"),
        (raw(commit="abc"), "40-character"),
        (raw(commit=SHA.upper()), "40-character"),
        (raw(ref="main"), "full git ref"),
        (raw(pipeline_spec_uri="https://x/y"), "pipeline_spec_uri"),
        (raw(source_uri="gs://bucket-only"), "source_uri"),
        (raw(images={"validator": ""}), "images"),
        (raw(parameters={"alpha": [1]}), "parameter 'alpha'"),
        (raw(parameters={"alpha": None}), "null"),
        (raw(actions=[{"id": "x"}]), "each action"),
        (raw(extra=1), "unknown field(s) for schema 1: extra"),
    ],
)
def test_decode_rejects_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        message.decode(data)
    assert reason in str(caught.value)


def test_decode_rejects_a_missing_field() -> None:
    data = message.to_json_dict(sample())
    del data["source_uri"]
    with pytest.raises(MessageError, match=r"missing field.*source_uri"):
        message.decode(json.dumps(data).encode())


def test_attributes_must_agree_with_the_data() -> None:
    data = message.encode(sample()).data
    with pytest.raises(MessageError, match="attribute 'commit'"):
        message.decode(data, {"commit": "f" * 40})
    with pytest.raises(MessageError, match="attribute 'schema'"):
        message.decode(data, {"schema": "2"})


def test_encode_refuses_an_invalid_message() -> None:
    with pytest.raises(MessageError, match="commit"):
        message.encode(sample(commit="nope"))


def test_bad_base64_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="base64"):
        message.decode_base64("not*base64!")
    assert message.decode_base64("aGk=") == b"hi"
