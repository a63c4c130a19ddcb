"""Trigger function: turn a run request, or new data in the bucket, into exactly one pipeline run.

Deployed as a Cloud Function (gen2) with a Pub/Sub trigger; entry point ``on_message``
(a ``functions_framework.cloud_event`` handler). The orchestrator's local executor calls
``handle_message`` directly, in process, for the embedded local default; load this file by path
with ``importlib.util.spec_from_file_location`` and put the module in ``sys.modules`` before
executing it (its dataclasses need that). Deployed, ``ct_message.py`` and ``ct_objects.py``
(copies of ``orchestrator/message.py`` and ``orchestrator/objects.py``) sit next to it.

Configuration (environment variables):

========================= =================================================================
``CT_BUCKET``              the only bucket a pipeline spec / training source may come from;
                           the runs registry lives in it too
``CT_BACKEND``             ``vertex`` | ``kfp`` | ``local`` (default ``vertex``)
``CT_PROJECT``             Google Cloud project (vertex)
``CT_REGION``              Vertex AI region (default ``us-central1``)
``CT_PIPELINE_ROOT``       pipeline root: ``gs://...`` (vertex; kfp, optional), a local
                           directory (local)
``CT_DATA_URI``            the ``data_uri`` pipeline parameter when a message gives none
                           (default: the pipeline's own default, the bundled digits)
``CT_SERVICE_ACCOUNT``     service account the run executes as (vertex, kfp)
``CT_KFP_HOST``            Kubeflow Pipelines endpoint, e.g. ``http://ml-pipeline-ui:80`` (kfp)
``CT_KFP_EXPERIMENT``      Kubeflow experiment name (default ``continuous-training``)
``CT_ENABLE_CACHING``      ``true`` | ``false`` (default ``true``)
``CT_LOCAL_RUNNER``        ``subprocess`` (no Docker) | ``docker`` (the built images) (local)
``CT_VERTEX_ENDPOINT``     Vertex API endpoint override, e.g. a private endpoint; an
                           ``http://`` endpoint uses REST with anonymous credentials (tests)
``CT_STATE_PREFIX``        where the function keeps its state in ``CT_BUCKET`` (default ``ct``):
                           the runs registry is ``gs://<CT_BUCKET>/<prefix>/runs/``
``CT_DATA_PREFIX``         object-name prefix of training data, e.g. ``data/``; unset: storage
                           notifications are acknowledged and ignored
``CT_DATA_BUCKET``         the bucket whose notifications count (default ``CT_BUCKET``)
``CT_LEDGER_URI``          the deploy-ledger record a data notification retrains (default
                           ``gs://<CT_BUCKET>/<prefix>/ledger/main/default.json``)
``CT_LEASE_SECONDS``       lease of a local run's registry entry (default 300; renewed every
                           fifth of it while the run goes on)
``CT_MAX_EVENT_AGE``       seconds after its publication that a message is still retried
                           (default 3600, at most 604800): past it, a failure is acknowledged
                           with one ERROR line instead of raised (see "Retries" below)
``CT_KFP_IAP_CLIENT_ID``   the OAuth client id of the Identity-Aware Proxy in front of
                           ``CT_KFP_HOST``: each call carries a Google-signed ID token for it
                           (kfp)
``CT_KFP_TOKEN``           a bearer token for ``CT_KFP_HOST`` (kfp; e.g. from Secret Manager with
                           ``--set-secrets``); not together with ``CT_KFP_IAP_CLIENT_ID``
``CT_KFP_NAMESPACE``       the Kubeflow profile namespace of multi-user Kubeflow (kfp)
``CT_ALLOW_LOCAL_DATA``    ``true``: a message's ``data_uri`` may be an absolute local path
                           (local backend). The orchestrator sets it when it hands a run to
                           the function in process; a served function never reads local paths
========================= =================================================================

Storage goes through ``objects.py``: ``ORCHESTRATOR_LOCAL_BUCKET_ROOT=/dir`` reads ``gs://b/k``
from ``/dir/b/k``; ``STORAGE_EMULATOR_HOST`` selects a storage emulator; otherwise Google
Cloud Storage.

Run identity and the runs registry
----------------------------------
A run is named by what it trains on, never by the commit: ``message.run_identity(sha256 of the
spec bytes, source URI, images, parameters, data URI, data version)``. Each identity has one
registry object, ``gs://<CT_BUCKET>/<CT_STATE_PREFIX>/runs/<run_id>.json``::

    {"run_id": "ct-<20 hex>", "status": "running" | "succeeded" | "failed" | "submitted",
     "request_id": "...", "attempt": 1, "job_id": "ct-<20 hex>[-a<attempt>]",
     "commit": "<sha>", "data_uri": "...", "started": "<ISO 8601 UTC>",
     "lease_expires": "<ISO 8601 UTC>" | "", "host": "<hostname>#<boot id>", "pid": 1234,
     "metrics": {...}, "detail": "..."}

It is claimed with a create-only write and taken over with a compare-and-swap on the
generation that was read, so of two deliveries racing for one identity exactly one runs:

- no entry: claim it and run (attempt 1);
- ``succeeded``, or ``submitted`` (vertex, kfp: the function does not wait for the outcome):
  a duplicate, reporting the earlier run and its metrics;
- ``running`` with a live lease, and (on the same host) a live process: a duplicate, "in
  progress";
- ``running`` whose lease expired, or whose process on this host is gone (SIGTERM, SIGKILL, a
  crash): taken over, same attempt and job id, and run;
- ``failed``: run again (attempt + 1) only for a message with ``retry`` true whose
  ``request_id`` differs from the entry's (a redelivery of that request must not rerun);
  otherwise a duplicate reporting the failure;
- an entry that cannot be read: replaced (taken over).

A local run holds a lease of ``CT_LEASE_SECONDS`` (300 s), renewed every 60 s; a vertex or kfp
claim holds 120 s, until the job is submitted. When a local run ends with an exception,
KeyboardInterrupt or SystemExit, its entry is left ``running`` with an expired lease and the
reason in ``detail``: an interruption is not a verdict, so the next delivery, with or without
``retry``, takes it over. A killed process cannot write that; its pid (same host) or its lease
(elsewhere) gives it away. The job id (Vertex job id, Kubeflow run name, local run directory)
is the run id for attempt 1 and ``<run_id>-a<attempt>`` for retries; a Vertex 409 or an
existing Kubeflow run of that name is reported as a duplicate.

Data notifications
------------------
A Cloud Storage ``OBJECT_FINALIZE`` notification (attributes ``eventType``, ``bucketId``,
``objectId``, ``objectGeneration``, ``payloadFormat``; data: the object's JSON metadata) for an
object under ``CT_DATA_PREFIX`` in ``CT_DATA_BUCKET`` starts a run of the deployed state in
``CT_LEDGER_URI`` (its spec, source, images and parameters) with ``data_uri =
gs://<bucket>/<objectId>``, ``data_version = objectGeneration``, ``reason = "data"`` and a
``request_id`` derived from bucket, object and generation; the registry makes a notification
delivered twice one run.

What a message names is checked before anything is read: the spec and the training source
must be ``gs://<CT_BUCKET>/<key>`` with a clean key (no ``..``, ``.`` or empty segment, no
leading ``/``, backslash or NUL), data a clean ``gs://`` URI (or, with
``CT_ALLOW_LOCAL_DATA``, a local path), so that no message reaches outside the bucket on any
backend, and a rejection never depends on whether some host path exists.

Outcomes, one JSON log line each (``severity``, ``message``, ``message_id``; the message text
is one line: control characters a message brought in are escaped, ``\\n``):

- ``ERROR rejected message <id>: <reason>``: malformed or permanently unusable (bad base64 or
  JSON, unknown schema, bad sha, a spec outside the bucket or missing or not a pipeline,
  unknown or mistyped parameters, a bad ledger record); acknowledged, nothing runs.
- ``INFO ignored message <id>: <reason>``: a storage notification that asks for nothing (data
  notifications off, another event type, another bucket, outside the prefix, no ledger yet);
  acknowledged, nothing runs.
- ``INFO|ERROR message <id>: run <run_id> <status>`` with ``run``: started, duplicate or failed.
- ``WARNING transient failure for message <id>, will be redelivered: ...``: storage or the
  backend unreachable; raised so that Pub/Sub redelivers.
- ``ERROR cannot handle message <id>, the function is misconfigured (it will be redelivered):
  ...``: a ``ConfigError``; raised too, so that no message is lost while the deployment is
  fixed.
- ``ERROR gave up on message <id>, published <age> ago (CT_MAX_EVENT_AGE is <n> s): ...``: one
  of the two above, for a message past the age cap; acknowledged, nothing runs.

An event that is not a Pub/Sub message at all (its data not an object, no ``message``, data
that is not a string) is rejected the same way (``rejected message ?: ...``).

Retries
-------
The function is deployed with ``--retry``: an invocation that raises is delivered again, with
exponential backoff (10 to 600 s), for as long as Pub/Sub keeps the message (up to 7 days); one
that returns is acknowledged. So only what a later attempt can fix raises: storage or the
backend unreachable, and a misconfiguration (kept: a redeploy fixes it, and the messages
published meanwhile then run). Everything else returns after its log line.

Retries are capped by the message's age, as Google's "Retrying event-driven functions" page
recommends (https://cloud.google.com/functions/docs/bestpractices/retries, "Set an end
condition to avoid infinite retry loops"). The age counts from the Pub/Sub ``publishTime`` the
event carries (``data.message.publishTime``, RFC 3339; the CloudEvent ``time`` when it has none:
https://cloud.google.com/eventarc/docs/cloudevents). A failure of a message older than
``CT_MAX_EVENT_AGE`` is acknowledged with the ``gave up`` line instead of raised. A late message
that succeeds still runs: the age only decides what a failure does. A state given up on is
published again by ``python -m orchestrator trigger`` or a re-run of its build; the runs
registry makes that one run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import functions_framework

try:  # inside the repository (and the orchestrator's in-process call)
    from orchestrator import message, objects
    from orchestrator.runs import HOST, Decision, RegistryEntry, RunStatus, decide, iso_utc
except ImportError:  # deployed: the deploy step copies these modules here
    import ct_message as message  # type: ignore[import-not-found, no-redef]
    import ct_objects as objects  # type: ignore[import-not-found, no-redef]
    from ct_runs import HOST, RegistryEntry, decide, iso_utc  # type: ignore[import-not-found, no-redef]

MessageError = message.MessageError
StateError = message.StateError
#: What redelivery cannot fix: acknowledged with one log line. A BadUri that gets past the
#: message's own checks names an object the bucket can never hold (on the local directory
#: bucket, a part of the key longer than a file name).
PERMANENT_ERRORS: tuple[type[Exception], ...] = (MessageError, StateError, objects.BadUri)
Backend = Literal["vertex", "kfp", "local"]
FUNCTION_DIR = Path(__file__).resolve().parent

#: Lease of a vertex/kfp claim: long enough to submit the job.
SUBMIT_LEASE_SECONDS = 120
DEFAULT_LOCAL_LEASE_SECONDS = 300
#: Tries at claiming a registry entry that others keep changing, before giving up (transient).
CLAIM_TRIES = 8
#: How long after its publication a failing message is retried (CT_MAX_EVENT_AGE), and the
#: bound: Pub/Sub keeps an unacknowledged message at most 7 days.
DEFAULT_MAX_EVENT_AGE = 3600
MAX_EVENT_AGE_LIMIT = 7 * 24 * 3600
FINALIZE = "OBJECT_FINALIZE"
_NOTIFICATION_ATTRIBUTES = ("eventType", "bucketId", "objectId", "payloadFormat")

_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
}


class ConfigError(ValueError):
    """The function's environment is incomplete or invalid."""


