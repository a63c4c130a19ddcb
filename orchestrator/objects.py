"""Objects in a bucket, with generations: the one place that reads and writes ``gs://`` state.

Standard library only, plus google-cloud-storage imported inside the functions that need it,
so that the trigger function can carry a copy (the deploy step copies this file next to it as
``ct_objects.py``, as it does ``message.py``).

Three backends, chosen by the environment mapping passed in:

1. ``ORCHESTRATOR_LOCAL_BUCKET_ROOT=/dir``: ``gs://b/k`` is the file ``/dir/b/k``. Generations
   live in a hidden sidecar file; a compare-and-swap holds an exclusive ``flock`` on a lock
   file beside the object, so concurrent writers on one machine behave like GCS.
2. ``STORAGE_EMULATOR_HOST``: the google-cloud-storage client against that emulator, with
   anonymous credentials (fake-gcs-server enforces generation preconditions).
3. Otherwise Cloud Storage with application default credentials.

Object names must be clean relative keys: no empty, ``.`` or ``..`` segment, no leading
``/``, no backslash or NUL. Nothing a message says can then reach outside its bucket, on any
backend (``gs://b/../../etc/passwd`` is refused before any backend sees it).

A write takes ``if_generation``: ``0`` creates only (fails if the object exists), a number
replaces exactly that generation (compare-and-swap), ``None`` writes unconditionally. GCS
documents the same preconditions (``ifGenerationMatch``,
https://cloud.google.com/storage/docs/request-preconditions).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_BUCKET_ROOT_VAR = "ORCHESTRATOR_LOCAL_BUCKET_ROOT"
EMULATOR_HOST_VAR = "STORAGE_EMULATOR_HOST"

# A bucket name as Cloud Storage allows it (lowercase, digits, '-', '_', '.'; 3-222 chars).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_REQUEST_TIMEOUT = (10.0, 120.0)
_RETRY_DEADLINE = 60.0


class ObjectError(Exception):
    """Reading or writing an object failed; ``str()`` is one sentence naming the URI."""


class BadUri(ObjectError, ValueError):
    """Not a ``gs://bucket/key`` URI with a clean key."""


class NotFound(ObjectError):
    """The object (or its bucket) does not exist."""


class PreconditionFailed(ObjectError):
    """The object's generation is not the one the write expected."""


class Unreachable(ObjectError):
    """The storage service cannot be reached (transient: retry later)."""


@dataclass(frozen=True, slots=True)
class Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class Stored:
    """An object's content and generation (a number that changes with every write)."""

    data: bytes
    generation: int


def parse_uri(uri: object) -> Uri:
    """``gs://bucket/key`` -> :class:`Uri`; :class:`BadUri` for anything else, including a key
    that is not a clean relative name."""
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise BadUri(f"{uri!r} is not a gs://<bucket>/<key> URI")
    bucket, slash, key = uri[len("gs://") :].partition("/")
    if not slash or not key or not _BUCKET.fullmatch(bucket):
        raise BadUri(f"{uri!r} is not a gs://<bucket>/<key> URI")
    check_key(key, uri)
    return Uri(bucket, key)


def check_key(key: str, uri: str | None = None) -> None:
    """Refuse an object name that is not a clean relative key (see the module docstring)."""
    shown = uri if uri is not None else key
    if "\0" in key or "\\" in key or "\n" in key or "\r" in key:
        raise BadUri(f"{shown!r}: an object name must not hold NUL, backslash or line breaks")
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise BadUri(
            f"{shown!r}: an object name must be a clean relative key "
            "(no leading '/', and no empty, '.' or '..' segments)"
        )


def backend(env: Mapping[str, str]) -> str:
    if env.get(LOCAL_BUCKET_ROOT_VAR):
        return "local-dir"
    if env.get(EMULATOR_HOST_VAR):
        return "emulator"
    return "gcs"


def service_name(env: Mapping[str, str]) -> str:
    kind = backend(env)
    if kind == "local-dir":
        return f"the local bucket directory {env[LOCAL_BUCKET_ROOT_VAR]}"
    if kind == "emulator":
        return f"the Cloud Storage emulator at {emulator_url(env)}"
    return "Cloud Storage"


