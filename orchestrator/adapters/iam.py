"""Does a resource exist, and which of some permissions on it does the caller hold?

The REST calls ``validate --cloud`` makes, one owner for all of them. Each API's
``testIamPermissions`` answers for the caller (the credentials in use), needs no permission
itself, and is documented at:

- Cloud Storage: ``GET /storage/v1/b/BUCKET/iam/testPermissions?permissions=...``
  (https://cloud.google.com/storage/docs/json_api/v1/buckets/testIamPermissions)
- Pub/Sub: ``POST /v1/projects/P/topics/T:testIamPermissions``; a topic that does not exist
  answers an empty set, not NOT_FOUND
  (https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.topics/testIamPermissions)
- Artifact Registry: ``POST /v1/projects/P/locations/L/repositories/R:testIamPermissions``
  (https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories/testIamPermissions)
- IAM: ``POST /v1/projects/-/serviceAccounts/EMAIL:testIamPermissions``
  (https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/testIamPermissions)
- Resource Manager: ``POST /v1/projects/P:testIamPermissions``
  (https://cloud.google.com/resource-manager/reference/rest/v1/projects/testIamPermissions)

Existence is a plain ``GET`` of the resource (404: it does not exist; 403: the caller may not
read it, so existence stays unknown and the permission test decides).

Endpoints: ``STORAGE_EMULATOR_HOST`` and ``PUBSUB_EMULATOR_HOST`` as the client libraries read
them, and gcloud's ``CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>`` for the others (a local stand-in in
tests). An ``http://`` endpoint gets no credentials; the real ones use application default
credentials (google-auth, imported only here and only then).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.errors import InputError, ServiceUnreachable

_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_TIMEOUT = 20.0

Api = Literal["storage", "pubsub", "artifactregistry", "iam", "cloudresourcemanager"]

#: what each API is called in messages
SERVICE_NAMES: dict[Api, str] = {
    "storage": "Cloud Storage",
    "pubsub": "Pub/Sub",
    "artifactregistry": "Artifact Registry",
    "iam": "IAM",
    "cloudresourcemanager": "Resource Manager",
}


@dataclass(frozen=True, slots=True)
class Endpoints:
    storage: str = "https://storage.googleapis.com"
    pubsub: str = "https://pubsub.googleapis.com"
    artifactregistry: str = "https://artifactregistry.googleapis.com"
    iam: str = "https://iam.googleapis.com"
    cloudresourcemanager: str = "https://cloudresourcemanager.googleapis.com"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Endpoints:
        def override(api: str, default: str) -> str:
            variable = f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}"
            value = env.get(variable, "")
            if value and not value.startswith(("https://", "http://")):
                raise InputError(f"{variable}={value!r}: not an http:// or https:// URL")
            return (value or default).rstrip("/")

        def emulator(var: str, default: str) -> str:
            host = env.get(var, "")
            if not host:
                return default
            return (host if "://" in host else f"http://{host}").rstrip("/")

        base = cls()
        return cls(
            storage=emulator("STORAGE_EMULATOR_HOST", base.storage),
            pubsub=emulator("PUBSUB_EMULATOR_HOST", base.pubsub),
            artifactregistry=override("artifactregistry", base.artifactregistry),
            iam=override("iam", base.iam),
            cloudresourcemanager=override("cloudresourcemanager", base.cloudresourcemanager),
        )

    def of(self, api: Api) -> str:
        url: str = getattr(self, api)
        return url


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """One resource: how to read it, and how to ask which of ``permissions`` the caller
    holds on it."""

    api: Api
    read: Request
    test: Request
    permissions: tuple[str, ...]


def _json_body(permissions: Sequence[str]) -> bytes:
    return json.dumps({"permissions": list(permissions)}).encode()


def _path(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def bucket_probe(endpoints: Endpoints, bucket: str, permissions: Sequence[str]) -> Probe:
    base = f"{endpoints.storage}/storage/v1/b/{_path(bucket)}"
    query = urllib.parse.urlencode([("permissions", p) for p in permissions])
    return Probe(
        "storage",
        Request("GET", base),
        Request("GET", f"{base}/iam/testPermissions?{query}"),
        tuple(permissions),
    )


def _resource_probe(
    api: Api, endpoints: Endpoints, resource: str, permissions: Sequence[str]
) -> Probe:
    """The ``v1/{resource}`` APIs: GET reads it, ``:testIamPermissions`` tests it."""
    base = f"{endpoints.of(api)}/v1/{resource}"
    return Probe(
        api,
        Request("GET", base),
        Request("POST", f"{base}:testIamPermissions", _json_body(permissions)),
        tuple(permissions),
    )


def topic_probe(endpoints: Endpoints, topic: str, permissions: Sequence[str]) -> Probe:
    """``topic`` is ``projects/P/topics/T``."""
    return _resource_probe("pubsub", endpoints, topic, permissions)


def repository_probe(endpoints: Endpoints, repository: str, permissions: Sequence[str]) -> Probe:
    """``repository`` is ``projects/P/locations/L/repositories/R``."""
    return _resource_probe("artifactregistry", endpoints, repository, permissions)


def service_account_probe(endpoints: Endpoints, email: str, permissions: Sequence[str]) -> Probe:
    """``projects/-/serviceAccounts/EMAIL``: the ``-`` lets IAM find the account's project."""
    return _resource_probe("iam", endpoints, f"projects/-/serviceAccounts/{email}", permissions)


