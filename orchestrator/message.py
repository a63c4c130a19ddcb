"""The Pub/Sub message that ends a build and starts a training run: one definition for both sides.

The orchestrator's ``publish`` step encodes it; the trigger function (``function/main.py``)
decodes and validates it. This module is standard library only and imports nothing else from
``orchestrator`` so that the deploy step can copy it next to the function as
``function/ct_message.py``.

Schema version 1
----------------
Message **data** is UTF-8 JSON, one object::

    {
      "schema": 1,                                   # int; this module accepts only 1
      "commit": "<40 lowercase hex>",                # the commit that was built
      "ref": "refs/heads/main",                      # the full git ref that was built
      "pipeline_spec_uri": "gs://<bucket>/<key>",    # the compiled pipeline spec (YAML)
      "source_uri": "gs://<bucket>/<key>",           # gzip tarball of training_src/
      "images": {"validator": "<registry>/validator@sha256:<64 hex>", ...},
      "parameters": {"hidden_units": 64, "alpha": 0.0001, ...},   # from pipeline/params.toml
      "actions": [{"id": "build_image:validator",
                   "summary": "components/validator/main.py (rule component-images)"}]
    }

- ``images`` maps a component name to an image reference (by digest, or by tag).
- ``parameters`` are pipeline parameters: names are strings, values are JSON scalars
  (string, integer, number or boolean; never null, lists or objects).
- ``actions`` lists what the build did, with a short reason each, for humans and logs.
- Unknown top-level keys are rejected: a new field means a new schema version.

Message **attributes**: ``{"commit": "<sha>", "schema": "1"}``. When present they must agree
with the data. The **ordering key** is the branch name derived from ``ref``
(``refs/heads/main`` -> ``main``), so runs of one branch are delivered in order.

What this module checks is what can be checked without configuration. The function adds the
rest: the spec URI must be inside its configured bucket, and parameter names and types must
match the compiled spec's root ``inputDefinitions``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SCHEMA_VERSION = 1

#: A pipeline parameter value as JSON carries it.
ParamValue = str | int | float | bool

_SHA_RE = re.compile(r"[0-9a-f]{40}")
_GS_RE = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(\S+)")
_FIELDS = frozenset(
    {
        "schema",
        "commit",
        "ref",
        "pipeline_spec_uri",
        "source_uri",
        "images",
        "parameters",
        "actions",
    }
)


class MessageError(ValueError):
    """The message cannot be used. ``str(error)`` is one sentence saying why."""


@dataclass(frozen=True, slots=True)
class ActionSummary:
    """One action the build ran, with the short reason it ran."""

    id: str
    summary: str


@dataclass(frozen=True, slots=True)
class PublishMessage:
    """The decoded, validated content of one message (schema version 1)."""

    commit: str
    ref: str
    pipeline_spec_uri: str
    source_uri: str
    images: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    parameters: Mapping[str, ParamValue] = field(default_factory=lambda: MappingProxyType({}))
    actions: tuple[ActionSummary, ...] = ()
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Freeze the mappings too, so a message cannot change after validation.
        object.__setattr__(self, "images", MappingProxyType(dict(self.images)))
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))
        object.__setattr__(self, "actions", tuple(self.actions))

    @property
    def branch(self) -> str:
        return branch_of(self.ref)


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """What the publisher hands to Pub/Sub."""

    data: bytes
    attributes: Mapping[str, str]
    ordering_key: str


def branch_of(ref: str) -> str:
    """``refs/heads/main`` -> ``main``; other refs lose only their ``refs/`` prefix."""
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/") :]
    return ref.removeprefix("refs/")


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/key`` -> ``("bucket", "some/key")``; raise MessageError otherwise."""
    match = _GS_RE.fullmatch(uri) if isinstance(uri, str) else None
    if match is None:
        raise MessageError(f"{uri!r} is not a gs://<bucket>/<key> URI")
    return match.group(1), match.group(2)