def local_path(uri: str | Uri, env: Mapping[str, str]) -> Path:
    """Where the local directory backend keeps ``uri``."""
    target = uri if isinstance(uri, Uri) else parse_uri(uri)
    return Path(env[LOCAL_BUCKET_ROOT_VAR], target.bucket, *target.key.split("/"))


# -- reading ---------------------------------------------------------------------------------


def read(uri: str, env: Mapping[str, str]) -> Stored | None:
    """The object's content and generation, or ``None`` when it does not exist."""
    target = parse_uri(uri)
    if backend(env) == "local-dir":
        path = local_path(target, env)
        if not path.parent.is_dir():
            return None
        with _locked(path, shared=True):  # the content and its generation, from one write
            try:
                data = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
            except IsADirectoryError:
                raise ObjectError(f"{target} is a directory in {service_name(env)}") from None
            return Stored(data, _local_generation(path))
    exceptions = _google_exceptions()
    blob = client(env).bucket(target.bucket).blob(target.key)
    try:
        data = blob.download_as_bytes(timeout=_REQUEST_TIMEOUT, retry=retry(env))
    except exceptions.NotFound:
        return None
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(f"reading {target} from {service_name(env)} failed: {_api(exc)}") from exc
    except Exception as exc:  # transport errors have many types
        raise _unreachable(exc, env) from exc
    return Stored(data, int(blob.generation or 0))


def generation(uri: str, env: Mapping[str, str]) -> int | None:
    """The object's generation (metadata only, nothing downloaded), or ``None`` if absent."""
    target = parse_uri(uri)
    if backend(env) == "local-dir":
        path = local_path(target, env)
        if not path.is_file():
            return None
        with _locked(path, shared=True):
            return _local_generation(path) if path.is_file() else None
    exceptions = _google_exceptions()
    try:
        blob = (
            client(env)
            .bucket(target.bucket)
            .get_blob(target.key, timeout=_REQUEST_TIMEOUT, retry=retry(env))
        )
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(
            f"looking up {target} in {service_name(env)} failed: {_api(exc)}"
        ) from exc
    except Exception as exc:  # transport errors have many types
        raise _unreachable(exc, env) from exc
    return int(blob.generation or 0) if blob is not None else None


def exists(uri: str, env: Mapping[str, str]) -> bool:
    target = parse_uri(uri)
    if backend(env) == "local-dir":
        return local_path(target, env).is_file()
    exceptions = _google_exceptions()
    try:
        blob = client(env).bucket(target.bucket).blob(target.key)
        return bool(blob.exists(timeout=_REQUEST_TIMEOUT, retry=retry(env)))
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(
            f"looking up {target} in {service_name(env)} failed: {_api(exc)}"
        ) from exc
    except Exception as exc:  # transport errors have many types
        raise _unreachable(exc, env) from exc


def list_keys(bucket: str, prefix: str, env: Mapping[str, str]) -> list[str]:
    """The keys in ``bucket`` that start with ``prefix``, sorted."""
    check_key(prefix.rstrip("/") or "x")
    if backend(env) == "local-dir":
        root = Path(env[LOCAL_BUCKET_ROOT_VAR], bucket)
        base = root.joinpath(*prefix.rstrip("/").split("/")) if prefix else root
        start = base if base.is_dir() else base.parent
        keys = []
        for directory, _, files in os.walk(start):
            for name in files:
                if not name.startswith("."):
                    key = Path(directory, name).relative_to(root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)
    exceptions = _google_exceptions()
    try:
        blobs = client(env).list_blobs(bucket, prefix=prefix, timeout=_REQUEST_TIMEOUT)
        return sorted(str(blob.name) for blob in blobs)
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(
            f"listing gs://{bucket}/{prefix} in {service_name(env)} failed: {_api(exc)}"
        ) from exc
    except Exception as exc:  # transport errors have many types
        raise _unreachable(exc, env) from exc


