"""The planning path as one composition: rules.toml + git -> ``Plan``.

Shared by every command that needs a plan (plan, --dry-run, emit, run), so they all plan the
same way. Imports nothing heavy: no kfp, google-cloud or docker on this path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.adapters.git import Git
from orchestrator.artifacts import Artifacts, name_artifacts, parse_parameters, short_hash
from orchestrator.changes import require_head, resolve_changes
from orchestrator.config import load_rules
from orchestrator.errors import InputError
from orchestrator.matching import Matcher
from orchestrator.model import ChangedPath, ChangeSet, Plan, Rules
from orchestrator.planning import plan_changes


@dataclass(frozen=True, slots=True)
class Target:
    """What the user pointed the tool at: a repository, its rules file, a range."""

    repo: Path
    rules_path: Path
    base: str | None = None
    head: str = "HEAD"
    working_tree: bool = False
    #: plan as if exactly these paths changed at head (``--changed``), instead of a diff
    changed: tuple[str, ...] = ()


def open_repo(repo: Path) -> Git:
    if not repo.is_dir():
        raise InputError(f"--repo {repo}: no such directory")
    git = Git(repo)
    if not (repo / ".git").exists() and not git.is_repository():
        raise InputError(f"--repo {repo}: not a git repository (run it inside a clone)")
    return git


#: Environment variables that override ``[project]`` (for tests, and for one-off runs).
PROJECT_OVERRIDES = {
    "gcp_project": "ORCHESTRATOR_PROJECT",
    "region": "ORCHESTRATOR_REGION",
    "bucket": "ORCHESTRATOR_BUCKET",
    "registry": "ORCHESTRATOR_REGISTRY",
    "topic": "ORCHESTRATOR_TOPIC",
}


def with_overrides(rules: Rules, env: Mapping[str, str]) -> Rules:
    changed = {key: env[var] for key, var in PROJECT_OVERRIDES.items() if env.get(var)}
    if not changed:
        return rules
    return replace(rules, project=replace(rules.project, **changed))


def make_plan(target: Target, env: Mapping[str, str]) -> tuple[Rules, Plan]:
    git = open_repo(target.repo)
    # git works in its own process while this one reads the rules and compiles the matcher.
    with ThreadPoolExecutor(max_workers=1) as pool:
        if target.changed:
            pending = pool.submit(given_changes, git, target.head, target.changed)
        else:
            pending = pool.submit(
                resolve_changes,
                git,
                base=target.base,
                head=target.head,
                working_tree=target.working_tree,
                env=env,
            )
        # A bad rules file is reported first; leaving the block then waits for git.
        rules = with_overrides(load_rules(target.rules_path), env)
        matcher = Matcher(rules.rules)
        changes = pending.result()
    contexts = [c.context for c in rules.components]
    existing = git.existing_dirs(changes.head, contexts, target.working_tree) if contexts else ()
    return rules, plan_changes(changes, rules, existing, matcher=matcher)


def given_changes(git: Git, head: str, paths: Sequence[str]) -> ChangeSet:
    """A change set of ``paths`` at ``head``, as if a commit had modified exactly them.

    Each path is kept exactly as given (spaces included) except that a leading ``./`` is
    dropped; an absolute path is made relative to the repository's root (see
    :func:`_relative`).
    """
    commit = require_head(git, head)
    root = git.toplevel() if any(Path(p).is_absolute() for p in paths) else None
    normalized = dict.fromkeys(_relative(p, root, git) for p in paths)
    return ChangeSet(
        base=None,
        head=commit.sha,
        base_reason="given-paths",
        changes=tuple(ChangedPath("M", p) for p in normalized),
    )


def _relative(path: str, root: Path | None, git: Git) -> str:
    """``path`` relative to the repository ``root``: a relative one as given, minus any
    leading ``./``; an absolute one resolved against the root, symlinks in its directories
    resolved (not in its last component, which may itself be a tracked symlink).
    """
    if not path:
        raise InputError("--changed takes repository-relative paths, not an empty string")
    given = Path(path)
    if not given.is_absolute():
        relative = path
        while relative.startswith("./"):
            relative = relative[2:]
    elif root is None:
        raise InputError(f"--changed {path}: {git.repo} has no work tree to resolve it against")
    else:
        if given.name in ("", ".."):
            resolved = given.resolve()
        else:
            resolved = given.parent.resolve() / given.name
        if not resolved.is_relative_to(root):
            raise InputError(f"--changed {path}: outside the repository {root}")
        relative = resolved.relative_to(root).as_posix()
        if path.endswith("/") and relative != ".":
            relative += "/"
    if relative in ("", "."):
        raise InputError(f"--changed {path}: the repository's root, not a path in it")
    return relative


def detect_ref(env: Mapping[str, str], git: Git) -> str:
    """The full git ref being built: from GitHub, Cloud Build, then the checkout itself."""
    if env.get("GITHUB_HEAD_REF"):  # a pull request: the branch it comes from
        return f"refs/heads/{env['GITHUB_HEAD_REF']}"
    if env.get("GITHUB_REF", "").startswith("refs/"):
        return env["GITHUB_REF"]
    if env.get("BRANCH_NAME"):  # Cloud Build trigger substitutions passed as env
        return f"refs/heads/{env['BRANCH_NAME']}"
    if env.get("TAG_NAME"):
        return f"refs/tags/{env['TAG_NAME']}"
    return git.current_ref() or "refs/heads/detached"


def name_build(target: Target, rules: Rules, plan: Plan, env: Mapping[str, str]) -> Artifacts:
    """Content-addressed names of every artifact at the plan's head (see ``artifacts``)."""
    git = open_repo(target.repo)
    dirs = [*(c.context for c in rules.components), rules.training_source.dir]
    params_path = rules.pipeline.params
    if target.working_tree:
        object_ids: dict[str, str | None] = {d: _disk_id(target.repo / d) for d in dirs}
        pipeline_inputs = (
            _disk_id(target.repo / rules.pipeline.dir, exclude=params_path) or "missing"
        )
        params_file = target.repo / params_path
        params_text = params_file.read_bytes() if params_file.is_file() else None
    else:
        object_ids = git.object_ids(plan.head, dirs)
        listing = git.list_tree(plan.head, rules.pipeline.dir).split(b"\0")
        kept = [e for e in listing if e and e.split(b"\t", 1)[-1] != params_path.encode()]
        pipeline_inputs = short_hash(*(e.decode("utf-8", "surrogateescape") for e in kept))
        params_text = git.read_file(plan.head, params_path)
    parameters = (
        parse_parameters(params_text.decode("utf-8", "replace"), source=params_path)
        if params_text is not None
        else {}
    )
    return name_artifacts(
        rules,
        commit=plan.head,
        ref=detect_ref(env, git),
        object_ids=object_ids,
        pipeline_inputs=pipeline_inputs,
        parameters=parameters,
    )


def _disk_id(path: Path, *, exclude: str | None = None) -> str | None:
    """A content id for a directory in the working tree (what --working-tree builds)."""
    if not path.exists():
        return None
    parts = []
    root = path.parent
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(root).as_posix()
        if relative == exclude or "__pycache__" in file.parts:
            continue
        parts += [relative, hashlib.sha256(file.read_bytes()).hexdigest()]
    return "wt-" + short_hash(*parts)
