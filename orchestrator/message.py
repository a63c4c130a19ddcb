"""The Pub/Sub message that starts a training run, and the deploy-ledger record: one definition
for every side.

The orchestrator's ``publish`` step and ``trigger`` command encode a message; the trigger
function (``function/main.py``) decodes and validates it. The orchestrator writes the ledger
record after a successful deploy; the function reads it to retrain on new data. This module is
standard library only and imports nothing else from ``orchestrator`` so that the deploy step
can copy it next to the function as ``function/ct_message.py``.

Schema version 2 (encoded; 1 is still decoded)
----------------------------------------------
Message **data** is UTF-8 JSON, one object, at most 1 MiB::

    {
      "schema": 2,                                   # int; 1 and 2 are decoded, 2 is encoded
      "commit": "<40 lowercase hex>",                # the deployed commit
      "ref": "refs/heads/main",                      # the full git ref that was built
      "pipeline_spec_uri": "gs://<bucket>/<key>",    # the compiled pipeline spec (YAML)
      "source_uri": "gs://<bucket>/<key>",           # gzip tarball of training_src/
      "images": {"validator": "<registry>/validator@sha256:<64 hex>", ...},
      "parameters": {"hidden_units": 64, "alpha": 0.0001, ...},   # from pipeline/params.toml
      "actions": [{"id": "build_image:validator",
                   "summary": "components/validator/main.py (rule component-images)"}],
      "data_uri": "",                                # "" the pipeline's default data; else
                                                     #   gs://<bucket>/<key>, or an absolute
                                                     #   local path (local backend only)
      "data_version": "",                            # the data object's generation, or ""
      "reason": "commit",                            # commit | manual | schedule | data
      "request_id": "<1-64 of [A-Za-z0-9_.-]>",      # one per publish; a redelivery keeps it
      "retry": false                                 # run again a state whose run failed
    }

- ``images`` maps a component name to an image reference (by digest, or by tag).
- ``parameters`` are pipeline parameters: names are strings, values are JSON scalars (string,
  integer, number or boolean; never null, lists or objects). In schema 2 the data is the field
  ``data_uri``, never a parameter of that name.
- ``actions`` lists what the build did, with a short reason each, for humans and logs.
- ``data_version`` may be set only with a ``data_uri``.
- Unknown top-level keys are rejected: a new field means a new schema version.

Schema 1 is schema 2 without the last five fields; decoding it gives ``data_uri=""``,
``data_version=""``, ``reason="commit"``, ``request_id=""`` and ``retry=False`` (a schema-1
``data_uri`` *parameter* stays a parameter). ``PublishMessage.schema`` says which one arrived.

Message **attributes**: ``{"commit": "<sha>", "schema": "2"}``. When present they must agree
with the data. The **ordering key** is the branch name derived from ``ref``
(``refs/heads/main`` -> ``main``): information only, since the function's trigger subscription
has no message ordering (README, "Message order is not guaranteed").

Hostile input never gets past :func:`decode` as anything but :class:`MessageError`: more than
1 MiB, not UTF-8, not JSON, duplicate keys, ``NaN``/``Infinity`` (and numbers that overflow to
them), integers of more than 64 digits, nesting deeper than the JSON parser allows, lone
surrogates or NUL in strings, attributes that are not a mapping of strings.

What this module checks is what can be checked without configuration. The function adds the
rest: the spec URI must be inside its configured bucket, and parameter names and types must
match the compiled spec's root ``inputDefinitions``.

Run identity
------------
:func:`run_identity` names a training run by what it trains on, never by the commit:
``"ct-" + sha256(canonical JSON of spec hash, source URI, images, parameters, data URI and
data version)[:20]``. The same state published from two commits or branches is one run.

The deploy-ledger record (schema 1)
-----------------------------------
``gs://<bucket>/<prefix>/ledger/<branch>/<pipeline>.json``: :class:`DeployedState`, written by
the orchestrator after a successful build and publish (:func:`encode_state`), read by the
function for data notifications and by the orchestrator for its base (:func:`decode_state`,
which raises :class:`StateError` naming the record's URI and the command that repairs it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime as _datetime
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal, NoReturn

SCHEMA_VERSION = 2
DECODED_SCHEMAS = (1, 2)
STATE_SCHEMA_VERSION = 1
#: Largest message data or ledger record accepted (Pub/Sub itself allows 10 MB).
MAX_DATA_BYTES = 1 << 20
#: Longest integer literal accepted (in digits), whatever the interpreter's own limit.
MAX_INT_DIGITS = 64

#: A pipeline parameter value as JSON carries it.
ParamValue = str | int | float | bool
Reason = Literal["commit", "manual", "schedule", "data"]
REASONS: tuple[Reason, ...] = ("commit", "manual", "schedule", "data")

_SHA_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DATA_VERSION_RE = re.compile(r"[!-~]{0,128}")  # printable ASCII, no spaces
_PIPELINE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RUN_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_BAD_TEXT_RE = re.compile(r"[\x00\ud800-\udfff]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_FIELDS_V1 = frozenset(
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
_FIELDS_V2 = _FIELDS_V1 | {"data_uri", "data_version", "reason", "request_id", "retry"}
_FIELDS = {1: _FIELDS_V1, 2: _FIELDS_V2}
_STATE_REQUIRED = frozenset(
    {
        "schema",
        "branch",
        "pipeline",
        "commit",
        "ref",
        "pipeline_spec_uri",
        "source_uri",
        "images",
        "parameters",
    }
)
_STATE_FIELDS = _STATE_REQUIRED | {
    "data_uri", "data_version", "hashes", "run_id", "published_message", "updated",
}  # fmt: skip
REPAIR_HINT = "python -m orchestrator ledger set ..."
#: Raises the caller's error type with a reason.
_Fail = Callable[[str], NoReturn]


class MessageError(ValueError):
    """The message cannot be used. ``str(error)`` is one sentence saying why."""


class StateError(ValueError):
    """A deploy-ledger record cannot be used. ``str(error)`` names its URI (``source``), says
    why (``reason``) and how to repair it."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(
            f"the deploy-ledger record {source} is unusable: {reason}; "
            f"repair it with `{REPAIR_HINT}` (see `python -m orchestrator ledger set --help`)"
        )