@dataclass(frozen=True)
class Config:
    bucket: str
    backend: Backend = "vertex"
    project: str | None = None
    region: str = "us-central1"
    pipeline_root: str = ""
    data_uri: str = ""
    service_account: str | None = None
    kfp_host: str | None = None
    kfp_experiment: str = "continuous-training"
    enable_caching: bool = True
    local_runner: Literal["subprocess", "docker"] = "subprocess"
    vertex_endpoint: str | None = None
    state_prefix: str = "ct"
    data_prefix: str = ""
    data_bucket: str = ""
    ledger_uri: str = ""
    lease_seconds: int = DEFAULT_LOCAL_LEASE_SECONDS
    max_event_age: int = DEFAULT_MAX_EVENT_AGE
    kfp_namespace: str | None = None
    kfp_iap_client_id: str | None = None
    kfp_token: str | None = field(default=None, repr=False)
    allow_local_data: bool = False

    @property
    def notification_bucket(self) -> str:
        return self.data_bucket or self.bucket

    def registry_uri(self, run_id: str) -> str:
        return f"gs://{self.bucket}/{self.state_prefix}/runs/{run_id}.json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        bucket = env.get("CT_BUCKET", "")
        if not bucket:
            raise ConfigError("CT_BUCKET is not set")
        _check_bucket("CT_BUCKET", bucket)
        backend = env.get("CT_BACKEND", "vertex")
        if backend not in ("vertex", "kfp", "local"):
            raise ConfigError(f"CT_BACKEND must be vertex, kfp or local, not {backend!r}")
        runner = env.get("CT_LOCAL_RUNNER", "subprocess")
        if runner not in ("subprocess", "docker"):
            raise ConfigError(f"CT_LOCAL_RUNNER must be subprocess or docker, not {runner!r}")
        state_prefix = env.get("CT_STATE_PREFIX", "ct").strip("/")
        _check_prefix("CT_STATE_PREFIX", state_prefix)
        data_prefix = env.get("CT_DATA_PREFIX", "")
        if data_prefix:
            _check_prefix("CT_DATA_PREFIX", data_prefix.rstrip("/"))
        data_bucket = env.get("CT_DATA_BUCKET", "")
        if data_bucket:
            _check_bucket("CT_DATA_BUCKET", data_bucket)
        ledger_uri = (
            env.get("CT_LEDGER_URI") or f"gs://{bucket}/{state_prefix}/ledger/main/default.json"
        )
        try:
            objects.parse_uri(ledger_uri)
        except objects.BadUri as error:
            raise ConfigError(f"CT_LEDGER_URI: {error}") from None
        lease_text = env.get("CT_LEASE_SECONDS", str(DEFAULT_LOCAL_LEASE_SECONDS))
        if not lease_text.isdigit() or not 5 <= int(lease_text) <= 86400:
            raise ConfigError(f"CT_LEASE_SECONDS must be 5 to 86400 seconds, not {lease_text!r}")
        if env.get("CT_KFP_IAP_CLIENT_ID") and env.get("CT_KFP_TOKEN"):
            raise ConfigError(
                "set CT_KFP_IAP_CLIENT_ID (an IAP-protected endpoint) or CT_KFP_TOKEN (a bearer "
                "token), not both"
            )
        config = cls(
            bucket=bucket,
            backend=backend,  # type: ignore[arg-type]
            project=env.get("CT_PROJECT") or None,
            region=env.get("CT_REGION") or "us-central1",
            pipeline_root=env.get("CT_PIPELINE_ROOT", ""),
            data_uri=env.get("CT_DATA_URI", ""),
            service_account=env.get("CT_SERVICE_ACCOUNT") or None,
            kfp_host=env.get("CT_KFP_HOST") or None,
            kfp_experiment=env.get("CT_KFP_EXPERIMENT") or "continuous-training",
            enable_caching=env.get("CT_ENABLE_CACHING", "true").lower() not in ("0", "false", "no"),
            local_runner=runner,  # type: ignore[arg-type]
            vertex_endpoint=env.get("CT_VERTEX_ENDPOINT") or None,
            state_prefix=state_prefix,
            data_prefix=data_prefix,
            data_bucket=data_bucket,
            ledger_uri=ledger_uri,
            lease_seconds=int(lease_text),
            max_event_age=max_event_age(env),
            kfp_namespace=env.get("CT_KFP_NAMESPACE") or None,
            kfp_iap_client_id=env.get("CT_KFP_IAP_CLIENT_ID") or None,
            kfp_token=env.get("CT_KFP_TOKEN") or None,
            allow_local_data=env.get("CT_ALLOW_LOCAL_DATA", "").lower() in ("1", "true", "yes"),
        )
        if backend == "vertex" and not (config.project and config.pipeline_root):
            raise ConfigError("the vertex backend needs CT_PROJECT and CT_PIPELINE_ROOT")
        if backend == "kfp" and not config.kfp_host:
            raise ConfigError("the kfp backend needs CT_KFP_HOST")
        if backend == "local" and not config.pipeline_root:
            raise ConfigError("the local backend needs CT_PIPELINE_ROOT (a local directory)")
        if data_prefix:
            config._check_data_prefix()
        return config

    def _check_data_prefix(self) -> None:
        """Data notifications must never fire for what the function itself writes (its
        registry, the pipeline root), or each run would start another."""
        own = [(self.bucket, self.state_prefix, "CT_STATE_PREFIX")]
        if self.pipeline_root.startswith("gs://"):
            try:
                root = objects.parse_uri(self.pipeline_root.rstrip("/"))
                own.append((root.bucket, root.key, "CT_PIPELINE_ROOT"))
            except objects.BadUri as error:
                raise ConfigError(f"CT_PIPELINE_ROOT: {error}") from None
        for bucket, key, name in own:
            if bucket == self.notification_bucket and _overlaps(self.data_prefix, key):
                raise ConfigError(
                    f"CT_DATA_PREFIX {self.data_prefix!r} overlaps {name} (gs://{bucket}/{key}/): "
                    "the function's own writes would start runs"
                )


