"""Objects in a bucket, with generations: the one place that reads and writes ``gs://`` state.

Standard library only, plus google-cloud-storage imported inside the functions that need it,
so that the trigger function can carry a copy (the deploy step copies this file next to it as
``ct_objects.py``, as it does ``message.py`` and ``retrying.py``).

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

Faults (``retrying``): every request to the emulator or to GCS is retried on the transient
faults google-cloud-storage itself names (``google.cloud.storage.retry._should_retry``:
connection errors, timeouts, 408, 429, 500, 502, 503, 504), with backoff, for at most
``ORCHESTRATOR_RETRY_DEADLINE`` seconds (60 against GCS, 10 against an emulator); a refused
connection to an emulator on this machine fails at once. Repeating is safe: reads; create-only
and compare-and-swap writes, whose precondition makes a repeat of an attempt that did land fail
instead of writing twice (GCS calls these "conditionally idempotent",
https://cloud.google.com/storage/docs/retry-strategy#idempotency); and unconditional writes,
which write the same bytes again.

Nothing is ever half written. On GCS an object appears whole when its upload finishes. In the
directory backend an object is written to a temporary file that is then renamed over it (or
linked, when it is created), so a reader, or a process killed at any moment (SIGKILL
included), sees the old object or the new one; its generation is written first, so a kill
between the two leaves the old content under a new generation, which is what a rewrite of
the same bytes would leave. Temporary files are hidden (a leading dot, never listed) and
carry their writer's process id; a later write in the same directory removes those whose
writer is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

try:  # inside the repository
    from orchestrator import retrying
except ImportError:  # deployed next to the function
    import ct_retrying as retrying  # type: ignore[import-not-found, no-redef]

LOCAL_BUCKET_ROOT_VAR = "ORCHESTRATOR_LOCAL_BUCKET_ROOT"
EMULATOR_HOST_VAR = "STORAGE_EMULATOR_HOST"

# A bucket name as Cloud Storage allows it (lowercase, digits, '-', '_', '.'; 3-222 chars).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Connecting and waiting for an answer, per attempt, at most (retrying.attempt_timeout).
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 120.0
# Temporary files of the directory backend: ".<kind>-<pid>-<random>" beside the object.
_TEMP = re.compile(r"\.(?:write|upload)-(\d+)-")


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


class Uri(NamedTuple):
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.key}"


class Stored(NamedTuple):
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


@contextlib.contextmanager
def on_disk(what: str, target: object, env: Mapping[str, str]) -> Iterator[None]:
    """The directory backend's OSErrors as errors naming the object: a key whose segment is
    longer than the file system takes (ENAMETOOLONG; Cloud Storage takes names of "1-1024
    bytes when UTF-8 encoded", https://cloud.google.com/storage/docs/objects#naming) is a
    :class:`BadUri`; anything else (a file where a folder of the key should be, a full disk)
    an :class:`ObjectError`. Never a bare OSError naming only a path on disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise BadUri(
                f"{target}: the object name is too long for {service_name(env)} (each "
                "'/'-separated part of it must fit in a file name there)"
            ) from None
        detail = exc.strerror or type(exc).__name__
        if exc.filename:
            detail += f": {exc.filename}"
        raise ObjectError(f"{what} {target} in {service_name(env)} failed: {detail}") from exc


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
        with on_disk("reading", target, env):
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
        data = blob.download_as_bytes(timeout=timeout(env), retry=retry(env))
    except exceptions.NotFound:
        return None
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(f"reading {target} from {service_name(env)} failed: {_api(exc)}") from exc
    except Exception as exc:  # transport errors have many types
        raise unreachable(exc, env, f"reading {target}") from exc
    return Stored(data, int(blob.generation or 0))


def generation(uri: str, env: Mapping[str, str]) -> int | None:
    """The object's generation (metadata only, nothing downloaded), or ``None`` if absent."""
    target = parse_uri(uri)
    if backend(env) == "local-dir":
        path = local_path(target, env)
        with on_disk("looking up", target, env):
            if not path.is_file():
                return None
            with _locked(path, shared=True):
                return _local_generation(path) if path.is_file() else None
    exceptions = _google_exceptions()
    try:
        blob = (
            client(env)
            .bucket(target.bucket)
            .get_blob(target.key, timeout=timeout(env), retry=retry(env))
        )
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(
            f"looking up {target} in {service_name(env)} failed: {_api(exc)}"
        ) from exc
    except Exception as exc:  # transport errors have many types
        raise unreachable(exc, env, f"looking up {target}") from exc
    return int(blob.generation or 0) if blob is not None else None


def exists(uri: str, env: Mapping[str, str]) -> bool:
    target = parse_uri(uri)
    if backend(env) == "local-dir":
        with on_disk("looking up", target, env):
            return local_path(target, env).is_file()
    exceptions = _google_exceptions()
    try:
        blob = client(env).bucket(target.bucket).blob(target.key)
        return bool(blob.exists(timeout=timeout(env), retry=retry(env)))
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(
            f"looking up {target} in {service_name(env)} failed: {_api(exc)}"
        ) from exc
    except Exception as exc:  # transport errors have many types
        raise unreachable(exc, env, f"looking up {target}") from exc


def list_keys(bucket: str, prefix: str, env: Mapping[str, str]) -> list[str]:
    """The keys in ``bucket`` that start with ``prefix``, sorted."""
    check_key(prefix.rstrip("/") or "x")
    if backend(env) == "local-dir":
        root = Path(env[LOCAL_BUCKET_ROOT_VAR], bucket)
        base = root.joinpath(*prefix.rstrip("/").split("/")) if prefix else root
        keys = []
        with on_disk("listing", f"gs://{bucket}/{prefix}", env):
            start = base if base.is_dir() else base.parent
            for directory, _, files in os.walk(start):
                for name in files:
                    if not name.startswith("."):
                        key = Path(directory, name).relative_to(root).as_posix()
                        if key.startswith(prefix):
                            keys.append(key)
        return sorted(keys)
    exceptions = _google_exceptions()
    try:
        blobs = client(env).list_blobs(
            bucket, prefix=prefix, timeout=timeout(env), retry=retry(env)
        )
        return sorted(str(blob.name) for blob in blobs)
    except exceptions.GoogleAPICallError as exc:
        raise ObjectError(
            f"listing gs://{bucket}/{prefix} in {service_name(env)} failed: {_api(exc)}"
        ) from exc
    except Exception as exc:  # transport errors have many types
        raise unreachable(exc, env, f"listing gs://{bucket}/{prefix}") from exc


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
        with on_disk("writing", target, env):
            return _local_write(local_path(target, env), data, if_generation, target)
    exceptions = _google_exceptions()
    blob = client(env).bucket(target.bucket).blob(target.key)
    try:
        blob.upload_from_string(
            data,
            content_type=content_type,
            if_generation_match=if_generation,
            timeout=timeout(env),
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
        raise unreachable(exc, env, f"writing {target}") from exc
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
        # The generation first: a kill before the content is renamed into place leaves the old
        # content under a new generation (as a rewrite of the same bytes would), never new
        # content under the old one, which a compare-and-swap that read the old content could
        # then overwrite without having seen it.
        _replace(_sidecar(path, "generation"), b"%d" % generation)
        _replace(path, data)
        sweep(path.parent)
        return generation


def create_file(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data``, whole, unless it exists (``False``; never replaced).

    The content goes to an unnamed file (``O_TMPFILE``) that is linked into place once
    written and synced: a process killed at any moment leaves the object complete or absent,
    and nothing else behind. Where ``O_TMPFILE`` is missing, a hidden temporary file instead
    (see :func:`sweep`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except (AttributeError, OSError):  # not Linux, or a file system without it
        return _create_named(path, data)
    directory = -1
    try:
        _write_all(fd, data)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            # linkat(AT_FDCWD, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW): open(2) on
            # O_TMPFILE. A dir fd makes os.link call linkat; without one it calls link(2),
            # which does not follow the /proc link (EXDEV).
            os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=directory, follow_symlinks=True)
        except FileExistsError:
            return False
        except OSError:  # no /proc, or it cannot be followed here
            return _create_named(path, data)
        os.fsync(directory)
    finally:
        os.close(fd)
        if directory >= 0:
            os.close(directory)
    return True


def _create_named(path: Path, data: bytes) -> bool:
    tmp = _temp_file(path.parent, "upload", data)
    try:
        os.link(tmp, path)  # never replaces: two writers cannot both create it
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _sync_directory(path.parent)
    return True


def _replace(path: Path, data: bytes) -> None:
    tmp = _temp_file(path.parent, "write", data)
    try:
        tmp.replace(path)  # atomic: readers see the old file or the new one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _temp_file(directory: Path, kind: str, data: bytes) -> Path:
    """A hidden file in ``directory`` holding ``data``, synced, named after this process."""
    import secrets  # only a write needs it

    while True:
        tmp = directory / f".{kind}-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        break
    try:
        _write_all(fd, data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _sync_directory(directory: Path) -> None:
    """Make a rename or link in ``directory`` survive a crash of the machine too."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def sweep(directory: Path) -> None:
    """Remove the temporary files in ``directory`` whose writer is gone (killed mid-write).

    The directory backend serves one machine, so a writer's process id tells whether it can
    still finish: a file of a live process, this one included, is left alone."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        found = _TEMP.match(entry.name)
        if found and not _alive(int(found.group(1))):
            with contextlib.suppress(OSError):
                entry.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: it exists
    try:  # a zombie has exited; only its parent has not reaped it yet
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


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
        raise unreachable(exc, env) from exc


def retry(env: Mapping[str, str]) -> Any:
    """The retry policy for one call (see the module docstring): google-cloud-storage's own
    test of what is transient, our backoff and deadline, and no retry of a refused connection
    to an emulator on this machine."""
    from google.api_core.retry import Retry
    from google.cloud.storage import retry as storage_retry

    # The library's predicate: the exception types and status codes it retries itself
    # (google/cloud/storage/retry.py, _RETRYABLE_TYPES and _RETRYABLE_STATUS_CODES).
    transient = storage_retry._should_retry
    if _local_emulator(env):

        def predicate(exc: Exception) -> bool:
            return bool(transient(exc)) and not retrying.refused(exc)

    else:

        def predicate(exc: Exception) -> bool:
            return bool(transient(exc))

    return Retry(
        predicate=predicate,
        initial=retrying.INITIAL_DELAY,
        maximum=retrying.MAX_DELAY,
        multiplier=retrying.MULTIPLIER,
        timeout=_deadline(env),
    )


def timeout(env: Mapping[str, str]) -> tuple[float, float]:
    """(connect, read) seconds for one attempt: never more than half the deadline."""
    attempt = retrying.attempt_timeout(_deadline(env), _READ_TIMEOUT)
    return min(_CONNECT_TIMEOUT, attempt), attempt


def _deadline(env: Mapping[str, str]) -> float:
    return retrying.deadline(env, local=backend(env) == "emulator")


def _local_emulator(env: Mapping[str, str]) -> bool:
    return backend(env) == "emulator" and retrying.is_loopback(emulator_url(env))


def _api(exc: Any) -> str:
    text = str(getattr(exc, "message", exc)).strip()
    return f"{getattr(exc, 'code', '')} {text.splitlines()[0] if text else ''}".strip()


def unreachable(
    exc: Exception, env: Mapping[str, str], doing: str = "", *, where: str | None = None
) -> Unreachable:
    """A transport failure, or transient faults until the deadline, as one sentence naming
    the service (``where``, by default :func:`service_name`; ``doing``: what was being
    done)."""
    where = where or service_name(env)
    if type(exc).__name__ == "DefaultCredentialsError":
        return Unreachable(
            "Cloud Storage needs credentials: run `gcloud auth application-default login`, "
            f"or set {EMULATOR_HOST_VAR} for an emulator or {LOCAL_BUCKET_ROOT_VAR} for a "
            "local directory"
        )
    if type(exc).__name__ == "RetryError":  # google.api_core: the deadline passed
        cause = getattr(exc, "cause", None) or exc
        what = f"{doing}; " if doing else ""
        return Unreachable(
            f"{where} kept failing: {_cause(cause)} ({what}gave up retrying after "
            f"{_deadline(env):g} s, {retrying.DEADLINE_VAR})"
        )
    what = f" ({doing})" if doing else ""
    return Unreachable(f"cannot reach {where}: {_cause(exc)}{what}")


def _cause(exc: BaseException) -> str:
    if hasattr(exc, "code") and hasattr(exc, "message"):  # a GoogleAPICallError
        return _api(exc)
    response = getattr(exc, "response", None)  # the media layer's InvalidResponse
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status} {getattr(response, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {retrying.first_line(exc)}"
