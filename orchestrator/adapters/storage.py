"""Cloud Storage: immutable uploads to ``gs://bucket/key`` URIs, downloads, and source tarballs.

The backend is chosen from the environment mapping passed in (never from ``os.environ``
directly), checked in this order:

1. ``ORCHESTRATOR_LOCAL_BUCKET_ROOT=/dir``: ``gs://b/k`` is the local file ``/dir/b/k``.
   This is the embedded local default: no cloud account, no emulator.
2. ``STORAGE_EMULATOR_HOST=http://host:port``: google-cloud-storage against that emulator
   (for example fake-gcs-server) with anonymous credentials.
3. Otherwise real Cloud Storage with application default credentials.

Uploads are immutable: an object is only ever created, never overwritten
(``if_generation_match=0`` on GCS, a link that never replaces on the local backend).
Re-uploading identical content is a success (a re-run of the same build); different content is
an ``ObjectConflict``. An upload is a complete object or absent, whenever the process dies:
GCS makes an object visible only once its upload is complete, and the local backend links a
fully written file into place (``objects.create_file``).

Transient faults (a reset connection, a timeout, 429 and 5xx answers) are retried with backoff
within ``ORCHESTRATOR_RETRY_DEADLINE`` (``objects.retry``; ``retrying`` has the rules). An
upload is create-only, so repeating one whose answer was lost fails its precondition, and the
content is then compared, as for a re-run.

google.cloud is imported inside the functions that need it, so the planning path never pays
for it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator import objects
from orchestrator.errors import InputError, OrchestratorError, ServiceUnreachable, StepFailed

if TYPE_CHECKING:
    from google.cloud.storage import Client as StorageClient

LOCAL_BUCKET_ROOT_VAR = "ORCHESTRATOR_LOCAL_BUCKET_ROOT"
EMULATOR_HOST_VAR = "STORAGE_EMULATOR_HOST"

Backend = Literal["local-dir", "emulator", "gcs"]

DEFAULT_TARBALL_EXCLUDES = frozenset({"__pycache__", ".git", ".pytest_cache", ".mypy_cache"})


class ObjectConflict(StepFailed):
    """The object already exists with different content; uploads never overwrite."""


class ObjectNotFound(StepFailed):
    """The object (or its bucket) does not exist."""


@dataclass(frozen=True)
class GcsUri:
    """A parsed ``gs://bucket/key`` URI."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class UploadResult:
    """What an upload left in the bucket.

    ``created`` is False when an identical object was already there (an idempotent re-run).
    ``md5`` is the hex MD5 of the content, which is what the caller uploaded.
    """

    uri: str
    size: int
    md5: str
    created: bool


@dataclass(frozen=True)
class SourceTarball:
    """A deterministic ``.tar.gz`` of a directory and the SHA-256 of its bytes."""

    data: bytes
    sha256: str
    files: int


def parse_gcs_uri(uri: str) -> GcsUri:
    """Split ``gs://bucket/key`` into its parts; raise ``InputError`` for anything else."""
    prefix = "gs://"
    if not uri.startswith(prefix):
        raise InputError(f"{uri!r} is not a gs://bucket/key URI.")
    bucket, sep, key = uri[len(prefix) :].partition("/")
    if not bucket or not sep or not key:
        raise InputError(f"{uri!r} is not a gs://bucket/key URI (bucket and key are both needed).")
    return GcsUri(bucket, key)


def describe_location(uri: str, env: Mapping[str, str], *, cwd: Path | None = None) -> str:
    """Where the object at ``uri`` really is, for messages to the user.

    In a local directory bucket that is a file: its path (relative to ``cwd``, by default the
    current directory, when it is inside it), followed by the URI the artifact is known by.
    Otherwise the URI itself.
    """
    if backend_for(env) != "local-dir":
        return uri
    target = parse_gcs_uri(uri)
    return _local_description(_local_path(env[LOCAL_BUCKET_ROOT_VAR], target), target, cwd)


def backend_for(env: Mapping[str, str]) -> Backend:
    """Which backend ``upload``/``download`` use for this environment."""
    if env.get(LOCAL_BUCKET_ROOT_VAR):
        return "local-dir"
    if env.get(EMULATOR_HOST_VAR):
        return "emulator"
    return "gcs"


def upload_bytes(
    uri: str,
    data: bytes,
    *,
    env: Mapping[str, str],
    content_type: str = "application/octet-stream",
) -> UploadResult:
    """Create the object at ``uri`` with ``data``, immutably.

    Raises ``ObjectConflict`` if the object exists with different content,
    ``ServiceUnreachable`` if the storage service cannot be reached, ``StepFailed`` for other
    service errors (missing bucket, permission denied) and ``InputError`` for a bad URI.
    """
    target = parse_gcs_uri(uri)
    md5 = hashlib.md5(data, usedforsecurity=False)
    backend = backend_for(env)
    if backend == "local-dir":
        with objects.on_disk("writing", target, env):  # an OSError names the object
            created = _local_create(_local_path(env[LOCAL_BUCKET_ROOT_VAR], target), data, target)
    else:
        created = _gcs_create(target, data, md5.digest(), content_type, env)
    return UploadResult(uri=str(target), size=len(data), md5=md5.hexdigest(), created=created)