def max_event_age(environ: Mapping[str, str]) -> int:
    """``CT_MAX_EVENT_AGE`` in seconds (default one hour), or ConfigError."""
    text = environ.get("CT_MAX_EVENT_AGE", "") or str(DEFAULT_MAX_EVENT_AGE)
    if not (text.isascii() and text.isdigit() and len(text) <= 7) or not (
        1 <= int(text) <= MAX_EVENT_AGE_LIMIT
    ):
        raise ConfigError(
            f"CT_MAX_EVENT_AGE must be 1 to {MAX_EVENT_AGE_LIMIT} seconds, not {text[:40]!r}"
        )
    return int(text)


def _check_bucket(name: str, bucket: str) -> None:
    try:
        objects.parse_uri(f"gs://{bucket}/x")
    except objects.BadUri:
        raise ConfigError(f"{name} {bucket!r} is not a bucket name") from None


def _check_prefix(name: str, prefix: str) -> None:
    if not prefix:
        raise ConfigError(f"{name} must not be empty")
    try:
        objects.check_key(prefix)
    except objects.BadUri as error:
        raise ConfigError(f"{name}: {error}") from None


def _overlaps(prefix: str, area: str) -> bool:
    """Can one object name start with both ``prefix`` and the directory ``area/``?"""
    area = area.rstrip("/") + "/"
    return prefix.startswith(area) or area.startswith(prefix)


