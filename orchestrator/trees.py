"""The files a build is made from: a commit, the working tree, or a checkout without git.

Artifact names hash these files' git object ids (:func:`orchestrator.contexts.content_id`),
so the three readers must agree: an unchanged working tree, and a copy of the commit with no
``.git`` at all (a Cloud Build workspace from a GitHub-app trigger, which receives only the
files), give exactly the entries of the commit.

A copy without git cannot ask git which files are ignored: it skips the tool's own state and
the usual caches (:data:`ALWAYS_SKIPPED`) and what the root ``.gitignore`` ignores, with git's
pattern semantics (nested ``.gitignore`` files are not read there).

Nothing is read from outside the repository. A component's context, the training source, the
function and the pipeline directories, the params file, a Dockerfile or an ignore file that
is, or lies below, a symbolic link pointing out of the repository (``components/x -> /etc``)
is refused with an :class:`~orchestrator.errors.InputError` naming it (:func:`check_confined`),
whatever is read: a commit (its links resolved as a checkout would), the working tree, or a
checkout without git (resolved on disk). The executors check again before they build or upload
from disk (:func:`inside_repository`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from orchestrator.adapters.git import Git, file_entry
from orchestrator.contexts import content_id
from orchestrator.errors import InputError
from orchestrator.gitignore import compile_pattern
from orchestrator.matching import Matcher
from orchestrator.model import Directive, Rule, Rules, TreeEntry

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

    def leaves(self, paths: Sequence[str]) -> dict[str, str | None]:
        """For each path, why it leads out of the repository (through a symbolic link), or
        ``None``."""
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

    def leaves(self, paths: Sequence[str]) -> dict[str, str | None]:
        return self.git.snapshot(self.head).leaves(paths)


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

    def leaves(self, paths: Sequence[str]) -> dict[str, str | None]:
        return {path: leaves_on_disk(self.git.repo, path) for path in paths}


class DiskTree:
    """A checkout with no git metadata: the files on disk, hashed as git would store them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        outside = leaves_on_disk(root, ".gitignore")
        if outside:
            raise InputError(f".gitignore leaves the repository: {outside}")
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

    def leaves(self, paths: Sequence[str]) -> dict[str, str | None]:
        return {path: leaves_on_disk(self.root, path) for path in paths}


def leaves_on_disk(root: Path, path: str) -> str | None:
    """Why ``root / path`` resolves outside ``root`` (symbolic links followed as the system
    follows them), or ``None`` when it stays inside (or does not exist)."""
    try:
        resolved = (root / path).resolve()
        base = root.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a loop of symbolic links
        return f"{path} cannot be resolved (a loop of symbolic links?)"
    if resolved == base or resolved.is_relative_to(base):
        return None
    return f"{path} resolves to {resolved}"


def inside_repository(repo: Path, path: str, what: str) -> Path:
    """``repo / path`` for an executor to build or upload from; InputError naming ``what`` when
    it leads out of the repository."""
    outside = leaves_on_disk(repo, path)
    if outside:
        raise InputError(f"{what} {path} leaves the repository: {outside}")
    return repo / path


def confined_paths(rules: Rules) -> list[tuple[str, str]]:
    """``(what, repository path)`` of everything a plan or a build reads by name from
    rules.toml: components' contexts, Dockerfiles and ignore files, the training source, the
    function and pipeline directories and the params file."""
    from orchestrator.contexts import context_path, ignore_candidates

    paths: list[tuple[str, str]] = []
    for component in rules.components:
        where = f"[components.{component.name}]"
        paths.append((f"{where} context", component.context))
        paths.append((f"{where} dockerfile", context_path(component.context, component.dockerfile)))
        paths += [(f"{where} ignore file", path) for path in ignore_candidates(component)]
    paths += [
        ("[source] dir", rules.training_source.dir),
        ("[function] dir", rules.function.dir),
        ("[pipeline] dir", rules.pipeline.dir),
        ("[pipeline] params", rules.pipeline.params),
    ]
    return [(what, path) for what, path in paths if path.strip("/.")]


def check_confined(tree: Tree, rules: Rules) -> None:
    """InputError for the first path rules.toml names that leads out of the repository in
    ``tree`` (see the module docstring)."""
    named = confined_paths(rules)
    found = tree.leaves([path for _, path in named])
    for what, path in named:
        outside = found[path]
        if outside:
            raise InputError(f"{what} {path} leaves the repository: {outside}")


def check_confined_on_disk(repo: Path, rules: Rules) -> None:
    """:func:`check_confined` for the files on disk an executor builds and uploads from
    (they may differ from the commit that was planned)."""
    for what, path in confined_paths(rules):
        inside_repository(repo, path, what)


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