def to_json_dict(message: PublishMessage) -> dict[str, Any]:
    """The message as the JSON object of the schema above."""
    return {
        "schema": message.schema,
        "commit": message.commit,
        "ref": message.ref,
        "pipeline_spec_uri": message.pipeline_spec_uri,
        "source_uri": message.source_uri,
        "images": dict(message.images),
        "parameters": dict(message.parameters),
        "actions": [{"id": a.id, "summary": a.summary} for a in message.actions],
    }


def encode(message: PublishMessage) -> EncodedMessage:
    """Message -> data bytes (stable JSON), attributes and ordering key. Validates first."""
    data = json.dumps(to_json_dict(message), sort_keys=True, separators=(",", ":")).encode()
    decode(data)  # never publish what the function would reject
    return EncodedMessage(
        data=data,
        attributes={"commit": message.commit, "schema": str(message.schema)},
        ordering_key=branch_of(message.ref),
    )


def decode_base64(text: str | bytes) -> bytes:
    """Pub/Sub push and CloudEvents carry the data base64-encoded."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise MessageError(f"message data is not valid base64 ({error})") from None


def decode(data: bytes, attributes: Mapping[str, str] | None = None) -> PublishMessage:
    """Data bytes (and optional attributes) -> a validated message, or MessageError."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise MessageError("message data is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise MessageError(f"message data is not JSON ({error.msg} at char {error.pos})") from None
    if not isinstance(raw, dict):
        raise MessageError(f"message data must be a JSON object, not {type(raw).__name__}")

    schema = raw.get("schema")
    if type(schema) is not int:
        raise MessageError("field 'schema' is missing or not an integer")
    if schema != SCHEMA_VERSION:
        raise MessageError(f"schema version {schema} is not supported (expected {SCHEMA_VERSION})")
    missing = sorted(_FIELDS - raw.keys())
    if missing:
        raise MessageError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(raw.keys() - _FIELDS)
    if unknown:
        raise MessageError(f"unknown field(s) for schema {SCHEMA_VERSION}: {', '.join(unknown)}")

    commit = raw["commit"]
    if not isinstance(commit, str) or not _SHA_RE.fullmatch(commit):
        raise MessageError(
            f"field 'commit' must be a 40-character lowercase hex sha, not {commit!r}"
        )
    ref = raw["ref"]
    if not isinstance(ref, str) or not ref.startswith("refs/") or len(ref) <= len("refs/"):
        raise MessageError(f"field 'ref' must be a full git ref like refs/heads/main, not {ref!r}")
    for name in ("pipeline_spec_uri", "source_uri"):
        try:
            parse_gs_uri(raw[name])
        except MessageError as error:
            raise MessageError(f"field {name!r}: {error}") from None

    images = raw["images"]
    if not isinstance(images, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in images.items()
    ):
        raise MessageError("field 'images' must map component names to non-empty image references")

    parameters = raw["parameters"]
    if not isinstance(parameters, dict):
        raise MessageError("field 'parameters' must be a JSON object")
    for name, value in parameters.items():
        if not isinstance(value, str | int | float | bool):
            raise MessageError(
                f"parameter {name!r} must be a string, number or boolean, not {_json_type(value)}"
            )

    actions_raw = raw["actions"]
    if not isinstance(actions_raw, list):
        raise MessageError("field 'actions' must be a list")
    actions = []
    for item in actions_raw:
        if not (
            isinstance(item, dict)
            and set(item) == {"id", "summary"}
            and all(isinstance(v, str) for v in item.values())
        ):
            raise MessageError("each action must be an object with string 'id' and 'summary'")
        actions.append(ActionSummary(id=item["id"], summary=item["summary"]))

    if attributes:
        if "commit" in attributes and attributes["commit"] != commit:
            raise MessageError("attribute 'commit' does not match the data")
        if "schema" in attributes and attributes["schema"] != str(schema):
            raise MessageError("attribute 'schema' does not match the data")

    return PublishMessage(
        commit=commit,
        ref=ref,
        pipeline_spec_uri=raw["pipeline_spec_uri"],
        source_uri=raw["source_uri"],
        images=images,
        parameters=parameters,
        actions=tuple(actions),
        schema=schema,
    )


def _json_type(value: object) -> str:
    names = {type(None): "null", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)