@dataclass(frozen=True)
class RunResult:
    """What became of one message."""

    run_id: str
    backend: str
    status: Literal["succeeded", "failed", "submitted", "duplicate", "ignored"]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""
    #: the Vertex job id, Kubeflow run name or local run directory of the run concerned
    job_id: str = ""
    attempt: int = 0
    request_id: str = ""
    #: for a duplicate: the registry entry's status (running, succeeded, failed, submitted)
    previous_status: str = ""
    #: why this run started when it was not a first claim (a takeover or a retry)
    note: str = ""
    data_uri: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "backend": self.backend,
            "status": self.status,
            "metrics": dict(self.metrics),
            "detail": self.detail,
            "job_id": self.job_id,
            "attempt": self.attempt,
            "request_id": self.request_id,
            "previous_status": self.previous_status,
            "note": self.note,
            "data_uri": self.data_uri,
        }


@dataclass(frozen=True)
class RunRequest:
    """A validated message, ready for a backend."""

    message: message.PublishMessage
    run_id: str
    spec_bytes: bytes
    parameter_values: Mapping[str, Any]
    labels: Mapping[str, str]
    job_id: str = ""
    attempt: int = 1

    @property
    def data_uri(self) -> str:
        return str(self.parameter_values.get("data_uri", ""))


# ---------------------------------------------------------------------------
# Validation (pure)
# ---------------------------------------------------------------------------


def job_id_for(run_id: str, attempt: int) -> str:
    """The backend's name for one attempt: the run id, then ``<run_id>-a<attempt>``."""
    return run_id if attempt <= 1 else f"{run_id}-a{attempt}"


def spec_inputs(spec_bytes: bytes, uri: str = "") -> dict[str, dict[str, Any]]:
    """The compiled spec's root ``inputDefinitions.parameters``; ``uri`` names it in errors."""
    import yaml

    what = f"the pipeline spec {uri}" if uri else "the pipeline spec"
    try:
        spec = yaml.safe_load(spec_bytes)
        parameters = spec["root"]["inputDefinitions"]["parameters"]
    except (yaml.YAMLError, KeyError, TypeError, ValueError, RecursionError) as error:
        text = _first_line(str(error))[:200]
        raise MessageError(
            f"{what} is not a compiled KFP pipeline ({type(error).__name__}: {text})"
        ) from None
    if not isinstance(parameters, dict):
        raise MessageError(f"{what} has no root input parameters")
    return parameters


def check_parameters(values: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any]]) -> None:
    for name, value in values.items():
        if name not in inputs:
            raise MessageError(
                f"parameter {name!r} is not a pipeline parameter "
                f"(known: {', '.join(sorted(inputs))})"
            )
        spec = inputs[name]
        kind = str(spec.get("parameterType", "")) if isinstance(spec, Mapping) else ""
        allowed = _SPEC_TYPES.get(kind)
        if allowed is None:
            continue  # structs and lists are not published by builds; nothing to check
        is_bool = isinstance(value, bool)
        if (is_bool and bool not in allowed) or not isinstance(value, allowed):
            raise MessageError(
                f"parameter {name!r} must be {kind.lower().replace('_', ' ')}, "
                f"not {type(value).__name__} {value!r}"[:300]
            )
    missing = sorted(
        name
        for name, spec in inputs.items()
        if name not in values
        and not (isinstance(spec, Mapping) and ("defaultValue" in spec or spec.get("isOptional")))
    )
    if missing:
        raise MessageError(f"required pipeline parameter(s) without a value: {', '.join(missing)}")