def upload_file(
    uri: str,
    path: Path,
    *,
    env: Mapping[str, str],
    content_type: str = "application/octet-stream",
) -> UploadResult:
    """``upload_bytes`` with the content of the file at ``path``."""
    return upload_bytes(uri, path.read_bytes(), env=env, content_type=content_type)


def download_bytes(uri: str, *, env: Mapping[str, str]) -> bytes:
    """Read the object at ``uri``. Raises ``ObjectNotFound`` when it does not exist."""
    target = parse_gcs_uri(uri)
    if backend_for(env) == "local-dir":
        path = _local_path(env[LOCAL_BUCKET_ROOT_VAR], target)
        with objects.on_disk("reading", target, env):  # an OSError names the object
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise ObjectNotFound(
                    f"{target} does not exist in the local bucket (no file "
                    f"{_shown_path(path, None)})."
                ) from None

    from google.api_core import exceptions as gexc

    client = _client(env)
    where = _service_name(env)
    try:
        blob = client.bucket(target.bucket).blob(target.key)
        data: bytes = blob.download_as_bytes(timeout=_timeout(env), retry=_retry(env))
    except gexc.NotFound:
        raise ObjectNotFound(f"{target} does not exist in {where}.") from None
    except gexc.GoogleAPICallError as exc:
        raise StepFailed(f"Reading {target} from {where} failed: {_api_message(exc)}") from exc
    except OrchestratorError:
        raise
    except Exception as exc:  # transport errors have many types; see _unreachable
        raise _unreachable(exc, env, f"reading {target}") from exc
    return data


def object_exists(uri: str, *, env: Mapping[str, str]) -> bool:
    """Whether the object at ``uri`` exists (a metadata request; nothing is downloaded)."""
    target = parse_gcs_uri(uri)
    if backend_for(env) == "local-dir":
        with objects.on_disk("looking up", target, env):
            return _local_path(env[LOCAL_BUCKET_ROOT_VAR], target).is_file()

    from google.api_core import exceptions as gexc

    client = _client(env)
    try:
        blob = client.bucket(target.bucket).blob(target.key)
        return bool(blob.exists(timeout=_timeout(env), retry=_retry(env)))
    except gexc.GoogleAPICallError as exc:
        where = _service_name(env)
        raise StepFailed(f"Looking up {target} in {where} failed: {_api_message(exc)}") from exc
    except OrchestratorError:
        raise
    except Exception as exc:  # transport errors have many types; see _unreachable
        raise _unreachable(exc, env, f"looking up {target}") from exc


def build_source_tarball(
    source_dir: Path, *, exclude_names: frozenset[str] = DEFAULT_TARBALL_EXCLUDES
) -> SourceTarball:
    """Pack ``source_dir`` into a gzip tarball whose bytes depend only on the tree's content.

    Entries are sorted, paths are relative to ``source_dir``, every timestamp is 0, owners are
    uid/gid 0 with no user or group names, modes are reduced to 0644/0755, and the gzip header
    carries no name and mtime 0. Symbolic links are stored as links. Any path component named in
    ``exclude_names`` is skipped (caches that differ between identical checkouts).
    """
    if not source_dir.is_dir():
        raise InputError(f"Source directory {source_dir} does not exist.")
    raw = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in _sorted_tree(source_dir, "", exclude_names):
            info = tar.gettarinfo(str(path), arcname)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                info.mode = 0o755 if info.mode & 0o111 else 0o644
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
                count += 1
            elif info.isdir():
                info.mode = 0o755
                tar.addfile(info)
            elif info.issym():
                info.mode = 0o777
                tar.addfile(info)
            else:
                raise InputError(f"{path} is not a file, directory or symbolic link.")
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    data = out.getvalue()
    return SourceTarball(data=data, sha256=hashlib.sha256(data).hexdigest(), files=count)


def _sorted_tree(
    directory: Path, prefix: str, exclude_names: frozenset[str]
) -> list[tuple[Path, str]]:
    entries: list[tuple[Path, str]] = []
    for name in sorted(entry.name for entry in directory.iterdir()):
        if name in exclude_names:
            continue
        path = directory / name
        arcname = f"{prefix}{name}"
        entries.append((path, arcname))
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):  # lstat: a symlink to a directory is stored, not followed
            entries.extend(_sorted_tree(path, f"{arcname}/", exclude_names))
    return entries


# --- local directory backend -------------------------------------------------------------