@dataclass(frozen=True, slots=True)
class ActionSummary:
    """One action the build ran, with the short reason it ran."""

    id: str
    summary: str


def new_request_id() -> str:
    """A fresh request id: one per publish."""
    import uuid  # not at import: the planning path never needs it

    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class PublishMessage:
    """The decoded, validated content of one message (schema version 2, or 1 with defaults)."""

    commit: str
    ref: str
    pipeline_spec_uri: str
    source_uri: str
    images: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    parameters: Mapping[str, ParamValue] = field(default_factory=lambda: MappingProxyType({}))
    actions: tuple[ActionSummary, ...] = ()
    data_uri: str = ""
    reason: Reason = "commit"
    #: A new message gets a fresh id; a decoded schema-1 message has ``""``.
    request_id: str = field(default_factory=new_request_id)
    retry: bool = False
    data_version: str = ""
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


@dataclass(frozen=True, slots=True)
class DeployedState:
    """One deploy-ledger record (schema 1): what is deployed for a branch and a pipeline."""

    branch: str
    pipeline: str  # "default" for now; keyed so that several pipelines can come later
    commit: str  # 40 lowercase hex
    ref: str
    pipeline_spec_uri: str
    source_uri: str
    images: Mapping[str, str]  # component -> image reference (by digest)
    parameters: Mapping[str, ParamValue]
    data_uri: str = ""
    data_version: str = ""  # which version of data_uri (an object generation, a file's hash)
    #: "source", "spec", "function", "image:<name>" -> content hash
    hashes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    run_id: str = ""  # the run identity last published for this state
    published_message: str = ""  # the Pub/Sub message id of that publish, if known
    updated: str = ""  # ISO 8601 UTC
    schema: int = STATE_SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", MappingProxyType(dict(self.images)))
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))
        object.__setattr__(self, "hashes", MappingProxyType(dict(self.hashes)))


def branch_of(ref: str) -> str:
    """``refs/heads/main`` -> ``main``; other refs lose only their ``refs/`` prefix."""
    if ref.startswith("refs/heads/"):
        return ref[len("refs/heads/") :]
    return ref.removeprefix("refs/")