def _label(value: str) -> str:
    """A Vertex label value: lowercase letters, digits, '-' and '_', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def prepare(
    data: bytes,
    attributes: Mapping[str, str],
    config: Config,
    environ: Mapping[str, str] | None = None,
) -> RunRequest:
    """Decode and validate a run request against the configuration and the compiled spec."""
    return prepare_message(message.decode(data, attributes), config, environ)


def prepare_message(
    msg: message.PublishMessage, config: Config, environ: Mapping[str, str] | None = None
) -> RunRequest:
    """Validate a decoded message against the configuration and the compiled spec it names."""
    env = os.environ if environ is None else environ
    for name, uri in (
        ("pipeline spec", msg.pipeline_spec_uri),
        ("training source", msg.source_uri),
    ):
        bucket, _ = message.parse_gs_uri(uri)
        if bucket != config.bucket:
            raise MessageError(
                f"the {name} {uri} is outside the configured bucket gs://{config.bucket}"
            )
    data_uri = msg.data_uri or str(msg.parameters.get("data_uri", ""))  # schema 1: a parameter
    if data_uri.startswith("/"):
        if config.backend != "local":
            raise MessageError(
                f"the data {data_uri} is a local path, which only the local backend can read"
            )
        if not config.allow_local_data:
            # Decided before the disk is looked at: the answer never tells whether it exists.
            raise MessageError(
                f"the data {data_uri} is a local path, which the function reads only when the "
                "orchestrator hands it the run in process (CT_ALLOW_LOCAL_DATA)"
            )
        if not Path(data_uri).is_file():
            raise MessageError(f"the data {data_uri} does not exist")
    stored = objects.read(msg.pipeline_spec_uri, env)
    if stored is None:
        raise MessageError(f"the pipeline spec {msg.pipeline_spec_uri} does not exist")
    spec_bytes = stored.data
    inputs = spec_inputs(spec_bytes, msg.pipeline_spec_uri)
    values: dict[str, Any] = dict(msg.parameters)
    values["source_uri"] = msg.source_uri
    if msg.data_uri:
        if "data_uri" not in inputs:
            raise MessageError("the message names data, but the pipeline has no data_uri parameter")
        values["data_uri"] = msg.data_uri
    elif config.data_uri and "data_uri" in inputs:
        values.setdefault("data_uri", config.data_uri)
    check_parameters(values, inputs)
    run_id = message.run_identity(
        hashlib.sha256(spec_bytes).hexdigest(),
        msg.source_uri,
        msg.images,
        msg.parameters,
        msg.data_uri,
        msg.data_version,
    )
    return RunRequest(
        message=msg,
        run_id=run_id,
        spec_bytes=spec_bytes,
        parameter_values=values,
        labels={
            "ct-commit": _label(msg.commit),
            "ct-branch": _label(msg.branch),
            "ct-run": _label(run_id),
            "ct-reason": _label(msg.reason),
        },
    )


# ---------------------------------------------------------------------------
# Data notifications
# ---------------------------------------------------------------------------


def is_storage_notification(attributes: Mapping[str, str]) -> bool:
    return any(name in attributes for name in _NOTIFICATION_ATTRIBUTES)


def notification_request_id(bucket: str, name: str, generation: str) -> str:
    """The same object generation always gives the same request id (a redelivery)."""
    digest = hashlib.sha256(f"gs://{bucket}/{name}#{generation}".encode()).hexdigest()
    return f"gcs-{digest[:40]}"


def prepare_notification(
    data: bytes,
    attributes: Mapping[str, str],
    config: Config,
    environ: Mapping[str, str] | None = None,
) -> RunRequest | str:
    """A storage notification -> the run request of the deployed state on the new data, or
    the reason it asks for nothing (a string). MessageError/StateError when it is unusable."""
    env = os.environ if environ is None else environ
    missing = [n for n in ("eventType", "bucketId", "objectId") if not attributes.get(n)]
    if missing:
        raise MessageError(
            "a Cloud Storage notification must carry the attributes eventType, bucketId and "
            f"objectId (missing: {', '.join(missing)})"
        )
    event, bucket, name = attributes["eventType"], attributes["bucketId"], attributes["objectId"]
    where = f"gs://{bucket}/{name}"[:300]
    if not config.data_prefix:
        return f"data notifications are off (CT_DATA_PREFIX is not set): {event} {where}"
    if event != FINALIZE:
        return f"{event} {where}: only {FINALIZE} (a new object) starts a run"
    if bucket != config.notification_bucket:
        return f"{where} is not in the data bucket gs://{config.notification_bucket}"
    if not name.startswith(config.data_prefix):
        return f"{where} is outside the data prefix {config.data_prefix!r}"
    if name.endswith("/"):
        return f"{where} is a folder placeholder, not data"
    if bucket == config.bucket and name.startswith(f"{config.state_prefix}/"):
        return f"{where} is the function's own state"
    try:
        objects.check_key(name)
    except objects.BadUri as error:
        raise MessageError(f"the notification names an unusable object: {error}") from None
    generation = attributes.get("objectGeneration", "")
    if not re.fullmatch(r"[0-9]{1,20}", generation):
        raise MessageError(
            "the notification's objectGeneration must be a generation number, "
            f"not {generation[:40]!r}"
        )
    if attributes.get("payloadFormat") == "JSON_API_V1" and data:
        metadata = message.load_json(data, "the notification's object metadata")
        if not isinstance(metadata, dict) or any(
            key in metadata and str(metadata[key]) != expected
            for key, expected in (("bucket", bucket), ("name", name), ("generation", generation))
        ):
            raise MessageError(f"the notification's object metadata does not describe {where}")
    stored = objects.read(config.ledger_uri, env)
    if stored is None:
        return f"{where}: no deploy ledger at {config.ledger_uri} yet, nothing to retrain"
    state = message.decode_state(stored.data, source=config.ledger_uri)
    msg = message.request_for(
        state,
        actions=(message.ActionSummary("data", f"new data {where} (generation {generation})"),),
        data_uri=f"gs://{bucket}/{name}",
        data_version=generation,
        reason="data",
        request_id=notification_request_id(bucket, name, generation),
    )
    return prepare_message(msg, config, env)


#: A scheduled (or manual) retrain published straight to the topic, e.g. by Cloud Scheduler:
#: ``--attributes=ct-trigger=schedule`` (the body is not read).
TRIGGER_ATTRIBUTE = "ct-trigger"


def prepare_trigger(
    reason: str, config: Config, environ: Mapping[str, str] | None = None
) -> RunRequest | str:
    """Retrain the deployed state on the newest version of its data. A state that already
    trained on exactly that data is not trained again (the run identity is the same): a
    schedule retrains when the object behind the data URI changed, never twice on the same."""
    env = os.environ if environ is None else environ
    if reason not in ("schedule", "manual"):
        raise MessageError(f"attribute {TRIGGER_ATTRIBUTE!r} must be schedule or manual")
    stored = objects.read(config.ledger_uri, env)
    if stored is None:
        return f"{reason} retrain: no deploy ledger at {config.ledger_uri} yet, nothing to train"
    state = message.decode_state(stored.data, source=config.ledger_uri)
    version = state.data_version
    if state.data_uri.startswith("gs://"):
        current = objects.generation(state.data_uri, env)
        if current is None:
            raise MessageError(f"the deployed data {state.data_uri} no longer exists")
        version = str(current)
    msg = message.request_for(
        state,
        actions=(message.ActionSummary(reason, f"{reason} retrain of the deployed state"),),
        data_version=version if state.data_uri else "",
        reason="schedule" if reason == "schedule" else "manual",
        request_id=re.sub(r"[^A-Za-z0-9_.-]", "-", f"{reason}-{version or 'default'}")[:64],
    )
    return prepare_message(msg, config, env)


# ---------------------------------------------------------------------------
# The runs registry
# ---------------------------------------------------------------------------


@dataclass
class Claim:
    """A registry entry this delivery owns, and the generation it last wrote."""

    uri: str
    generation: int
    entry: RegistryEntry
    env: Mapping[str, str]
    lost: str = ""  # set when someone took the entry over meanwhile

    def write(self, entry: RegistryEntry) -> bool:
        """Replace the entry if it is still ours; False (and ``lost``) when it is not."""
        if self.lost:
            return False
        try:
            self.generation = objects.write(
                self.uri, entry.to_bytes(), self.env, if_generation=self.generation
            )
        except objects.PreconditionFailed:
            self.lost = f"{self.uri} was taken over by another delivery meanwhile"
            return False
        self.entry = entry
        return True


def claim(
    request: RunRequest,
    config: Config,
    environ: Mapping[str, str] | None = None,
    *,
    lease_seconds: float,
    clock: Callable[[], float] = time.time,
) -> Claim | RunResult:
    """Claim the request's registry entry (create-only, or compare-and-swap on the generation
    read), or return the duplicate RunResult the entry calls for."""
    env = os.environ if environ is None else environ
    uri = config.registry_uri(request.run_id)
    msg = request.message
    for _ in range(CLAIM_TRIES):
        stored = objects.read(uri, env)
        entry: RegistryEntry | None = None
        if stored is None:
            decision = Decision(True, 1)
        else:
            try:
                entry = RegistryEntry.from_bytes(stored.data)
            except MessageError as error:
                decision = Decision(
                    True, 1, f"replaced the unreadable registry entry {uri}: {error}"
                )
            else:
                decision = decide(entry, msg, clock())
        if not decision.claim and entry is not None:
            return RunResult(
                request.run_id,
                config.backend,
                "duplicate",
                metrics=dict(entry.metrics),
                detail=decision.note,
                job_id=entry.job_id,
                attempt=entry.attempt,
                request_id=msg.request_id,
                previous_status=entry.status,
                data_uri=entry.data_uri,
            )
        now = clock()
        mine = RegistryEntry(
            run_id=request.run_id,
            status="running",
            request_id=msg.request_id,
            attempt=decision.attempt,
            job_id=job_id_for(request.run_id, decision.attempt),
            commit=msg.commit,
            data_uri=request.data_uri,
            started=iso_utc(now),
            lease_expires=iso_utc(now + lease_seconds),
            host=HOST,
            pid=os.getpid(),
            detail=decision.note,
        )
        try:
            generation = objects.write(
                uri, mine.to_bytes(), env, if_generation=0 if stored is None else stored.generation
            )
        except objects.PreconditionFailed:
            continue  # someone else wrote it first: read again and decide again
        return Claim(uri, generation, mine, env)
    raise objects.PreconditionFailed(f"{uri} kept changing while this delivery tried to claim it")


class LeaseKeeper:
    """Renews a claim's lease every ``every`` seconds in a daemon thread, while in a ``with``."""

    def __init__(self, held: Claim, lease_seconds: float, every: float) -> None:
        self._claim = held
        self._lease = lease_seconds
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="ct-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self._every):
            entry = replace(self._claim.entry, lease_expires=iso_utc(time.time() + self._lease))
            try:
                if not self._claim.write(entry):
                    return
            except Exception:  # noqa: BLE001, S112 - storage unreachable for now: next time
                continue


