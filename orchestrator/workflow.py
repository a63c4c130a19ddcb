"""The planning path as one composition: rules.toml + git -> ``Plan``.

Shared by every command that needs a plan (plan, --dry-run, emit, run), so they all plan the
same way. Imports nothing heavy: no kfp, google-cloud or docker on this path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.adapters.git import Git
from orchestrator.artifacts import Artifacts, name_artifacts, parse_parameters
from orchestrator.changes import require_head, resolve_changes
from orchestrator.config import load_rules
from orchestrator.contexts import (
    BuildContext,
    build_contexts,
    content_id,
    ignore_candidates,
    image_input,
)
from orchestrator.errors import InputError
from orchestrator.matching import Matcher
from orchestrator.model import ChangedPath, ChangeSet, Plan, Rules, TreeEntry
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
    contexts = load_contexts(git, rules, changes.head, working_tree=target.working_tree)
    existing = [c.component.context for c in contexts.values() if c.exists]
    return rules, plan_changes(changes, rules, existing, matcher=matcher, contexts=contexts)


def load_contexts(
    git: Git, rules: Rules, head: str, *, working_tree: bool = False
) -> dict[str, BuildContext]:
    """Each component's build context at ``head`` (or in the working tree): whether it exists,
    and the ignore file Docker would apply to it. Two git calls, whatever the number of
    components; none without components."""
    if not rules.components:
        return {}
    existing = git.existing_dirs(head, [c.context for c in rules.components], working_tree)
    candidates = [p for c in rules.components for p in ignore_candidates(c)]
    if working_tree:
        contents = {p: _read_disk(git.repo / p) for p in candidates}
    else:
        contents = git.read_files(head, candidates)
    return build_contexts(rules, existing, contents)


def _read_disk(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


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
    """Content-addressed names of every artifact at the plan's head (see ``artifacts``).

    Each name hashes the git object ids of the files it is made from, read from the commit,
    or with ``--working-tree`` from the files on disk hashed the way git would store them,
    so an unchanged checkout names everything exactly as its commit does.
    """
    git = open_repo(target.repo)
    working_tree = target.working_tree
    contexts = load_contexts(git, rules, plan.head, working_tree=working_tree)
    listings: dict[str, list[TreeEntry]] = {}

    def entries(directory: str) -> list[TreeEntry]:
        if directory not in listings:
            listings[directory] = (
                git.working_tree_entries(directory)
                if working_tree
                else git.tree_entries(plan.head, directory)
            )
        return listings[directory]

    image_inputs = {
        name: image_input(context, entries(context.component.context))
        for name, context in contexts.items()
    }
    source_dir = _as_dir(rules.training_source.dir)
    source_files = entries(source_dir)
    source_input = content_id(source_files, source_dir) if source_files else None
    params_path = rules.pipeline.params
    pipeline_dir = _as_dir(rules.pipeline.dir)
    pipeline_inputs = content_id(entries(pipeline_dir), pipeline_dir, lambda p: p != params_path)
    if working_tree:
        params_text = _read_disk(target.repo / params_path)
    else:
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
        image_inputs=image_inputs,
        source_input=source_input,
        pipeline_inputs=pipeline_inputs,
        parameters=parameters,
    )


def _as_dir(path: str) -> str:
    """A directory from rules.toml as a repository path (``""`` for the root)."""
    return "/".join(part for part in path.split("/") if part not in ("", "."))
