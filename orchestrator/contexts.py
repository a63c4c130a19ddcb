"""Components' build contexts at head: which changed paths can change which image. Pure.

A path changes a component's image only when it lies in the component's build context (the
repository root holds every path) and Docker sends it to the builder: a path the context's
ignore file excludes never reaches the image, so it neither triggers a build nor changes the
image's content hash. The Dockerfile and the ignore file itself always count: Docker reads
them whatever the ignore file says (https://docs.docker.com/build/concepts/context/).

Which ignore file applies, and what its lines mean, is :mod:`orchestrator.dockerignore`'s
business; this module only needs each file's content at head, which the caller reads (from
git, or from the working tree) and passes in.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from orchestrator.errors import ConfigError
from orchestrator.model import Component, Rules, TreeEntry


class Ignore(Protocol):
    def excludes(self, path: str) -> bool: ...


def context_path(context: str, relative: str) -> str:
    """``relative`` (inside a context) as a repository path."""
    return f"{context}/{relative}" if context else relative


def holds(context: str, path: str) -> bool:
    """Whether the context directory (``""``: the repository root) holds ``path``."""
    return not context or path == context or path.startswith(context + "/")


class BuildContext(NamedTuple):
    """One component's context at head."""

    component: Component
    exists: bool
    ignore_file: str | None = None  # the repository path of the ignore file in force
    ignore: Ignore | None = None

    @property
    def dockerfile(self) -> str:
        return context_path(self.component.context, self.component.dockerfile)

    def relative(self, path: str) -> str:
        context = self.component.context
        return path[len(context) + 1 :] if context else path

    def sends(self, path: str) -> bool:
        """Whether Docker sends ``path`` (which this context holds) to the builder."""
        if self.ignore is None:
            return True
        from orchestrator.dockerpaths import always_sent

        relative = self.relative(path)
        ignore_file = self.relative(self.ignore_file) if self.ignore_file else None
        if always_sent(relative, self.component.dockerfile, ignore_file):
            return True
        return not self.ignore.excludes(relative)


def content_id(
    entries: Iterable[TreeEntry], directory: str, keep: Callable[[str], bool] | None = None
) -> str:
    """A name for the content of the files below ``directory`` that ``keep`` keeps: the id
    git gives the tree of exactly those files (``git write-tree`` of them; ``git rev-parse
    <commit>:<directory>`` when ``keep`` keeps everything), so a commit's directory is named
    by one ``cat-file`` without listing it. The same files give the same id whether they come
    from a commit, the working tree or a checkout without git (:class:`TreeEntry` carries
    git's object ids; the hash follows theirs: sha1, or sha256 for 64-digit ids).

    Tree objects: https://git-scm.com/book/en/v2/Git-Internals-Git-Objects (entries sorted
    by name, a directory as if its name ended in ``/``; a directory's mode is ``40000``).
    """
    root: dict[str, Any] = {}
    algorithm = "sha1"
    for entry in entries:
        if not holds(directory, entry.path) or (keep is not None and not keep(entry.path)):
            continue
        relative = entry.path[len(directory) + 1 :] if directory else entry.path
        *parents, name = relative.split("/")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = entry
        if len(entry.oid) == 64:
            algorithm = "sha256"
    return _tree_id(root, algorithm)


def _tree_id(node: dict[str, Any], algorithm: str) -> str:
    records = []
    for name, child in node.items():
        raw = name.encode("utf-8", "surrogateescape")
        if isinstance(child, dict):
            records.append((raw + b"/", b"40000 " + raw, _tree_id(child, algorithm)))
        else:
            records.append((raw, child.mode.encode() + b" " + raw, child.oid))
    body = b"".join(header + b"\0" + bytes.fromhex(oid) for _, header, oid in sorted(records))
    digest = hashlib.new(algorithm, b"tree %d\0" % len(body))
    digest.update(body)
    return digest.hexdigest()


def image_input(context: BuildContext, entries: Iterable[TreeEntry]) -> str | None:
    """What a component's image is built from: the files of its context that Docker sends.
    ``None`` when the context does not exist."""
    if not context.exists:
        return None
    return content_id(entries, context.component.context, context.sends)


#: parse(text, source, dockerfile) -> Ignore; raises ValueError (with a ``line``, if known)
Parser = Callable[[str, str, str], Ignore]


def ignore_candidates(component: Component) -> tuple[str, ...]:
    """The repository paths of the ignore files Docker may read for ``component``, most
    specific first."""
    return tuple(context_path(component.context, c) for c in _candidates(component.dockerfile))


@functools.lru_cache(maxsize=256)
def _candidates(dockerfile: str) -> tuple[str, ...]:
    from orchestrator.dockerpaths import ignore_file_candidates

    return ignore_file_candidates(dockerfile)


class _Everywhere(NamedTuple):
    """Several ignore files apply (BuildKit reads ``<Dockerfile>.dockerignore``, the classic
    builder ``.dockerignore``): a path is left out only when every one leaves it out."""

    ignores: tuple[Ignore, ...]

    def excludes(self, path: str) -> bool:
        return all(ignore.excludes(path) for ignore in self.ignores)


def build_contexts(
    rules: Rules,
    existing: Collection[str],
    ignore_files: Mapping[str, bytes | None],
    parse: Parser | None = None,
) -> dict[str, BuildContext]:
    """Every component's :class:`BuildContext`, by component name.

    ``existing`` holds the contexts that exist at head; ``ignore_files`` the content of every
    path :func:`ignore_candidates` names (``None`` where there is no such file). A malformed
    ignore file is a :class:`ConfigError` naming it and its line.
    """
    if parse is None:

        def parse(text: str, source: str, dockerfile: str) -> Ignore:
            # imported only when a context has an ignore file: most plans need no rules
            from orchestrator.dockerignore import parse_dockerignore

            return parse_dockerignore(text, source=source, dockerfile=dockerfile)

    contexts = {}
    for component in rules.components:
        present = [
            (path, data)
            for path in ignore_candidates(component)
            if (data := ignore_files.get(path)) is not None
        ]
        ignores = []
        for source, data in present:
            try:
                text = data.decode("utf-8", "surrogateescape")
                ignores.append(parse(text, source, component.dockerfile))
            except ValueError as exc:
                line = getattr(exc, "line", None)
                message = str(exc).removeprefix(f"{source}:{line}: ")
                raise ConfigError(message, file=source, line=line) from None
        ignore: Ignore | None = None
        if len(ignores) == 1:
            ignore = ignores[0]
        elif ignores:
            ignore = _Everywhere(tuple(ignores))
        contexts[component.name] = BuildContext(
            component=component,
            exists=component.context in existing,
            ignore_file=present[0][0] if present else None,
            ignore=ignore,
        )
    return contexts