def parse_gs_uri(uri: object) -> tuple[str, str]:
    """``gs://bucket/some/key`` -> ``("bucket", "some/key")``; raise MessageError otherwise.

    The key must be a clean relative name (no empty, ``.`` or ``..`` segment, no leading
    ``/``, no backslash, NUL or line break), as ``orchestrator/objects.py`` requires."""
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise MessageError(f"{_show(uri)} is not a gs://<bucket>/<key> URI")
    bucket, slash, key = uri[len("gs://") :].partition("/")
    if not slash or not key or not _BUCKET_RE.fullmatch(bucket):
        raise MessageError(f"{_show(uri)} is not a gs://<bucket>/<key> URI")
    if (
        re.search(r"[\x00\\\n\r]", key)
        or key.startswith("/")
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise MessageError(
            f"{_show(uri)} is not a gs://<bucket>/<key> URI with a clean key "
            "(no empty, '.' or '..' segments, no backslash, NUL or line break)"
        )
    return bucket, key


def to_json_dict(message: PublishMessage) -> dict[str, Any]:
    """The message as the JSON object of schema 2 (whatever schema it was decoded from)."""
    return {
        "schema": SCHEMA_VERSION,
        "commit": message.commit,
        "ref": message.ref,
        "pipeline_spec_uri": message.pipeline_spec_uri,
        "source_uri": message.source_uri,
        "images": dict(message.images),
        "parameters": dict(message.parameters),
        "actions": [{"id": a.id, "summary": a.summary} for a in message.actions],
        "data_uri": message.data_uri,
        "data_version": message.data_version,
        "reason": message.reason,
        "request_id": message.request_id,
        "retry": message.retry,
    }


def encode(message: PublishMessage) -> EncodedMessage:
    """Message -> data bytes (stable JSON, schema 2), attributes and ordering key. Validates
    first: never publish what the function would reject."""
    data = json.dumps(
        to_json_dict(message), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()
    decode(data)
    return EncodedMessage(
        data=data,
        attributes={"commit": message.commit, "schema": str(SCHEMA_VERSION)},
        ordering_key=branch_of(message.ref),
    )


def decode_base64(text: object) -> bytes:
    """Pub/Sub push and CloudEvents carry the data base64-encoded."""
    if not isinstance(text, str | bytes):
        raise MessageError(f"message data must be a base64 string, not {_json_type(text)}")
    if len(text) > (MAX_DATA_BYTES // 3 + 1) * 4:
        raise MessageError(f"message data is larger than the {MAX_DATA_BYTES}-byte limit")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise MessageError(f"message data is not valid base64 ({error})") from None


def check_attributes(attributes: object) -> dict[str, str]:
    """Message attributes as a plain ``dict[str, str]``; ``None`` is empty. MessageError for
    anything else (a list, a string, non-string values)."""
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise MessageError(
            f"message attributes must map names to strings, not {_json_type(attributes)}"
        )
    checked: dict[str, str] = {}
    for name, value in attributes.items():
        if not isinstance(name, str):
            raise MessageError(f"message attribute names must be strings, not {_json_type(name)}")
        if not isinstance(value, str):
            raise MessageError(
                f"message attribute {_show(name)} must be a string, not {_json_type(value)}"
            )
        checked[name] = value
    return checked


def load_json(data: object, what: str = "message data") -> Any:
    """Parse bounded, strict JSON, or raise MessageError saying why (see the module docstring).
    ``what`` names the input in the error."""
    return _load_json(data, what, _message_failure)


def decode(data: bytes, attributes: Mapping[str, str] | None = None) -> PublishMessage:
    """Data bytes (and optional attributes) -> a validated message, or MessageError."""
    attrs = check_attributes(attributes)
    raw = load_json(data)
    if not isinstance(raw, dict):
        raise MessageError(f"message data must be a JSON object, not {_json_type(raw)}")

    schema = raw.get("schema")
    if type(schema) is not int:
        raise MessageError("field 'schema' is missing or not an integer")
    if schema not in DECODED_SCHEMAS:
        raise MessageError(f"schema version {_show(schema)} is not supported (expected 1 or 2)")
    fields = _FIELDS[schema]
    missing = sorted(fields - raw.keys())
    if missing:
        raise MessageError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(raw.keys() - fields)
    if unknown:
        shown = ", ".join(_show(k, 40) for k in unknown[:5])
        raise MessageError(f"unknown field(s) for schema {schema}: {shown}")

    fail = _message_failure
    commit = _commit(raw["commit"], fail)
    ref = _ref(raw["ref"], fail)
    for name in ("pipeline_spec_uri", "source_uri"):
        try:
            parse_gs_uri(raw[name])
        except MessageError as error:
            raise MessageError(f"field {name!r}: {error}") from None
    images = _images(raw["images"], fail)
    parameters = _parameters(raw["parameters"], fail, allow_data_uri=schema == 1)
    if "data_uri" in parameters:  # schema 1 carried the data as a parameter: the same rule
        _data_uri(parameters["data_uri"], fail, "parameter 'data_uri'")

    actions_raw = raw["actions"]
    if not isinstance(actions_raw, list):
        raise MessageError(f"field 'actions' must be a list, not {_json_type(actions_raw)}")
    actions = []
    for item in actions_raw:
        if not (
            isinstance(item, dict)
            and set(item) == {"id", "summary"}
            and all(isinstance(v, str) for v in item.values())
        ):
            raise MessageError("each action must be an object with string 'id' and 'summary'")
        actions.append(ActionSummary(id=item["id"], summary=item["summary"]))

    extra: dict[str, Any] = {"request_id": ""}
    if schema >= 2:
        data_uri = _data_uri(raw["data_uri"], fail)
        reason = raw["reason"]
        if reason not in REASONS:
            raise MessageError(
                f"field 'reason' must be one of {', '.join(REASONS)}, not {_show(reason)}"
            )
        request_id = raw["request_id"]
        if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id):
            raise MessageError(
                "field 'request_id' must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' "
                f"and '-', not {_show(request_id)}"
            )
        retry = raw["retry"]
        if not isinstance(retry, bool):
            raise MessageError(f"field 'retry' must be true or false, not {_show(retry)}")
        data_version = raw["data_version"]
        if not isinstance(data_version, str) or not _DATA_VERSION_RE.fullmatch(data_version):
            raise MessageError(
                "field 'data_version' must be a string of at most 128 printable characters "
                f"without spaces, not {_show(data_version)}"
            )
        if data_version and not data_uri:
            raise MessageError("field 'data_version' is set but 'data_uri' is empty")
        extra = {
            "data_uri": data_uri,
            "reason": reason,
            "request_id": request_id,
            "retry": retry,
            "data_version": data_version,
        }

    if "commit" in attrs and attrs["commit"] != commit:
        raise MessageError("attribute 'commit' does not match the data")
    if "schema" in attrs and attrs["schema"] != str(schema):
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
        **extra,
    )


def run_identity(
    spec_sha256: str,
    source_uri: str,
    images: Mapping[str, str],
    parameters: Mapping[str, ParamValue],
    data_uri: str,
    data_version: str = "",
) -> str:
    """The id of the training run of this state: ``"ct-"`` and 20 hex digits of the sha256 of
    the canonical JSON of what it trains on. The commit is not part of it."""
    if not isinstance(spec_sha256, str) or not _SHA256_RE.fullmatch(spec_sha256):
        raise ValueError(f"spec_sha256 must be 64 lowercase hex digits, not {_show(spec_sha256)}")
    canonical = json.dumps(
        {
            "data_uri": data_uri,
            "data_version": data_version,
            "images": dict(images),
            "parameters": dict(parameters),
            "source_uri": source_uri,
            "spec_sha256": spec_sha256,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return "ct-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------
# The deploy-ledger record
# ---------------------------------------------------------------------------


def state_to_json_dict(state: DeployedState) -> dict[str, Any]:
    return {
        "schema": state.schema,
        "branch": state.branch,
        "pipeline": state.pipeline,
        "commit": state.commit,
        "ref": state.ref,
        "pipeline_spec_uri": state.pipeline_spec_uri,
        "source_uri": state.source_uri,
        "images": dict(state.images),
        "parameters": dict(state.parameters),
        "data_uri": state.data_uri,
        "data_version": state.data_version,
        "hashes": dict(state.hashes),
        "run_id": state.run_id,
        "published_message": state.published_message,
        "updated": state.updated,
    }


def request_for(state: DeployedState, **changes: Any) -> PublishMessage:
    """The run request of a deployed state (its spec, source, images and parameters), with
    ``changes`` (``actions``, ``data_uri``, ``reason``, ``request_id`` ...) applied."""
    fields: dict[str, Any] = {
        "commit": state.commit,
        "ref": state.ref,
        "pipeline_spec_uri": state.pipeline_spec_uri,
        "source_uri": state.source_uri,
        "images": state.images,
        "parameters": state.parameters,
        "data_uri": state.data_uri,
        "data_version": state.data_version,
    }
    return PublishMessage(**(fields | changes))


def encode_state(state: DeployedState) -> bytes:
    """The record as stable JSON (sorted keys), UTF-8. Validates first (StateError)."""
    data = (
        json.dumps(state_to_json_dict(state), sort_keys=True, indent=2, allow_nan=False) + "\n"
    ).encode()
    decode_state(data, source="<the record being encoded>")
    return data


#: The longest branch name a deploy-ledger record holds.
MAX_BRANCH_LENGTH = 256


def is_recordable_branch(branch: object) -> bool:
    """Whether a deploy-ledger record can hold ``branch``: 1 to :data:`MAX_BRANCH_LENGTH`
    characters of text, no control characters (git allows none in a ref name either:
    https://git-scm.com/docs/git-check-ref-format) and no lone surrogate (what Python makes of
    a command-line argument that is not UTF-8; a JSON record is UTF-8)."""
    return (
        isinstance(branch, str)
        and 0 < len(branch) <= MAX_BRANCH_LENGTH
        and not _CONTROL_RE.search(branch)
        and not _SURROGATE_RE.search(branch)
    )


def decode_state(data: bytes, *, source: str) -> DeployedState:
    """Bytes -> a validated record, or StateError naming ``source`` (the record's URI)."""

    def fail(reason: str) -> NoReturn:
        raise StateError(source, reason)

    raw = _load_json(data, "the record", fail)
    if not isinstance(raw, dict):
        fail(f"it must be a JSON object, not {_json_type(raw)}")
    schema = raw.get("schema")
    if type(schema) is not int:
        fail("field 'schema' is missing or not an integer")
    if schema != STATE_SCHEMA_VERSION:
        fail(f"schema version {_show(schema)} is not supported (expected 1)")
    missing = sorted(_STATE_REQUIRED - raw.keys())
    if missing:
        fail(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(raw.keys() - _STATE_FIELDS)
    if unknown:
        fail(f"unknown field(s): {', '.join(_show(k, 40) for k in unknown[:5])}")

    branch = raw["branch"]
    if not is_recordable_branch(branch):
        fail(f"field 'branch' must be a branch name, not {_show(branch)}")
    pipeline = raw["pipeline"]
    if not isinstance(pipeline, str) or not _PIPELINE_RE.fullmatch(pipeline):
        fail(
            "field 'pipeline' must be 1 to 64 of A-Z, a-z, 0-9, '_', '.' and '-', "
            f"not {_show(pipeline)}"
        )
    for name in ("pipeline_spec_uri", "source_uri"):
        try:
            parse_gs_uri(raw[name])
        except MessageError as error:
            fail(f"field {name!r}: {error}")
    hashes = raw.get("hashes", {})
    if not isinstance(hashes, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in hashes.items()
    ):
        fail("field 'hashes' must map artifact names to non-empty hashes")
    run_id = raw.get("run_id", "")
    if not isinstance(run_id, str) or (run_id and not _RUN_ID_RE.fullmatch(run_id)):
        fail(f"field 'run_id' must be a run identity or empty, not {_show(run_id)}")
    published = raw.get("published_message", "")
    if not isinstance(published, str) or len(published) > 256 or _CONTROL_RE.search(published):
        fail(f"field 'published_message' must be a message id or empty, not {_show(published)}")
    updated = raw.get("updated", "")
    if not isinstance(updated, str) or (updated and not _is_utc_timestamp(updated)):
        fail(f"field 'updated' must be an ISO 8601 UTC time or empty, not {_show(updated)}")

    return DeployedState(
        branch=branch,
        pipeline=pipeline,
        commit=_commit(raw["commit"], fail),
        ref=_ref(raw["ref"], fail),
        pipeline_spec_uri=raw["pipeline_spec_uri"],
        source_uri=raw["source_uri"],
        images=_images(raw["images"], fail),
        parameters=_parameters(raw["parameters"], fail, allow_data_uri=False),
        data_uri=_data_uri(raw.get("data_uri", ""), fail),
        data_version=_data_version(raw.get("data_version", ""), fail),
        hashes=hashes,
        run_id=run_id,
        published_message=published,
        updated=updated,
        schema=schema,
    )


# ---------------------------------------------------------------------------
# Shared checks. ``fail(reason)`` raises the caller's error type.
# ---------------------------------------------------------------------------


class JSONRefused(ValueError):
    """Strict JSON refused the text (:func:`strict_json`); the message reads after the name of
    what was parsed ("holds NaN, which is not a JSON number")."""


def strict_json(text: str) -> Any:
    """``json.loads`` held to RFC 8259 and to what a message can carry: no NaN or Infinity, no
    repeated keys, finite floats, integers of at most :data:`MAX_INT_DIGITS` digits.
    Raises :class:`JSONRefused` for those, and what ``json.loads`` raises for the rest
    (``JSONDecodeError``; ``RecursionError`` for nesting deeper than the parser goes)."""
    return json.loads(
        text,
        parse_constant=_reject_constant,
        parse_float=_finite_float,
        parse_int=_bounded_int,
        object_pairs_hook=_unique_keys,
    )


def _message_failure(reason: str) -> NoReturn:
    raise MessageError(reason)


def _load_json(data: object, what: str, fail: _Fail) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        fail(f"{what} must be bytes, not {_json_type(data)}")
    size = len(data)
    if size > MAX_DATA_BYTES:
        fail(f"{what} is {size} bytes, more than the {MAX_DATA_BYTES}-byte limit")
    if size == 0:
        fail(f"{what} is empty")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        fail(f"{what} is not UTF-8 (byte {error.start})")
    try:
        raw = strict_json(text)
    except JSONRefused as error:
        fail(f"{what} {error}")
    except json.JSONDecodeError as error:
        fail(f"{what} is not JSON ({error.msg} at char {error.pos})")
    except RecursionError:
        fail(f"{what} is nested too deeply")
    except ValueError as error:  # e.g. the interpreter's integer-conversion limit
        fail(f"{what} holds a value JSON cannot carry here ({_first_line(str(error))})")
    bad = _bad_string(raw)
    if bad is not None:
        fail(f"{what} holds a string with a NUL or a lone surrogate: {_show(bad)}")
    return raw


def _reject_constant(name: str) -> NoReturn:
    raise JSONRefused(f"holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused(f"holds a number too large for a double: {_show(text, 40)}")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JSONRefused(f"holds an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JSONRefused(f"repeats the key {_show(key, 40)}")
        result[key] = value
    return result


def _bad_string(raw: Any) -> str | None:
    """The first string (key or value) with a NUL or a lone surrogate, walking iteratively."""
    stack = [raw]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _BAD_TEXT_RE.search(item):
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _commit(value: object, fail: _Fail) -> str:
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        fail(f"field 'commit' must be a 40-character lowercase hex sha, not {_show(value)}")
    return value


def _ref(value: object, fail: _Fail) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("refs/")
        or len(value) <= len("refs/")
        or len(value) > 1024
        or _CONTROL_RE.search(value)
    ):
        fail(f"field 'ref' must be a full git ref like refs/heads/main, not {_show(value)}")
    return value


def _images(value: object, fail: _Fail) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        fail("field 'images' must map component names to non-empty image references")
    return value


def _parameters(value: object, fail: _Fail, *, allow_data_uri: bool) -> dict[str, ParamValue]:
    if not isinstance(value, dict):
        fail(f"field 'parameters' must be a JSON object, not {_json_type(value)}")
    for name, item in value.items():
        if not isinstance(item, str | int | float | bool):
            fail(
                f"parameter {_show(name, 60)} must be a string, number or boolean, "
                f"not {_json_type(item)}"
            )
    if "data_uri" in value and not allow_data_uri:
        fail("parameter 'data_uri' is not allowed: the data is the field 'data_uri'")
    return value


def _data_version(value: object, fail: _Fail) -> str:
    if not isinstance(value, str) or not _DATA_VERSION_RE.fullmatch(value):
        fail(
            "field 'data_version' must be a string of at most 128 printable characters "
            f"without spaces, not {_show(value)}"
        )
    return value


def _data_uri(value: object, fail: _Fail, name: str = "field 'data_uri'") -> str:
    if value == "":
        return ""
    if isinstance(value, str) and value.startswith("gs://"):
        try:
            parse_gs_uri(value)
        except MessageError as error:
            fail(f"{name}: {error}")
        return value
    if (
        isinstance(value, str)
        and value.startswith("/")
        and len(value) <= 4096
        and not _CONTROL_RE.search(value)
    ):
        return value
    fail(
        f"{name} must be '', a gs://<bucket>/<key> URI or an absolute local path, "
        f"not {_show(value)}"
    )


def _is_utc_timestamp(text: str) -> bool:
    try:
        when = _datetime.fromisoformat(text)
    except ValueError:
        return False
    return when.utcoffset() == timedelta(0)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


def _show(value: object, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: an error never echoes a megabyte of input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _json_type(value: object) -> str:
    names = {
        type(None): "null",
        list: "a list",
        dict: "an object",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)