def _local_path(root: str, target: GcsUri) -> Path:
    parts = [target.bucket, *target.key.split("/")]
    if any(part in ("", ".", "..") for part in parts):
        raise InputError(
            f"{target} cannot be stored in a local bucket directory: "
            "empty, '.' and '..' path segments are not allowed."
        )
    return Path(root, *parts)


def _local_description(path: Path, target: GcsUri, cwd: Path | None = None) -> str:
    return f"{_shown_path(path, cwd)} ({target} in the local bucket)"


def _shown_path(path: Path, cwd: Path | None) -> str:
    """``path`` relative to ``cwd`` (default: the current directory) when inside it."""
    here = (cwd or Path.cwd()).resolve()
    absolute = path.resolve()
    return str(absolute.relative_to(here)) if absolute.is_relative_to(here) else str(absolute)


def _local_create(path: Path, data: bytes, target: GcsUri) -> bool:
    # Created whole or not at all, never replacing what is there (like if_generation_match=0).
    if objects.create_file(path, data):
        return True
    if path.read_bytes() == data:
        return False
    raise ObjectConflict(_conflict_message(_local_description(path, target)))


# --- google-cloud-storage backends -------------------------------------------------------


def _gcs_create(
    target: GcsUri, data: bytes, md5: bytes, content_type: str, env: Mapping[str, str]
) -> bool:
    from google.api_core import exceptions as gexc

    client = _client(env)
    where = _service_name(env)
    blob = client.bucket(target.bucket).blob(target.key)
    try:
        blob.upload_from_string(
            data,
            content_type=content_type,
            if_generation_match=0,
            checksum="md5",
            timeout=_timeout(env),
            retry=_retry(env),
        )
        return True
    except gexc.PreconditionFailed:
        pass  # it exists: compare below
    except gexc.NotFound:
        raise ObjectNotFound(f"Bucket gs://{target.bucket} does not exist in {where}.") from None
    except gexc.GoogleAPICallError as exc:
        raise StepFailed(f"Uploading {target} to {where} failed: {_api_message(exc)}") from exc
    except OrchestratorError:
        raise
    except Exception as exc:  # transport errors have many types; see _unreachable
        raise _unreachable(exc, env, f"uploading {target}") from exc

    try:
        same = _same_content(client, target, data, md5, env)
    except gexc.GoogleAPICallError as exc:
        raise StepFailed(f"Reading {target} back from {where} failed: {_api_message(exc)}") from exc
    except OrchestratorError:
        raise
    except Exception as exc:  # transport errors have many types; see _unreachable
        raise _unreachable(exc, env, f"reading {target} back") from exc
    if same:
        return False
    raise ObjectConflict(_conflict_message(str(target)))


def _same_content(
    client: StorageClient, target: GcsUri, data: bytes, md5: bytes, env: Mapping[str, str]
) -> bool:
    blob = client.bucket(target.bucket).get_blob(
        target.key, timeout=_timeout(env), retry=_retry(env)
    )
    if blob is None:  # deleted between the failed precondition and now
        raise ObjectConflict(f"{target} changed while it was being uploaded; run again.")
    if blob.size is not None and blob.size != len(data):
        return False
    if blob.md5_hash:  # absent for composite objects
        return bool(base64.b64decode(blob.md5_hash) == md5)
    if blob.crc32c:
        import google_crc32c

        crc = google_crc32c.Checksum(data).digest()  # type: ignore[no-untyped-call]
        return bool(base64.b64decode(blob.crc32c) == crc)
    existing: bytes = blob.download_as_bytes(timeout=_timeout(env), retry=_retry(env))
    return existing == data


def _service_name(env: Mapping[str, str]) -> str:
    if backend_for(env) == "emulator":
        return f"the Cloud Storage emulator at {objects.emulator_url(env)} ({EMULATOR_HOST_VAR})"
    return "Cloud Storage"


def _client(env: Mapping[str, str]) -> StorageClient:
    try:
        made: StorageClient = objects.client(env)
    except objects.Unreachable as exc:
        raise ServiceUnreachable(str(exc)) from exc
    return made


def _retry(env: Mapping[str, str]) -> Any:
    return objects.retry(env)


def _timeout(env: Mapping[str, str]) -> tuple[float, float]:
    return objects.timeout(env)


def _unreachable(exc: Exception, env: Mapping[str, str], doing: str) -> ServiceUnreachable:
    """The service could not be reached, or kept failing until the retry deadline: one
    sentence naming it (the bucket layer's wording, shared with the function)."""
    return ServiceUnreachable(str(objects.unreachable(exc, env, doing, where=_service_name(env))))


def _api_message(exc: Any) -> str:
    return f"{exc.code} {_first_line(exc.message)}"


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""


def _conflict_message(where: str) -> str:
    return (
        f"{where} already exists with different content; uploads are immutable, "
        "so write to a new key instead of overwriting."
    )
