"""Cloud Build: turn a build config into a ``Build``, submit it, and follow it to the end.

A build config is a plain dict in Cloud Build's YAML/JSON shape, as ``gcloud builds submit
--config`` reads it (camelCase keys such as ``waitFor``; snake_case is accepted as well)::

    {"steps": [{"id": "test", "name": "python:3.11", "entrypoint": "python",
                "args": ["-m", "pytest"], "waitFor": ["-"]}],
     "options": {"logging": "CLOUD_LOGGING_ONLY"}, "timeout": "1200s",
     "tags": ["commit-abc123"], "substitutions": {"_BASE_SHA": "..."}}

``build_from_dict`` is pure and rejects unknown fields. ``submit_build`` uses the real
``google-cloud-build`` client with the regional parent ``projects/P/locations/R``, polls
``GetBuild`` until the build finishes, and returns a frozen ``BuildRecord``; a failed build is a
record with ``succeeded == False``, not an exception, so the caller can still show its id and
log URL. A ``KeyboardInterrupt`` (Ctrl-C) while the build is followed cancels it
(``CancelBuild``) and raises ``Cancelled`` (exit 130), whose message says so.

Endpoint: real Cloud Build with application default credentials, unless the environment maps
``ORCHESTRATOR_CLOUDBUILD_ENDPOINT=host:port``, which selects an insecure gRPC channel with no
credentials (a local test server, or a plaintext proxy). Every call has an explicit timeout and
no client-side retry, so an unreachable endpoint fails in seconds, never after minutes.

google.cloud and grpc are imported inside the functions, so the planning path never pays for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.errors import InputError, OrchestratorError, ServiceUnreachable, StepFailed

if TYPE_CHECKING:
    from google.cloud.devtools import cloudbuild_v1

ENDPOINT_VAR = "ORCHESTRATOR_CLOUDBUILD_ENDPOINT"

FINAL_STATUSES = frozenset(
    {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}
)

_CALL_TIMEOUT = 60.0
# Ctrl-C was pressed: cancelling must not keep the user waiting for long.
_CANCEL_TIMEOUT = 20.0
# Polling tolerates this many failed GetBuild calls in a row (a network blip) before giving up.
_MAX_POLL_ERRORS = 5
# Added to the build's own timeout before we stop waiting for it.
_WAIT_MARGIN = 600.0
_DEFAULT_BUILD_TIMEOUT = 600.0  # Cloud Build's default when the config sets none


class Cancelled(OrchestratorError):
    """Ctrl-C while a build was followed: the build was cancelled (or could not be).

    Exit 130, as for any interrupt; the message is the one line the user sees."""

    exit_code = 130


@dataclass(frozen=True)
class StepStatus:
    """One build step as Cloud Build last reported it. ``seconds`` is None until it ran."""

    id: str
    name: str
    status: str
    seconds: float | None


@dataclass(frozen=True)
class BuildRecord:
    """A build as Cloud Build last reported it. ``status`` is a ``Build.Status`` name."""

    build_id: str
    status: str
    log_url: str
    steps: tuple[StepStatus, ...]
    status_detail: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


def build_from_dict(config: Mapping[str, Any]) -> cloudbuild_v1.Build:
    """Parse a build config into ``cloudbuild_v1.Build``; any unknown field is an ``InputError``.

    Values are checked as the API checks them: enum names (``machineType``), durations
    (``"1200s"``), and the type of every field.
    """
    from google.cloud.devtools import cloudbuild_v1
    from google.protobuf import json_format

    try:
        text = json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise InputError(f"The Cloud Build config is not JSON-serializable: {exc}") from exc
    try:
        build: cloudbuild_v1.Build = cloudbuild_v1.Build.from_json(
            text, ignore_unknown_fields=False
        )
    except json_format.ParseError as exc:
        raise InputError(f"The Cloud Build config is invalid: {_first_line(exc)}") from exc
    return build


def submit_build(
    project: str,
    region: str,
    config: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    on_submitted: Callable[[BuildRecord], None] | None = None,
    on_status: Callable[[BuildRecord], None] | None = None,
    poll_interval: float = 5.0,
    wait_timeout: float | None = None,
) -> BuildRecord:
    """Submit ``config`` to Cloud Build in ``projects/{project}/locations/{region}`` and wait.

    ``on_submitted`` gets the record as soon as the build exists (its id and log URL);
    ``on_status`` gets it on every change of build or step status. Polls every
    ``poll_interval`` seconds for at most ``wait_timeout`` seconds (default: the build's own
    timeout plus ten minutes). Returns the final record, whatever the status.

    Raises ``InputError`` for a config the API rejects, ``ServiceUnreachable`` (naming the
    endpoint) when Cloud Build cannot be reached, ``StepFailed`` if the build does not
    finish in time or the API refuses the request, and ``Cancelled`` on Ctrl-C once the
    build exists (after cancelling it).
    """
    build = build_from_dict(config)
    parent = f"projects/{project}/locations/{region}"
    endpoint = env.get(ENDPOINT_VAR) or None
    where = f"the Cloud Build API at {endpoint} ({ENDPOINT_VAR})" if endpoint else "Cloud Build"
    client = _client(endpoint, where)
    if wait_timeout is None:
        build_seconds = build.timeout.total_seconds() if "timeout" in build else 0.0
        wait_timeout = (build_seconds or _DEFAULT_BUILD_TIMEOUT) + _WAIT_MARGIN

    try:
        operation = _call(
            where,
            lambda: client.create_build(
                project_id=project,
                parent=parent,
                build=build,
                retry=None,  # CreateBuild is not idempotent: a retry could start two builds
                timeout=_CALL_TIMEOUT,
            ),
        )
        metadata = operation.metadata
        if metadata is None or not metadata.build.id:
            raise StepFailed(f"{where} accepted the build but returned no build id.")
        record = _record(metadata.build)
        try:
            if on_submitted:
                on_submitted(record)
            if on_status:
                on_status(record)
            return _follow(
                client, parent, project, record, where, on_status, poll_interval, wait_timeout
            )
        except KeyboardInterrupt:
            raise _cancel(client, parent, project, record, where) from None
    finally:
        client.transport.close()


def _cancel(client: Any, parent: str, project: str, record: BuildRecord, where: str) -> Cancelled:
    """Cancel the build we were following (Ctrl-C): what to tell the user, and exit 130.

    ``CancelBuild`` takes the project and build id, and for a build outside ``global`` the
    regional name ``projects/P/locations/L/builds/ID``, from which the client also sets the
    request's ``location`` routing header: the legacy form "only cancels builds in the global
    region" (https://cloud.google.com/build/docs/api/reference/rest/v1/projects.builds/cancel,
    .../projects.locations.builds/cancel). A build that already finished cannot be cancelled
    (an HTTP 400: https://github.com/knative/build/issues/54); then the message says so.
    """
    from google.api_core import exceptions as gexc
    from google.cloud.devtools import cloudbuild_v1

    request = cloudbuild_v1.CancelBuildRequest(
        name=f"{parent}/builds/{record.build_id}", project_id=project, id=record.build_id
    )
    try:
        client.cancel_build(request=request, retry=None, timeout=_CANCEL_TIMEOUT)
    except gexc.GoogleAPICallError as exc:
        return Cancelled(
            f"interrupted; Cloud Build build {record.build_id} could not be cancelled "
            f"({where}: {_first_line(exc)}); see {record.log_url}"
        )
    return Cancelled(f"interrupted: cancelled Cloud Build build {record.build_id}")


def _follow(
    client: Any,
    parent: str,
    project: str,
    record: BuildRecord,
    where: str,
    on_status: Callable[[BuildRecord], None] | None,
    poll_interval: float,
    wait_timeout: float,
) -> BuildRecord:
    from google.api_core import exceptions as gexc

    deadline = time.monotonic() + wait_timeout
    name = f"{parent}/builds/{record.build_id}"
    errors = 0
    while not record.finished:
        if time.monotonic() > deadline:
            raise StepFailed(
                f"Build {record.build_id} did not finish within {wait_timeout:.0f}s "
                f"(last status {record.status}); it may still be running: {record.log_url}"
            )
        time.sleep(poll_interval)
        try:
            current = client.get_build(
                name=name, project_id=project, id=record.build_id, retry=None, timeout=_CALL_TIMEOUT
            )
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError) as exc:
            errors += 1
            if errors >= _MAX_POLL_ERRORS:
                raise ServiceUnreachable(
                    f"Lost contact with {where} while following build {record.build_id} "
                    f"({errors} failed polls): {_first_line(exc)}"
                ) from exc
            continue
        except gexc.GoogleAPICallError as exc:
            raise StepFailed(
                f"Following build {record.build_id} on {where} failed: {_first_line(exc)}"
            ) from exc
        errors = 0
        latest = _record(current)
        if latest != record and on_status:
            on_status(latest)
        record = latest
    return record


def _call(where: str, fn: Callable[[], Any]) -> Any:
    from google.api_core import exceptions as gexc

    try:
        return fn()
    except (gexc.ServiceUnavailable, gexc.DeadlineExceeded) as exc:
        raise ServiceUnreachable(f"Cannot reach {where}: {_first_line(exc)}") from exc
    except gexc.InvalidArgument as exc:
        raise InputError(f"{where} rejected the build: {_first_line(exc)}") from exc
    except gexc.GoogleAPICallError as exc:
        raise StepFailed(f"{where} refused the build: {_first_line(exc)}") from exc


def _client(endpoint: str | None, where: str) -> Any:
    from google.cloud.devtools import cloudbuild_v1

    if endpoint:
        import grpc
        from google.cloud.devtools.cloudbuild_v1.services.cloud_build.transports import (
            CloudBuildGrpcTransport,
        )

        # A channel we made carries no credentials: the transport then asks for none.
        channel = grpc.insecure_channel(endpoint)
        return cloudbuild_v1.CloudBuildClient(transport=CloudBuildGrpcTransport(channel=channel))
    try:
        return cloudbuild_v1.CloudBuildClient()
    except Exception as exc:  # google.auth raises several credential error types
        from google.auth import exceptions as auth_exc

        if isinstance(exc, auth_exc.DefaultCredentialsError):
            raise ServiceUnreachable(
                "Cloud Build needs credentials: run `gcloud auth application-default login` "
                f"(or set {ENDPOINT_VAR} for a local endpoint)."
            ) from exc
        raise ServiceUnreachable(f"Cannot reach {where}: {_first_line(exc)}") from exc


def _record(build: Any) -> BuildRecord:
    from google.cloud.devtools import cloudbuild_v1

    pb = cloudbuild_v1.Build.pb(build)
    steps = tuple(
        StepStatus(
            id=step.id,
            name=step.name,
            status=cloudbuild_v1.Build.Status(step.status).name,
            seconds=_seconds(step.timing) if step.HasField("timing") else None,
        )
        for step in pb.steps
    )
    return BuildRecord(
        build_id=pb.id,
        status=cloudbuild_v1.Build.Status(pb.status).name,
        log_url=pb.log_url,
        steps=steps,
        status_detail=pb.status_detail,
    )


def _seconds(span: Any) -> float | None:
    if not (span.HasField("start_time") and span.HasField("end_time")):
        return None
    delta = span.end_time.ToDatetime() - span.start_time.ToDatetime()
    return float(delta.total_seconds())


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
