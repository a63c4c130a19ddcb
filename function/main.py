"""Trigger function: receive the build's Pub/Sub message and launch one pipeline run.

Deployed as a Cloud Function (gen2) with a Pub/Sub trigger; entry point ``on_message``
(a ``functions_framework.cloud_event`` handler). The orchestrator's local executor calls
``handle_message`` directly, in process, for the embedded local default; load this file by path
with ``importlib.util.spec_from_file_location`` and put the module in ``sys.modules`` before
executing it (its dataclasses need that).

Configuration (environment variables):

===================== =====================================================================
``CT_BUCKET``          the only bucket a pipeline spec / training source may come from
``CT_BACKEND``         ``vertex`` | ``kfp`` | ``local`` (default ``vertex``)
``CT_PROJECT``         Google Cloud project (vertex)
``CT_REGION``          Vertex AI region (default ``us-central1``)
``CT_PIPELINE_ROOT``   pipeline root: ``gs://...`` (vertex; kfp, optional), a local
                       directory (local)
``CT_DATA_URI``        the ``data_uri`` pipeline parameter (default: the bundled digits)
``CT_SERVICE_ACCOUNT`` service account the run executes as (vertex, kfp)
``CT_KFP_HOST``        Kubeflow Pipelines endpoint, e.g. ``http://ml-pipeline-ui:80`` (kfp)
``CT_KFP_EXPERIMENT``  Kubeflow experiment name (default ``continuous-training``)
``CT_ENABLE_CACHING``  ``true`` | ``false`` (default ``true``)
``CT_LOCAL_RUNNER``    ``subprocess`` (no Docker) | ``docker`` (the built images) (local)
``CT_VERTEX_ENDPOINT`` Vertex API endpoint override, e.g. a private endpoint; an
                       ``http://`` endpoint uses REST with anonymous credentials (tests)
===================== =====================================================================

Storage: ``ORCHESTRATOR_LOCAL_BUCKET_ROOT=/dir`` reads ``gs://b/k`` from ``/dir/b/k``;
``STORAGE_EMULATOR_HOST`` selects a storage emulator; otherwise Google Cloud Storage.

Outcomes: a malformed message (bad base64 or JSON, unknown schema, bad sha, a spec outside
the bucket, unknown or mistyped parameters, a missing field or spec) is logged with its reason
and acknowledged without a run. A transient error (the backend or storage unreachable) is
raised so that Pub/Sub redelivers. A redelivered message starts no second run: the run id is
derived from the commit and the spec's hash (the Vertex job id; a ledger entry under the
pipeline root for the local backend; the run name for Kubeflow).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import functions_framework

try:  # inside the repository (and the orchestrator's in-process call)
    from orchestrator import message
except ImportError:  # deployed: the deploy step copies orchestrator/message.py here
    import ct_message as message  # type: ignore[import-not-found, no-redef]

MessageError = message.MessageError
Backend = Literal["vertex", "kfp", "local"]
FUNCTION_DIR = Path(__file__).resolve().parent

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        bucket = env.get("CT_BUCKET", "")
        if not bucket:
            raise ConfigError("CT_BUCKET is not set")
        backend = env.get("CT_BACKEND", "vertex")
        if backend not in ("vertex", "kfp", "local"):
            raise ConfigError(f"CT_BACKEND must be vertex, kfp or local, not {backend!r}")
        runner = env.get("CT_LOCAL_RUNNER", "subprocess")
        if runner not in ("subprocess", "docker"):
            raise ConfigError(f"CT_LOCAL_RUNNER must be subprocess or docker, not {runner!r}")
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
        )
        if backend == "vertex" and not (config.project and config.pipeline_root):
            raise ConfigError("the vertex backend needs CT_PROJECT and CT_PIPELINE_ROOT")
        if backend == "kfp" and not config.kfp_host:
            raise ConfigError("the kfp backend needs CT_KFP_HOST")
        if backend == "local" and not config.pipeline_root:
            raise ConfigError("the local backend needs CT_PIPELINE_ROOT (a local directory)")
        return config


@dataclass(frozen=True)
class RunResult:
    """What became of one message."""

    run_id: str
    backend: str
    status: Literal["succeeded", "failed", "submitted", "duplicate"]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "backend": self.backend,
            "status": self.status,
            "metrics": dict(self.metrics),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class RunRequest:
    """A validated message, ready for a backend."""

    message: message.PublishMessage
    run_id: str
    spec_bytes: bytes
    parameter_values: Mapping[str, Any]
    labels: Mapping[str, str]


# ---------------------------------------------------------------------------
# Validation (pure)
# ---------------------------------------------------------------------------


def run_id_for(commit: str, spec_bytes: bytes) -> str:
    """Same commit and spec, same id: a redelivered message maps to the same run."""
    return f"ct-{commit[:12]}-{hashlib.sha256(spec_bytes).hexdigest()[:12]}"


def spec_inputs(spec_bytes: bytes) -> dict[str, dict[str, Any]]:
    """The compiled spec's root ``inputDefinitions.parameters``."""
    import yaml

    try:
        spec = yaml.safe_load(spec_bytes)
        parameters = spec["root"]["inputDefinitions"]["parameters"]
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise MessageError(f"the pipeline spec is not a compiled KFP pipeline ({error})") from None
    if not isinstance(parameters, dict):
        raise MessageError("the pipeline spec has no root input parameters")
    return parameters


