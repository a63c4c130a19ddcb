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
credentials (a local test server, or a plaintext proxy).

Faults (``orchestrator.retrying``): every call has an explicit timeout and no retry of the
client's own; ``retrying.call`` retries the codes the generated client retries for ``GetBuild``
and ``ListBuilds`` (``DEADLINE_EXCEEDED`` and ``UNAVAILABLE``:
``google/cloud/devtools/cloudbuild_v1/services/cloud_build/transports/base.py``,
``_prep_wrapped_messages``), with backoff, for at most ``ORCHESTRATOR_RETRY_DEADLINE`` seconds
(60 against Cloud Build, 10 against an endpoint the environment names); a refused connection to
an endpoint on this machine fails at once. A service that keeps failing is a
``ServiceUnreachable`` naming it.

``CreateBuild`` is not idempotent (the generated client gives it no retry at all): a request
whose answer was lost may have started a build. So every build carries a tag unique to this
submission (``ct-request-<hex>``), and an attempt after a failed one first lists the builds
with that tag (``ListBuilds`` with ``filter='tags="..."'``: the query syntax of "Filtering build
results using queries", https://cloud.google.com/build/docs/view-build-results) and follows the
build it finds instead of creating a second.

google.cloud and grpc are imported inside the functions, so the planning path never pays for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator import retrying
from orchestrator.errors import InputError, OrchestratorError, ServiceUnreachable, StepFailed

if TYPE_CHECKING:
    from google.cloud.devtools import cloudbuild_v1

ENDPOINT_VAR = "ORCHESTRATOR_CLOUDBUILD_ENDPOINT"

FINAL_STATUSES = frozenset(
    {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}
)

#: The tag that finds a build again after its CreateBuild answer was lost. Tags must match
#: ``^[\w][\w.-]{0,127}$`` (``Build.tags`` in the API reference).
REQUEST_TAG_PREFIX = "ct-request-"

_CALL_TIMEOUT = 60.0
# Ctrl-C was pressed: cancelling must not keep the user waiting for long.
_CANCEL_TIMEOUT = 20.0
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
    calls = _Calls(where, endpoint, retrying.deadline(env, local=endpoint is not None))
    client = _client(endpoint, where)
    if wait_timeout is None:
        build_seconds = build.timeout.total_seconds() if "timeout" in build else 0.0
        wait_timeout = (build_seconds or _DEFAULT_BUILD_TIMEOUT) + _WAIT_MARGIN

    try:
        record = _record(calls.run("create the build", _creating(client, project, parent, build)))
        if not record.build_id:
            raise StepFailed(f"{where} accepted the build but returned no build id.")
        try:
            if on_submitted:
                on_submitted(record)
            if on_status:
                on_status(record)
            return _follow(client, parent, project, record, calls, on_status, poll_interval,
                           wait_timeout)  # fmt: skip
        except KeyboardInterrupt:
            raise _cancel(client, parent, project, record, where) from None
    finally:
        client.transport.close()


def _creating(
    client: Any, project: str, parent: str, build: cloudbuild_v1.Build
) -> Callable[[float], Any]:
    """One attempt at creating ``build`` (tagged with a tag unique to this submission), for
    ``retrying.call``: after a failed attempt, the build that attempt may have started is
    looked up by its tag and returned instead of creating another (see the module docstring)."""
    from google.cloud.devtools import cloudbuild_v1

    tag = f"{REQUEST_TAG_PREFIX}{uuid.uuid4().hex}"
    build.tags.append(tag)
    request = cloudbuild_v1.ListBuildsRequest(
        parent=parent, project_id=project, filter=f'tags="{tag}"', page_size=1
    )
    tried = False

    def attempt(seconds: float) -> Any:
        nonlocal tried
        if tried:
            found = client.list_builds(request=request, retry=None, timeout=seconds)
            for existing in found.builds:  # the first page: one build carries this tag, or none
                return existing
        tried = True
        # retry=None: retrying.call is the retry, and this attempt is safe to repeat (above)
        operation = client.create_build(
            project_id=project, parent=parent, build=build, retry=None, timeout=seconds
        )
        metadata = operation.metadata
        return metadata.build if metadata is not None else cloudbuild_v1.Build()

    return attempt


class _Calls:
    """Calls to one Cloud Build endpoint through ``retrying.call``, their errors in one line."""

    def __init__(self, where: str, endpoint: str | None, total: float) -> None:
        self.where = where
        self.local = endpoint is not None and retrying.is_loopback(endpoint)
        self.total = total

    def transient(self, exc: BaseException) -> bool:
        from google.api_core import exceptions as gexc

        # The codes the generated client retries for GetBuild and ListBuilds (module docstring)
        retried = (gexc.ServiceUnavailable, gexc.DeadlineExceeded)
        return isinstance(exc, retried) and not (self.local and retrying.refused(exc))

    def run(self, doing: str, attempt: Callable[[float], Any]) -> Any:
        """``attempt(timeout)`` with retries; ``doing`` says what for in the error."""
        from google.api_core import exceptions as gexc

        try:
            return retrying.call(
                attempt, transient=self.transient, total=self.total, cap=_CALL_TIMEOUT
            )
        except retrying.GaveUp as exc:
            raise ServiceUnreachable(
                f"{self.where} kept failing to {doing}: {_first_line(exc.last)} ({exc.summary})"
            ) from exc
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded) as exc:  # refused: nothing there
            raise ServiceUnreachable(f"Cannot reach {self.where}: {_first_line(exc)}") from exc
        except gexc.InvalidArgument as exc:
            raise InputError(f"{self.where} rejected the build: {_first_line(exc)}") from exc
        except gexc.GoogleAPICallError as exc:
            raise StepFailed(f"{self.where} refused to {doing}: {_first_line(exc)}") from exc


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
    calls: _Calls,
    on_status: Callable[[BuildRecord], None] | None,
    poll_interval: float,
    wait_timeout: float,
) -> BuildRecord:
    deadline = time.monotonic() + wait_timeout
    name = f"{parent}/builds/{record.build_id}"

    def poll(seconds: float) -> Any:
        return client.get_build(
            name=name, project_id=project, id=record.build_id, retry=None, timeout=seconds
        )

    while not record.finished:
        if time.monotonic() > deadline:
            raise StepFailed(
                f"Build {record.build_id} did not finish within {wait_timeout:.0f}s "
                f"(last status {record.status}); it may still be running: {record.log_url}"
            )
        time.sleep(poll_interval)
        try:
            current = calls.run(f"report on build {record.build_id}", poll)
        except ServiceUnreachable as exc:
            raise ServiceUnreachable(f"{exc} (the build may still run: {record.log_url})") from exc
        latest = _record(current)
        if latest != record and on_status:
            on_status(latest)
        record = latest
    return record


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


_first_line = retrying.first_line
