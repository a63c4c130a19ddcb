"""Read ``gs://bucket/key`` or a local path.

- ``ORCHESTRATOR_LOCAL_BUCKET_ROOT=/dir``: ``gs://b/k`` is the local file ``/dir/b/k``;
- ``STORAGE_EMULATOR_HOST``: google-cloud-storage against that emulator, anonymously;
- otherwise: Google Cloud Storage with the ambient credentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

LOCAL_ROOT_ENV = "ORCHESTRATOR_LOCAL_BUCKET_ROOT"


_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/key`` -> ``(bucket, key)``. A key that is not a clean relative name (a
    ``..``, ``.`` or empty segment, a leading ``/``, a backslash or NUL) is refused: with a
    local directory bucket it would reach outside the bucket (``orchestrator/objects.py``)."""
    bucket, _, key = uri.removeprefix("gs://").partition("/")
    if not uri.startswith("gs://") or not _BUCKET.fullmatch(bucket) or not key:
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI")
    if "\\" in key or "\0" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI with a clean key")
    return bucket, key


def read_bytes(uri: str, environ: Mapping[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    if not uri.startswith("gs://"):
        return Path(uri).read_bytes()
    bucket, key = split_gs_uri(uri)
    if env.get(LOCAL_ROOT_ENV):
        return (Path(env[LOCAL_ROOT_ENV]) / bucket / key).read_bytes()
    from google.cloud import storage  # imported only when GCS is really used

    if env.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="local", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    data: bytes = client.bucket(bucket).blob(key).download_as_bytes()
    return data