# -- writing ---------------------------------------------------------------------------------


def write(
    uri: str,
    data: bytes,
    env: Mapping[str, str],
    *,
    if_generation: int | None,
    content_type: str = "application/json",
) -> int:
    """Write the object and return its new generation. ``if_generation``: ``0`` creates only,
    a number replaces exactly that generation, ``None`` writes unconditionally. Raises
    :class:`PreconditionFailed` when the object is not as expected. The object is written
    whole or not at all."""
    target = parse_uri(uri)
    if backend(env) == "local-dir":
        return _local_write(local_path(target, env), data, if_generation, target)
    exceptions = _google_exceptions()
    blob = client(env).bucket(target.bucket).blob(target.key)
    try:
        blob.upload_from_string(
            data,
            content_type=content_type,
            if_generation_match=if_generation,
            timeout=_REQUEST_TIMEOUT,
            retry=retry(env),
        )
    except exceptions.PreconditionFailed:
        raise PreconditionFailed(f"{target} changed while it was being updated") from None
    except exceptions.NotFound:
        raise NotFound(
            f"bucket gs://{target.bucket} does not exist in {service_name(env)}"
        ) from None
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(f"writing {target} to {service_name(env)} failed: {_api(exc)}") from exc
    except Exception as exc:  # transport errors have many types
        raise _unreachable(exc, env) from exc
    return int(blob.generation or 0)


def _sidecar(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}")


def _local_generation(path: Path) -> int:
    try:
        return int(_sidecar(path, "generation").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 1  # written before generations were kept: the first


@contextlib.contextmanager
def _locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Writers hold the object's lock exclusively, readers shared (one write is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_sidecar(path, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _local_write(path: Path, data: bytes, if_generation: int | None, target: Uri) -> int:
    with _locked(path):
        current = _local_generation(path) if path.is_file() else 0
        if if_generation is not None and if_generation != current:
            raise PreconditionFailed(f"{target} changed while it was being updated")
        generation = max(time.time_ns(), current + 1)
        for file, content in ((path, data), (_sidecar(path, "generation"), b"%d" % generation)):
            import tempfile  # only a write needs it

            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".write-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
                    out.flush()
                    os.fsync(out.fileno())
                Path(tmp).replace(file)  # atomic: readers see the old object or the new one
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return generation


# -- google-cloud-storage --------------------------------------------------------------------


def _google_exceptions() -> Any:
    from google.api_core import exceptions

    return exceptions


def emulator_url(env: Mapping[str, str]) -> str:
    host = env[EMULATOR_HOST_VAR].rstrip("/")
    return host if "://" in host else f"http://{host}"


def client(env: Mapping[str, str]) -> Any:
    """A google-cloud-storage client for the backend ``env`` names (emulator or GCS)."""
    from google.cloud import storage

    if backend(env) == "emulator":
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=env.get("GOOGLE_CLOUD_PROJECT") or "local-emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": emulator_url(env)},
        )
    try:
        return storage.Client(project=env.get("GOOGLE_CLOUD_PROJECT"))
    except Exception as exc:  # google.auth raises several credential error types
        raise _unreachable(exc, env) from exc


def retry(env: Mapping[str, str]) -> Any:
    """The retry policy: none against the emulator (fail fast), bounded against GCS."""
    if backend(env) == "emulator":
        return None
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(_RETRY_DEADLINE)


def _api(exc: Any) -> str:
    text = str(getattr(exc, "message", exc)).strip()
    return f"{getattr(exc, 'code', '')} {text.splitlines()[0] if text else ''}".strip()


def _unreachable(exc: Exception, env: Mapping[str, str]) -> Unreachable:
    if type(exc).__name__ == "DefaultCredentialsError":
        return Unreachable(
            "Cloud Storage needs credentials: run `gcloud auth application-default login`, "
            f"or set {EMULATOR_HOST_VAR} for an emulator or {LOCAL_BUCKET_ROOT_VAR} for a "
            "local directory"
        )
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return Unreachable(f"cannot reach {service_name(env)}: {type(exc).__name__}: {first}")
