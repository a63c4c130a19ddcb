"""The files Docker reads by name from a build context: the Dockerfile and its ignore files.

Kept apart from :mod:`orchestrator.dockerignore` (the pattern semantics, heavy to import) so
that planning, which asks only which ignore files may exist, loads the rules only when one
does. Pure.
"""

from __future__ import annotations

IGNORE_FILE = ".dockerignore"
DEFAULT_DOCKERFILE = "Dockerfile"


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a '/'-separated path (``posixpath.normpath`` keeps '//')."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def context_relative(path: str) -> str:
    """A context-relative path as Docker names it: cleaned, '/'-separated, no leading './'."""
    cleaned = clean(path)
    if cleaned == "." or cleaned.startswith("/") or cleaned == ".." or cleaned.startswith("../"):
        raise ValueError(f"{path!r} is not a path inside the build context")
    return cleaned


def ignore_file_candidates(dockerfile: str, *, buildkit: bool = True) -> tuple[str, ...]:
    """The context-relative ignore files Docker reads for ``dockerfile`` (relative to the
    context), most specific first; the first that exists is the one used.

    BuildKit reads ``<Dockerfile>.dockerignore`` beside the Dockerfile in preference to the
    context's ``.dockerignore`` (docs: "A Dockerfile-specific ignore-file takes precedence";
    moby/buildkit ``frontend/dockerui/config.go`` reads ``filename + ".dockerignore"``). The
    classic builder only ever reads ``<context>/.dockerignore`` (checked against docker 20.10
    and 28). An empty Dockerfile-specific file still wins (checked with BuildKit 0.8).
    """
    name = clean(dockerfile)
    if buildkit:
        return (f"{name}.dockerignore", IGNORE_FILE)
    return (IGNORE_FILE,)


def always_sent(path: str, dockerfile: str, ignore_file: str | None) -> bool:
    """Whether ``path`` is a file Docker sends whatever the patterns say, so that a change to
    it always matters: the Dockerfile and the ignore file ("These files are still sent to the
    builder as they're needed for running the build", docs). Every ignore-file candidate
    counts, because adding or removing one changes which file a builder reads.
    """
    name = context_relative(path)
    if name == clean(dockerfile):
        return True
    if ignore_file is not None and name == clean(ignore_file):
        return True
    return name in ignore_file_candidates(dockerfile)