# ---------------------------------------------------------------------------
# Effects: the three backends
# ---------------------------------------------------------------------------


def run_vertex(
    request: RunRequest, config: Config, environ: Mapping[str, str] | None = None
) -> RunResult:
    from google.api_core import exceptions
    from google.cloud import aiplatform

    kwargs: dict[str, Any] = {}
    credentials = None
    if config.vertex_endpoint:
        if config.vertex_endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            # For this job only, not aiplatform.init: aiplatform's pipeline-root ownership
            # check asks the real Resource Manager (no endpoint override) with the global
            # credentials; anonymous ones would send it there, retrying for about a minute.
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
            kwargs["api_transport"] = "rest"
        kwargs["api_endpoint"] = config.vertex_endpoint
    aiplatform.init(project=config.project, location=config.region, **kwargs)
    job_id = request.job_id or request.run_id
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "pipeline.yaml"
        template.write_bytes(request.spec_bytes)
        job = aiplatform.PipelineJob(
            display_name=f"ct-{request.message.branch}-{request.message.commit[:12]}"[:128],
            template_path=str(template),
            job_id=job_id,
            pipeline_root=config.pipeline_root,
            parameter_values=dict(request.parameter_values),
            labels=dict(request.labels),
            enable_caching=config.enable_caching,
            project=config.project,
            location=config.region,
            credentials=credentials,
        )
        try:
            job.submit(service_account=config.service_account)
        except exceptions.Conflict:  # AlreadyExists is a Conflict (409)
            return RunResult(request.run_id, "vertex", "duplicate", detail="job id already exists")
        except (exceptions.BadRequest, exceptions.NotFound) as error:  # 400, 404: permanent
            return RunResult(
                request.run_id, "vertex", "failed", detail=f"Vertex AI refused {job_id}: {error}"
            )
    return RunResult(request.run_id, "vertex", "submitted", detail=job.resource_name)


def fetch_iap_token(client_id: str) -> str:
    """A Google-signed OIDC ID token whose audience is the IAP OAuth client id, from the
    function's own identity (the metadata server; a service-account key file named by
    ``GOOGLE_APPLICATION_CREDENTIALS`` elsewhere). IAP takes it as ``Authorization: Bearer``:
    https://cloud.google.com/iap/docs/authentication-howto"""
    import google.auth.transport.requests
    import google.oauth2.id_token

    token: str = google.oauth2.id_token.fetch_id_token(  # type: ignore[no-untyped-call]
        google.auth.transport.requests.Request(), audience=client_id
    )
    return token


def kfp_client_args(
    config: Config, iap_token: Callable[[str], str] = fetch_iap_token
) -> dict[str, Any]:
    """``kfp.Client`` arguments for the configured endpoint (kfp 2.17's ``Client(host,
    client_id, namespace, ..., existing_token, ...)``).

    kfp sends ``existing_token`` as ``Authorization: Bearer`` on every call. Its own
    ``client_id`` flow is not used: it signs through the IAM API or, for a user, stores a
    refresh token under ``~/.config/kfp``; an ID token from google-auth does the same job with
    the function's identity. A namespace (multi-user Kubeflow) also spares the client its
    healthz probe, which retries 5 times 5 s apart when it fails."""
    args: dict[str, Any] = {"host": config.kfp_host}
    if config.kfp_iap_client_id:
        args["existing_token"] = iap_token(config.kfp_iap_client_id)
    elif config.kfp_token:
        args["existing_token"] = config.kfp_token
    if config.kfp_namespace:
        args["namespace"] = config.kfp_namespace
    return args


def run_kfp(
    request: RunRequest, config: Config, environ: Mapping[str, str] | None = None
) -> RunResult:
    import kfp

    name = request.job_id or request.run_id
    client = kfp.Client(**kfp_client_args(config))
    experiment = client.create_experiment(
        name=config.kfp_experiment, namespace=config.kfp_namespace
    )
    existing = client.list_runs(
        experiment_id=experiment.experiment_id,
        page_size=1,
        filter=json.dumps(
            {"predicates": [{"key": "display_name", "operation": "EQUALS",
                             "string_value": name}]}
        ),
    )  # fmt: skip
    if existing.runs:
        return RunResult(request.run_id, "kfp", "duplicate", detail=existing.runs[0].run_id)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "pipeline.yaml"
        package.write_bytes(request.spec_bytes)
        try:
            run = client.create_run_from_pipeline_package(
                str(package),
                arguments=dict(request.parameter_values),
                run_name=name,
                experiment_id=experiment.experiment_id,  # the one searched above
                pipeline_root=config.pipeline_root or None,  # None: the deployment's default
                enable_caching=config.enable_caching,
                service_account=config.service_account,
            )
        except Exception as error:
            if getattr(error, "status", None) in (400, 404, 422):  # kfp_server_api.ApiException
                return RunResult(
                    request.run_id, "kfp", "failed", detail=f"Kubeflow refused {name}: {error}"
                )
            raise
    return RunResult(request.run_id, "kfp", "submitted", detail=run.run_id)