def check_parameters(values: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any]]) -> None:
    for name, value in values.items():
        if name not in inputs:
            raise MessageError(
                f"parameter {name!r} is not a pipeline parameter "
                f"(known: {', '.join(sorted(inputs))})"
            )
        kind = str(inputs[name].get("parameterType", ""))
        allowed = _SPEC_TYPES.get(kind)
        if allowed is None:
            continue  # structs and lists are not published by builds; nothing to check
        is_bool = isinstance(value, bool)
        if (is_bool and bool not in allowed) or not isinstance(value, allowed):
            raise MessageError(
                f"parameter {name!r} must be {kind.lower().replace('_', ' ')}, "
                f"not {type(value).__name__} {value!r}"
            )
    missing = sorted(
        name
        for name, spec in inputs.items()
        if name not in values and "defaultValue" not in spec and not spec.get("isOptional")
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
    """Decode and validate a message against the configuration and the compiled spec."""
    msg = message.decode(data, attributes)
    for name, uri in (
        ("pipeline spec", msg.pipeline_spec_uri),
        ("training source", msg.source_uri),
    ):
        bucket, _ = message.parse_gs_uri(uri)
        if bucket != config.bucket:
            raise MessageError(
                f"the {name} {uri} is outside the configured bucket gs://{config.bucket}"
            )
    try:
        spec_bytes = read_bytes(msg.pipeline_spec_uri, environ)
    except FileNotFoundError:
        raise MessageError(f"the pipeline spec {msg.pipeline_spec_uri} does not exist") from None
    inputs = spec_inputs(spec_bytes)
    values: dict[str, Any] = dict(msg.parameters)
    values["source_uri"] = msg.source_uri
    if config.data_uri and "data_uri" in inputs:
        values.setdefault("data_uri", config.data_uri)
    check_parameters(values, inputs)
    return RunRequest(
        message=msg,
        run_id=run_id_for(msg.commit, spec_bytes),
        spec_bytes=spec_bytes,
        parameter_values=values,
        labels={"ct-commit": _label(msg.commit), "ct-branch": _label(msg.branch)},
    )


# ---------------------------------------------------------------------------
# Effects: storage and the three backends
# ---------------------------------------------------------------------------


def read_bytes(uri: str, environ: Mapping[str, str] | None = None) -> bytes:
    """Read ``gs://bucket/key`` (see the module docstring for local and emulator modes)."""
    env = os.environ if environ is None else environ
    bucket, key = message.parse_gs_uri(uri)
    if env.get("ORCHESTRATOR_LOCAL_BUCKET_ROOT"):
        return (Path(env["ORCHESTRATOR_LOCAL_BUCKET_ROOT"]) / bucket / key).read_bytes()
    from google.api_core.exceptions import NotFound
    from google.cloud import storage

    if env.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="local", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    try:
        data: bytes = client.bucket(bucket).blob(key).download_as_bytes()
    except NotFound:
        raise FileNotFoundError(uri) from None
    return data


def run_vertex(
    request: RunRequest, config: Config, environ: Mapping[str, str] | None = None
) -> RunResult:
    from google.api_core.exceptions import Conflict  # AlreadyExists is a Conflict (409)
    from google.cloud import aiplatform

    kwargs: dict[str, Any] = {}
    credentials = None
    if config.vertex_endpoint:
        if config.vertex_endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            # For this job only, not aiplatform.init: aiplatform's pipeline-root ownership
            # check asks the real Resource Manager (no endpoint override) with the global
            # credentials; anonymous ones would send it there, retrying for about a minute.
            credentials = AnonymousCredentials()
            kwargs["api_transport"] = "rest"
        kwargs["api_endpoint"] = config.vertex_endpoint
    aiplatform.init(project=config.project, location=config.region, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "pipeline.yaml"
        template.write_bytes(request.spec_bytes)
        job = aiplatform.PipelineJob(
            display_name=f"ct-{request.message.branch}-{request.message.commit[:12]}"[:128],
            template_path=str(template),
            job_id=request.run_id,
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
        except Conflict:
            return RunResult(request.run_id, "vertex", "duplicate", detail="job id already exists")
    return RunResult(request.run_id, "vertex", "submitted", detail=job.resource_name)


def run_kfp(
    request: RunRequest, config: Config, environ: Mapping[str, str] | None = None
) -> RunResult:
    import kfp

    client = kfp.Client(host=config.kfp_host)
    experiment = client.create_experiment(name=config.kfp_experiment)
    existing = client.list_runs(
        experiment_id=experiment.experiment_id,
        page_size=1,
        filter=json.dumps(
            {"predicates": [{"key": "display_name", "operation": "EQUALS",
                             "string_value": request.run_id}]}
        ),
    )  # fmt: skip
    if existing.runs:
        return RunResult(request.run_id, "kfp", "duplicate", detail=existing.runs[0].run_id)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "pipeline.yaml"
        package.write_bytes(request.spec_bytes)
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=dict(request.parameter_values),
            run_name=request.run_id,
            experiment_id=experiment.experiment_id,  # the one searched above, not a new lookup
            pipeline_root=config.pipeline_root or None,  # None: the deployment's default root
            enable_caching=config.enable_caching,
            service_account=config.service_account,
        )
    return RunResult(request.run_id, "kfp", "submitted", detail=run.run_id)


#: The settings a local run's steps need to read what the build uploaded.
STORAGE_ENV = ("ORCHESTRATOR_LOCAL_BUCKET_ROOT", "STORAGE_EMULATOR_HOST")


def run_local(
    request: RunRequest, config: Config, environ: Mapping[str, str] | None = None
) -> RunResult:
    """Run with kfp.local; a ledger entry created exclusively makes redeliveries no-ops."""
    root = Path(config.pipeline_root)
    ledger = root / ".ct-ledger"
    ledger.mkdir(parents=True, exist_ok=True)
    entry = ledger / f"{request.run_id}.json"
    try:
        with open(entry, "x") as f:
            json.dump({"commit": request.message.commit, "status": "running"}, f)
    except FileExistsError:
        # The earlier run's metrics, so a redelivery (or a repeated local run) reports them;
        # none while that run is still going.
        previous = json.loads(entry.read_text() or "{}")
        return RunResult(
            request.run_id,
            "local",
            "duplicate",
            metrics=previous.get("metrics") or {},
            detail=f"already {previous.get('status', 'running')}",
        )
    env = os.environ if environ is None else environ
    repo_root = str(FUNCTION_DIR.parent)
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)  # the local backend runs the repository's pipeline
    try:
        from pipeline.local_run import run_pipeline_locally

        outcome = run_pipeline_locally(
            request.parameter_values,
            root / request.run_id,
            runner=config.local_runner,
            images=request.message.images,
            env={name: env[name] for name in STORAGE_ENV if env.get(name)},
        )
    except BaseException:
        entry.unlink()  # not a verdict on the message: let a redelivery try again
        raise
    verdict = {
        "commit": request.message.commit,
        "status": outcome.status,
        "metrics": dict(outcome.metrics),
    }
    partial = entry.with_name(f".{entry.name}.{os.getpid()}")
    partial.write_text(json.dumps(verdict))
    partial.replace(entry)  # atomic: a concurrent redelivery never reads half an entry
    return RunResult(
        request.run_id, "local", outcome.status, metrics=outcome.metrics, detail=outcome.error or ""
    )


BACKENDS = {"vertex": run_vertex, "kfp": run_kfp, "local": run_local}


def handle_message(
    data: bytes,
    attributes: Mapping[str, str],
    config: Config,
    environ: Mapping[str, str] | None = None,
) -> RunResult:
    """Validate one message and launch its run. Raises MessageError for a malformed message;
    any other exception is transient (the caller should let Pub/Sub redeliver)."""
    request = prepare(data, attributes, config, environ)
    return BACKENDS[config.backend](request, config, environ)


# ---------------------------------------------------------------------------
# The Cloud Function
# ---------------------------------------------------------------------------


def log(severity: str, text: str, **fields: Any) -> None:
    """One JSON line: Cloud Logging reads ``severity`` and ``message``."""
    print(
        json.dumps({"severity": severity, "message": text, **fields}), file=sys.stderr, flush=True
    )


@functions_framework.cloud_event
def on_message(cloud_event: Any) -> None:
    envelope = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    pubsub = envelope.get("message")
    message_id = pubsub.get("messageId", "?") if isinstance(pubsub, dict) else "?"
    try:
        if not isinstance(pubsub, dict) or not isinstance(pubsub.get("data"), str):
            raise MessageError("the event carries no Pub/Sub message data")
        data = message.decode_base64(pubsub["data"])
        attributes = pubsub.get("attributes") or {}
        result = handle_message(data, attributes, Config.from_env())
    except MessageError as error:
        # Acknowledged: redelivering a malformed message can never succeed.
        log("ERROR", f"rejected message {message_id}: {error}", message_id=message_id)
        return
    except Exception as error:
        log("WARNING", f"transient failure for message {message_id}, will be redelivered: {error}")
        raise
    log(
        "INFO" if result.status != "failed" else "ERROR",
        f"message {message_id}: run {result.run_id} {result.status}",
        message_id=message_id,
        run=result.to_json(),
    )