def project_probe(endpoints: Endpoints, project: str, permissions: Sequence[str]) -> Probe:
    return _resource_probe("cloudresourcemanager", endpoints, f"projects/{project}", permissions)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a probe found: ``exists`` is ``None`` when the caller may not read the resource;
    ``held`` is ``None`` when the permission test was refused (``refused`` says why)."""

    exists: bool | None
    held: frozenset[str] | None
    refused: str = ""

    def missing(self, probe: Probe) -> tuple[str, ...]:
        if self.held is None:
            return probe.permissions
        return tuple(p for p in probe.permissions if p not in self.held)


#: one HTTP exchange: (method, url, body, headers) -> (status, parsed JSON or {})
Transport = Callable[[str, str, bytes | None, Mapping[str, str]], tuple[int, dict[str, Any]]]


class Access:
    """Runs probes over ``transport`` (urllib by default), with credentials for https."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        transport: Transport | None = None,
        token: Callable[[], str] | None = None,
    ) -> None:
        self.endpoints = Endpoints.from_env(env)
        self._transport = transport or urllib_transport
        self._token_source = token or application_default_token
        self._token: str | None = None

    def _headers(self, url: str, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if url.startswith("https://"):
            if self._token is None:
                self._token = self._token_source()
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _call(self, probe: Probe, request: Request) -> tuple[int, dict[str, Any]]:
        where = f"{SERVICE_NAMES[probe.api]} ({self.endpoints.of(probe.api)})"
        try:
            status, data = self._transport(
                request.method, request.url, request.body, self._headers(request.url, request.body)
            )
        except OSError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ServiceUnreachable(f"{where} cannot be reached: {reason}") from None
        if status == 401 or status >= 500:
            raise ServiceUnreachable(f"{where} answered {status}: {_message(data)}")
        return status, data

    def exists(self, probe: Probe) -> bool | None:
        """Whether the resource exists: ``None`` when the caller may not read it."""
        status, _ = self._call(probe, probe.read)
        if status == 404:
            return False
        return True if status < 300 else None

    def probe(self, probe: Probe) -> Answer:
        exists = self.exists(probe)
        if exists is False:
            return Answer(exists=False, held=frozenset())
        status, data = self._call(probe, probe.test)
        if status == 404:
            return Answer(exists=False, held=frozenset())
        if status >= 300:
            return Answer(exists=exists, held=None, refused=f"{status}: {_message(data)}")
        held = data.get("permissions", [])
        if not isinstance(held, list):
            held = []
        return Answer(exists=exists, held=frozenset(p for p in held if isinstance(p, str)))


def _message(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return " ".join(error["message"].split())[:300]
    return "no message"


def urllib_transport(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str]
) -> tuple[int, dict[str, Any]]:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an HTTP endpoint: {url}")
    # the scheme is checked above: S310 guards against file: and custom schemes
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
            return response.status, _parse(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _parse(error.read())


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def application_default_token() -> str:
    """An access token from application default credentials (gcloud auth
    application-default login, a service account's metadata server, or federation)."""
    try:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests
    except ImportError as exc:  # pragma: no cover - google-auth comes with the cloud extra
        raise ServiceUnreachable(
            "validate --cloud needs google-auth: pip install 'ct-orchestrator[cloud]'"
        ) from exc
    try:
        credentials, _ = google.auth.default(scopes=[_SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except google.auth.exceptions.GoogleAuthError as exc:
        raise ServiceUnreachable(
            f"no Google Cloud credentials: {exc} (gcloud auth application-default login)"
        ) from None
    return str(credentials.token)