#: The settings a local run's steps need to read what the build uploaded.
STORAGE_ENV = ("ORCHESTRATOR_LOCAL_BUCKET_ROOT", "STORAGE_EMULATOR_HOST")


def run_pipeline(
    parameters: Mapping[str, Any],
    pipeline_root: Path,
    *,
    runner: Literal["subprocess", "docker"],
    images: Mapping[str, str],
    env: Mapping[str, str],
) -> Any:
    """The repository's pipeline with kfp.local (``pipeline/local_run.py``)."""
    repo_root = str(FUNCTION_DIR.parent)
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)  # the local backend runs the repository's pipeline
    from pipeline.local_run import run_pipeline_locally

    return run_pipeline_locally(parameters, pipeline_root, runner=runner, images=images, env=env)


def run_local(
    request: RunRequest, config: Config, environ: Mapping[str, str] | None = None
) -> RunResult:
    """Run with kfp.local in ``<CT_PIPELINE_ROOT>/<job id>``; the registry admits one run."""
    env = os.environ if environ is None else environ
    outcome = run_pipeline(
        request.parameter_values,
        Path(config.pipeline_root) / (request.job_id or request.run_id),
        runner=config.local_runner,
        images=request.message.images,
        env={name: env[name] for name in STORAGE_ENV if env.get(name)},
    )
    return RunResult(
        request.run_id, "local", outcome.status, metrics=outcome.metrics, detail=outcome.error or ""
    )


BACKENDS: dict[str, Callable[[RunRequest, Config, Mapping[str, str] | None], RunResult]] = {
    "vertex": run_vertex,
    "kfp": run_kfp,
    "local": run_local,
}


def start(
    request: RunRequest, config: Config, environ: Mapping[str, str] | None = None
) -> RunResult:
    """Claim the request's run identity and run it on the configured backend, recording the
    outcome; or report the duplicate the registry calls for."""
    env = os.environ if environ is None else environ
    lease = config.lease_seconds if config.backend == "local" else SUBMIT_LEASE_SECONDS
    held = claim(request, config, env, lease_seconds=lease)
    if isinstance(held, RunResult):
        return held
    entry = held.entry
    request = replace(request, job_id=entry.job_id, attempt=entry.attempt)
    try:
        with LeaseKeeper(held, lease, every=lease / 5):
            result = BACKENDS[config.backend](request, config, env)
    except BaseException as error:
        # Not a verdict on the state: leave the entry running with an expired lease, so that
        # the next delivery takes it over (a killed process cannot get here; see decide()).
        with contextlib.suppress(Exception):
            held.write(
                replace(
                    held.entry,
                    lease_expires=iso_utc(time.time()),
                    detail=f"interrupted: {type(error).__name__}: {_first_line(str(error))}"[:500],
                )
            )
        raise
    status: RunStatus
    if result.status == "duplicate":  # the backend already had this job id
        status, detail = "submitted", f"{entry.job_id}: {result.detail}"
    elif result.status in ("succeeded", "failed", "submitted"):
        status, detail = result.status, result.detail
    else:
        raise AssertionError(f"backend {config.backend} returned {result.status!r}")
    recorded = held.write(
        replace(
            held.entry,
            status=status,
            lease_expires="",
            metrics=dict(result.metrics),
            detail=detail[:2000],
        )
    )
    return replace(
        result,
        detail=result.detail if recorded else f"{result.detail} ({held.lost})".strip(),
        job_id=entry.job_id,
        attempt=entry.attempt,
        request_id=request.message.request_id,
        previous_status="submitted" if result.status == "duplicate" else "",
        note=entry.detail,
        data_uri=request.data_uri,
    )


def handle_message(
    data: bytes,
    attributes: Mapping[str, str] | None,
    config: Config,
    environ: Mapping[str, str] | None = None,
) -> RunResult:
    """Validate one message (a run request, or a storage notification) and start its run.

    Raises MessageError or StateError when the message can never be used (acknowledge it);
    returns status ``ignored`` for a notification that asks for nothing; any other exception
    is transient (let Pub/Sub redeliver)."""
    env = os.environ if environ is None else environ
    attrs = message.check_attributes(attributes)
    if is_storage_notification(attrs):
        prepared = prepare_notification(data, attrs, config, env)
        if isinstance(prepared, str):
            return RunResult("", config.backend, "ignored", detail=prepared)
        result = start(prepared, config, env)
        if result.status in ("succeeded", "submitted", "running"):
            record_new_data(prepared, config, env)
        return result
    if TRIGGER_ATTRIBUTE in attrs:
        triggered = prepare_trigger(attrs[TRIGGER_ATTRIBUTE], config, env)
        if isinstance(triggered, str):
            return RunResult("", config.backend, "ignored", detail=triggered)
        return start(triggered, config, env)
    return start(prepare(data, attrs, config, env), config, env)


def record_new_data(request: RunRequest, config: Config, environ: Mapping[str, str]) -> None:
    """The deployed state now trains on the new data: later builds use it too. A
    compare-and-swap on the ledger record; a build that recorded meanwhile wins (its own
    run already read the newest data from the record it replaced, or will on the next one)."""
    stored = objects.read(config.ledger_uri, environ)
    if stored is None:
        return
    state = message.decode_state(stored.data, source=config.ledger_uri)
    if _is_older_generation(request.message.data_version, state.data_version) and (
        state.data_uri == request.message.data_uri
    ):
        # Notifications arrive in any order (no ordering on the trigger's subscription): an
        # object's generation number only grows ("a monotonically increasing integer that
        # updates when the data associated with an object name changes":
        # https://cloud.google.com/storage/docs/generations-preconditions), so a late one must
        # not take the ledger back. Generations of different objects are unrelated
        # (https://cloud.google.com/storage/docs/object-versioning): not compared.
        log(
            "INFO",
            f"the deploy ledger {config.ledger_uri} already has generation "
            f"{state.data_version} of {state.data_uri}; left as it is",
        )
        return
    updated = replace(
        state,
        data_uri=request.message.data_uri,
        data_version=request.message.data_version,
        run_id=request.run_id,
        updated=iso_utc(time.time()),
    )
    try:
        objects.write(
            config.ledger_uri,
            message.encode_state(updated),
            environ,
            if_generation=stored.generation,
        )
    except objects.PreconditionFailed:
        log("INFO", f"the deploy ledger {config.ledger_uri} changed meanwhile; left as it is")


