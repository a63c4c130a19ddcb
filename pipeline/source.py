"""The training source as uploaded: a deterministic gzip tarball of ``training_src/``.

Same tree, same bytes: entries are sorted, timestamps, owners and modes are normalised, and
caches are left out. The tarball unpacks to ``training_src/...``; the train step runs it with
``python -m training_src`` from the unpack directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = REPO_ROOT / "training_src"
TARBALL_NAME = "training_src.tar.gz"
_EXCLUDED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache"})


def source_files(src_dir: Path = SOURCE_DIR) -> list[Path]:
    return sorted(
        p
        for p in src_dir.rglob("*")
        if p.is_file()
        and not _EXCLUDED_PARTS.intersection(p.relative_to(src_dir).parts)
        and p.suffix not in (".pyc", ".pyo")
    )


def build_source_tarball(src_dir: Path = SOURCE_DIR) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in source_files(src_dir):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"training_src/{path.relative_to(src_dir).as_posix()}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as compressed:
        compressed.write(raw.getvalue())
    return out.getvalue()


def source_hash(src_dir: Path = SOURCE_DIR) -> str:
    """Content hash of the tarball, for an immutable upload prefix."""
    return hashlib.sha256(build_source_tarball(src_dir)).hexdigest()


def source_key(src_dir: Path = SOURCE_DIR, prefix: str = "source") -> str:
    """``source/<hash16>/training_src.tar.gz``."""
    return f"{prefix}/{source_hash(src_dir)[:16]}/{TARBALL_NAME}"
