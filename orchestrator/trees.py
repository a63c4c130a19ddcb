"""The files a build is made from: a commit, the working tree, or a checkout without git.

Artifact names hash these files' git object ids (:func:`orchestrator.contexts.content_id`),
so the three readers must agree: an unchanged working tree, and a copy of the commit with no
``.git`` at all (a Cloud Build workspace from a GitHub-app trigger, which receives only the
files), give exactly the entries of the commit.

A copy without git cannot ask git which files are ignored: it skips the tool's own state and
the usual caches (:data:`ALWAYS_SKIPPED`) and what the root ``.gitignore`` ignores, with git's
pattern semantics (nested ``.gitignore`` files are not read there).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from orchestrator.adapters.git import Git, file_entry
from orchestrator.contexts import content_id
from orchestrator.gitignore import compile_pattern
from orchestrator.matching import Matcher
from orchestrator.model import Directive, Rule, TreeEntry

ALWAYS_SKIPPED = frozenset(
    {".git", ".orchestrator", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
     ".hypothesis", ".venv", "node_modules"}
)  # fmt: skip


class Tree(Protocol):
    """Read-only access to the files of one state of the repository."""

    def entries(self, directory: str) -> list[TreeEntry]: ...

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]: ...

    def existing_dirs(self, dirs: Sequence[str]) -> frozenset[str]: ...

    def content_ids(self, dirs: Sequence[str]) -> dict[str, str | None]:
        """Each directory's :func:`~orchestrator.contexts.content_id` of all its files;
        ``None`` where it holds none."""
        ...


class CommitTree:
    def __init__(self, git: Git, head: str) -> None:
        self.git = git
        self.head = head

    def entries(self, directory: str) -> list[TreeEntry]:
        return self.git.tree_entries(self.head, directory)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        return self.git.read_files(self.head, paths)

    def existing_dirs(self, dirs: Sequence[str]) -> frozenset[str]:
        return self.git.existing_dirs(self.head, dirs)

    def content_ids(self, dirs: Sequence[str]) -> dict[str, str | None]:
        return self.git.tree_ids(self.head, dirs)  # a commit's trees: no listing needed


class WorkingTree:
    def __init__(self, git: Git) -> None:
        self.git = git

    def entries(self, directory: str) -> list[TreeEntry]:
        return self.git.working_tree_entries(directory)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        return {p: _read(self.git.repo / p) for p in paths}

    def existing_dirs(self, dirs: Sequence[str]) -> frozenset[str]:
        return self.git.existing_dirs("HEAD", dirs, working_tree=True)

    def content_ids(self, dirs: Sequence[str]) -> dict[str, str | None]:
        return _listed_ids(self, dirs)


class DiskTree:
    """A checkout with no git metadata: the files on disk, hashed as git would store them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ignore = _read(root / ".gitignore")
        patterns = []
        for line in (ignore or b"").decode("utf-8", "replace").splitlines():
            if line.strip() and not line.startswith("#"):
                try:
                    compile_pattern(line)
                except ValueError:
                    continue
                patterns.append(line)
        self._ignored = (
            Matcher([Rule("gitignore", tuple(patterns), (Directive("skip"),))])
            if patterns
            else None
        )

    def _skipped(self, relative: str) -> bool:
        if any(part in ALWAYS_SKIPPED for part in relative.split("/")):
            return True
        return self._ignored is not None and bool(self._ignored.match(relative))

    def entries(self, directory: str) -> list[TreeEntry]:
        start = self.root / directory if directory else self.root
        entries = []
        for current, dirs, files in os.walk(start):
            dirs[:] = sorted(d for d in dirs if d not in ALWAYS_SKIPPED)
            for name in files:
                full = Path(current, name)
                relative = full.relative_to(self.root).as_posix()
                if self._skipped(relative):
                    continue
                entry = file_entry(full, relative)
                if entry is not None:
                    entries.append(entry)
            for name in list(dirs):  # a symbolic link to a directory is a link, not followed
                full = Path(current, name)
                if full.is_symlink():
                    dirs.remove(name)
                    relative = full.relative_to(self.root).as_posix()
                    entry = None if self._skipped(relative) else file_entry(full, relative)
                    if entry is not None:
                        entries.append(entry)
        return sorted(entries, key=lambda e: e.path)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        return {p: _read(self.root / p) for p in paths}

    def existing_dirs(self, dirs: Sequence[str]) -> frozenset[str]:
        return frozenset(d for d in dirs if (self.root / d).is_dir())

    def content_ids(self, dirs: Sequence[str]) -> dict[str, str | None]:
        return _listed_ids(self, dirs)


def _listed_ids(tree: Tree, dirs: Sequence[str]) -> dict[str, str | None]:
    """Content ids from each directory's listing (what git's tree id is for a commit)."""
    ids: dict[str, str | None] = {}
    for directory in dirs:
        entries = tree.entries(directory)
        ids[directory] = content_id(entries, directory) if entries else None
    return ids


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None