def _is_older_generation(version: str, recorded: str) -> bool:
    """Two generation numbers of one object (decimal strings): is ``version`` the older?"""
    return (
        version.isascii()
        and version.isdigit()
        and recorded.isascii()
        and recorded.isdigit()
        and int(version) < int(recorded)
    )


# ---------------------------------------------------------------------------
# The Cloud Function
# ---------------------------------------------------------------------------


_LOG_LOCK = threading.Lock()


def log(severity: str, text: str, **fields: Any) -> None:
    """One JSON line: Cloud Logging reads ``severity`` and ``message``. Written whole, in one
    call under a lock: concurrent deliveries (threads) never interleave their lines."""
    line = json.dumps({"severity": severity, "message": one_line(text), **fields}) + "\n"
    with _LOG_LOCK:
        sys.stderr.write(line)
        sys.stderr.flush()


# Control characters, and lone surrogates: a JSON envelope may carry "\udcff" in an attribute,
# which json.loads makes a str no strict UTF-8 reader takes back (Cloud Logging reads the line
# as UTF-8 JSON).
# C1 controls (NEL, CSI) and U+2028/2029 too: line breaks to str.splitlines() and some
# readers (https://docs.python.org/3/library/stdtypes.html#str.splitlines).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str) -> str:
    """``text`` with the control characters a message, key or value brought in (a newline in
    a parameter name, an escape sequence) escaped as a Python string literal writes them
    (``\\n``, ``\\x1b``, ``\\udcff``): each log entry's message is one line of valid UTF-8,
    whatever it quotes."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


#: RFC 3339 as Pub/Sub writes ``publishTime`` (nanoseconds at most) and CloudEvents ``time``.
_RFC3339_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_time(value: object) -> float | None:
    """An RFC 3339 timestamp as POSIX seconds; None for anything else."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    match = _RFC3339_RE.fullmatch(value.strip())
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}{zone}")
    except ValueError:
        return None
    return moment.timestamp() + (int(fraction.ljust(9, "0")) / 1e9 if fraction else 0.0)


def published_at(envelope: object, event_time: object = None) -> float | None:
    """When the message was published: the Pub/Sub ``publishTime`` in the event's data
    (``{"message": {"publishTime": ...}}``), else the CloudEvent ``time`` (Eventarc sets it to the
    publish time too: https://cloud.google.com/eventarc/docs/cloudevents); None if neither."""
    pubsub = envelope.get("message") if isinstance(envelope, dict) else None
    published = parse_time(pubsub.get("publishTime")) if isinstance(pubsub, dict) else None
    return published if published is not None else parse_time(event_time)


def _age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def deliver(
    envelope: object,
    event_time: object = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> RunResult | None:
    """Handle one delivered event: the body of ``on_message``.

    Returns (the message is acknowledged) after one log line, unless a later delivery can do
    better: then it raises (Pub/Sub redelivers), except past the age cap (see "Retries")."""
    env = os.environ if environ is None else environ
    pubsub = envelope.get("message") if isinstance(envelope, dict) else None
    raw_id = pubsub.get("messageId", "?") if isinstance(pubsub, dict) else "?"
    message_id = one_line(raw_id[:100]) if isinstance(raw_id, str) else "?"
    try:
        if not isinstance(pubsub, dict) or not isinstance(pubsub.get("data", ""), str):
            raise MessageError("the event carries no Pub/Sub message data")
        attributes = message.check_attributes(pubsub.get("attributes"))
        if "data" not in pubsub and not is_storage_notification(attributes):
            raise MessageError("the event carries no Pub/Sub message data")
        data = message.decode_base64(pubsub.get("data", ""))
        config = Config.from_env(env)
        result = handle_message(data, attributes, config, env)
    except PERMANENT_ERRORS as error:
        # Acknowledged: redelivering a malformed message can never succeed.
        log("ERROR", f"rejected message {message_id}: {error}", message_id=message_id)
        return None
    except Exception as error:
        misconfigured = isinstance(error, ConfigError)
        reason = (
            str(error) if misconfigured else f"{type(error).__name__}: {_first_line(str(error))}"
        )
        published = published_at(envelope, event_time)
        try:
            cap = max_event_age(env)
        except ConfigError:
            cap = DEFAULT_MAX_EVENT_AGE
        age = None if published is None else clock() - published
        if age is not None and age > cap:
            # Acknowledged: retried for CT_MAX_EVENT_AGE already, and Pub/Sub would go on for
            # up to 7 days (https://cloud.google.com/functions/docs/bestpractices/retries).
            log(
                "ERROR",
                f"gave up on message {message_id}, published {_age_text(age)} ago "
                f"(CT_MAX_EVENT_AGE is {cap} s): "
                f"{'the function is misconfigured: ' if misconfigured else ''}{reason}",
                message_id=message_id,
            )
            return None
        if misconfigured:
            # Not the message's fault: keep it (Pub/Sub redelivers) until the deployment is
            # fixed, or the cap above is reached.
            log(
                "ERROR",
                f"cannot handle message {message_id}, the function is misconfigured "
                f"(it will be redelivered): {reason}",
                message_id=message_id,
            )
        else:
            log(
                "WARNING",
                f"transient failure for message {message_id}, will be redelivered: {reason}",
                message_id=message_id,
            )
        raise
    if result.status == "ignored":
        log("INFO", f"ignored message {message_id}: {result.detail}", message_id=message_id)
        return result
    text = f"message {message_id}: run {result.run_id} {result.status}"
    if result.status == "duplicate":
        text += f" ({result.detail})"
    log(
        "INFO" if result.status != "failed" else "ERROR",
        text,
        message_id=message_id,
        run=result.to_json(),
    )
    return result


@functions_framework.cloud_event
def on_message(cloud_event: Any) -> None:
    """The Cloud Function: a Pub/Sub CloudEvent (``google.cloud.pubsub.topic.v1.messagePublished``,
    data ``{"message": {...}, "subscription": ...}``)."""
    deliver(cloud_event.data, cloud_event.get("time"))
