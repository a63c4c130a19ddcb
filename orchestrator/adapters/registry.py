"""Container registries: does an image tag exist, and which digest does it name.

The Docker Registry HTTP API v2 (the OCI distribution spec), standard library only:
``HEAD /v2/<name>/manifests/<tag>`` answers 200 with the manifest's digest in the
``Docker-Content-Digest`` header, or 404 when the tag was never pushed
(https://distribution.github.io/distribution/spec/api/ "Existing Manifests"; Artifact
Registry serves the same API). A registry on localhost is spoken to over plain HTTP, any
other over HTTPS. Artifact Registry (``*-docker.pkg.dev``) and Container Registry
(``gcr.io``) get a bearer token from application default credentials when they ask for one
(401), which needs google-auth, imported only then.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import ServiceUnreachable, StepFailed

_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_TIMEOUT = 20.0
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
    for attempt in range(2):
        request = urllib.request.Request(url, method="HEAD", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
                digest = response.headers.get("Docker-Content-Digest")
                if not digest:
                    raise StepFailed(f"the registry {ref.registry} gave no digest for {image}")
                return str(digest)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401 and attempt == 0 and _is_google(ref.registry):
                headers["Authorization"] = f"Bearer {_google_token(env)}"
                continue
            raise StepFailed(
                f"the registry {ref.registry} answered {exc.code} {exc.reason} for {image}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnreachable(
                f"cannot reach the registry {ref.registry} to look up {image}: {reason}"
            ) from None
    raise StepFailed(f"the registry {ref.registry} refused the credentials for {image}")


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
