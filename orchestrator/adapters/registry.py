"""Container registries: does an image tag exist, and which digest does it name.

The Docker Registry HTTP API v2 (the OCI distribution spec), standard library only:
``HEAD /v2/<name>/manifests/<tag>`` answers 200 with the manifest's digest in the
``Docker-Content-Digest`` header, or 404 when the tag was never pushed
(https://distribution.github.io/distribution/spec/api/ "Existing Manifests"; Artifact
Registry serves the same API). A registry on localhost is spoken to over plain HTTP, any
other over HTTPS. Artifact Registry (``*-docker.pkg.dev``) and Container Registry
(``gcr.io``) get a bearer token from application default credentials when they ask for one
(401), which needs google-auth, imported only then.

Faults (``orchestrator.retrying``): a lookup is a read, safe to repeat. Retried with backoff,
for at most ``ORCHESTRATOR_RETRY_DEADLINE`` seconds (60, or 10 for a registry on this machine):
HTTP 408, 429, 500, 502, 503 and 504 (the list Google gives for its APIs,
https://cloud.google.com/storage/docs/retry-strategy, which Artifact Registry is one of; the
distribution spec answers a rate limit with 429 ``TOOMANYREQUESTS``), and a connection reset,
closed or timed out. A refused connection to a registry on this machine fails at once; any
other answer (403, a 404 for the repository's manifest is "no such tag") is not retried.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator import retrying
from orchestrator.errors import ServiceUnreachable, StepFailed

_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
#: Seconds one lookup waits for an answer, at most (``retrying.attempt_timeout``).
_TIMEOUT = 20.0
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str  # host[:port]
    repository: str
    tag: str

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        """``host[:port]/path/name:tag`` (the registry part is required here)."""
        host, slash, rest = image.partition("/")
        name, colon, tag = rest.rpartition(":")
        if not slash or not colon or not name or not tag or "@" in image or "/" in tag:
            raise StepFailed(f"{image!r} is not a registry/repository:tag image reference")
        return cls(host, name, tag)

    @property
    def scheme(self) -> str:
        return "http" if self.registry.split(":")[0] in _LOCAL_HOSTS else "https"

    def pinned(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}@{digest}"


def manifest_digest(image: str, env: Mapping[str, str]) -> str | None:
    """The digest the tag names (``sha256:...``), or ``None`` when the tag does not exist."""
    ref = ImageRef.parse(image)
    url = f"{ref.scheme}://{ref.registry}/v2/{ref.repository}/manifests/{ref.tag}"
    headers = {"Accept": _ACCEPT}
    local = retrying.is_loopback(ref.registry)
    where = f"the registry {ref.registry}"

    def attempt(seconds: float) -> str | None:
        request = urllib.request.Request(url, method="HEAD", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=seconds) as response:  # noqa: S310
                digest = response.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as exc:
            exc.close()  # the error answer holds the connection: release it before a retry
            raise
        if not digest:
            raise StepFailed(f"{where} gave no digest for {image}")
        return str(digest)

    def transient(exc: BaseException) -> bool:
        if isinstance(exc, urllib.error.HTTPError):
            return exc.code in _TRANSIENT_STATUS
        if local and retrying.refused(exc):
            return False  # nothing listens there: no retry makes it listen
        return isinstance(exc, (urllib.error.URLError, http.client.HTTPException, OSError))

    total = retrying.deadline(env, local=local)
    for authenticated in (False, True):
        try:
            return retrying.call(attempt, transient=transient, total=total, cap=_TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401 and not authenticated and _is_google(ref.registry):
                headers["Authorization"] = f"Bearer {_google_token(env)}"
                continue
            raise StepFailed(f"{where} answered {exc.code} {exc.reason} for {image}") from None
        except retrying.GaveUp as exc:
            raise ServiceUnreachable(
                f"{where} kept failing to look up {image}: {_reason(exc.last)} ({exc.summary})"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise ServiceUnreachable(
                f"cannot reach {where} to look up {image}: {_reason(exc)}"
            ) from None
    raise StepFailed(f"{where} refused the credentials for {image}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return retrying.first_line(getattr(exc, "reason", exc))


def _is_google(registry: str) -> bool:
    return registry.endswith("-docker.pkg.dev") or registry.endswith("gcr.io")


def _google_token(env: Mapping[str, str]) -> str:
    try:
        import google.auth
        import google.auth.transport.requests

        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except Exception as exc:  # noqa: BLE001 - google.auth raises several credential error types
        raise ServiceUnreachable(
            "looking up images in Artifact Registry needs credentials: run "
            f"`gcloud auth application-default login` ({type(exc).__name__})"
        ) from None
    return str(credentials.token)
