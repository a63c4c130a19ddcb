"""The planning path as one composition: rules.toml + git -> ``Plan``.

Shared by every command that needs a plan (plan, --dry-run, emit, run), so they all plan the
same way. Imports nothing heavy: no kfp, google-cloud or docker on this path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from orchestrator import objects
from orchestrator.adapters.git import Git
from orchestrator.artifacts import Artifacts, name_artifacts, parse_parameters
from orchestrator.changes import require_head, resolve_changes
from orchestrator.ci_env import GITHUB_PULL_REQUEST_EVENTS
from orchestrator.config import load_rules
from orchestrator.contexts import (
    BuildContext,
    build_contexts,
    content_id,
    ignore_candidates,
    image_input,
)
from orchestrator.errors import ConfigError, InputError, ServiceUnreachable
from orchestrator.finishing import Finished, RunStatus, finish
from orchestrator.matching import Matcher
from orchestrator.model import ChangedPath, ChangeSet, Plan, Rules
from orchestrator.planning import plan_changes
from orchestrator.services import Services
from orchestrator.trees import CommitTree, DiskTree, Tree, WorkingTree, check_confined

if TYPE_CHECKING:  # the deploy ledger and the runs registry load only when a bucket is set
    from orchestrator import ledger


class Target(NamedTuple):
    """What the user pointed the tool at: a repository, its rules file, a range."""

    repo: Path
    rules_path: Path
    base: str | None = None
    head: str = "HEAD"
    working_tree: bool = False
    #: plan as if exactly these paths changed at head (``--changed``), instead of a diff
    changed: tuple[str, ...] = ()
    #: diff from the commit the deploy ledger records (None: by default in CI only)
    since_deployed: bool | None = None


def open_repo(repo: Path) -> Git:
    git = open_checkout(repo)
    if git is None:
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
    return rules._replace(project=rules.project._replace(**changed))


def make_plan(
    target: Target, env: Mapping[str, str], services: Services | None = None
) -> tuple[Rules, Plan]:
    """The plan by the diff alone (what ``explain`` and the replay check); see
    :func:`prepare` for the finished plan every command runs."""
    planned = plan_target(target, env, services)
    return planned.rules, planned.plan


class Planned(NamedTuple):
    """A plan by the diff, with what finishing it needs."""

    rules: Rules
    plan: Plan
    tree: Tree
    contexts: Mapping[str, BuildContext]
    ref: str
    git: Git | None
    location: ledger.Location | None
    deployed: ledger.Entry | None


def uses_ledger_base(target: Target, env: Mapping[str, str]) -> bool:
    """``--since-deployed``; by default in CI, except for pull requests (which plan against
    their base branch) and when ``--base`` or ``--changed`` says otherwise."""
    if target.base is not None or target.changed:
        return False
    if env.get("_BASE_SHA", "").strip():  # Cloud Build: a base asked for explicitly
        return False
    if target.since_deployed is not None:
        return target.since_deployed
    in_ci = env.get("CI", "").lower() in ("1", "true", "yes")
    return in_ci and env.get("GITHUB_EVENT_NAME", "") not in GITHUB_PULL_REQUEST_EVENTS


def plan_target(target: Target, env: Mapping[str, str], services: Services | None) -> Planned:
    git = open_checkout(target.repo)
    rules = with_overrides(load_rules(target.rules_path), env)
    matcher = Matcher(rules.rules)
    ref = detect_ref(env, git)
    location = ledger_location(rules, ref)
    deployed = None
    if (
        services is not None
        and location is not None
        and (git is None or uses_ledger_base(target, env))
    ):
        from orchestrator import ledger

        deployed = ledger.read(location, services.env())
    if git is None:
        changes = _hash_only_changes(target, env, location, deployed)
        tree: Tree = DiskTree(target.repo)
    else:
        if target.changed:
            changes = given_changes(git, target.head, target.changed)
        else:
            changes = resolve_changes(
                git,
                base=target.base,
                head=target.head,
                working_tree=target.working_tree,
                env=env,
                deployed=deployed.state.commit if deployed is not None else None,
            )
        tree = WorkingTree(git) if target.working_tree else CommitTree(git, changes.head)
    check_confined(tree, rules)  # nothing is read or built from outside the repository
    contexts = load_contexts(tree, rules)
    existing = [c.component.context for c in contexts.values() if c.exists]
    plan = plan_changes(changes, rules, existing, matcher=matcher, contexts=contexts)
    return Planned(rules, plan, tree, contexts, ref, git, location, deployed)


def _hash_only_changes(
    target: Target,
    env: Mapping[str, str],
    location: ledger.Location | None,
    deployed: ledger.Entry | None,
) -> ChangeSet:
    """No git here (a Cloud Build workspace from a GitHub-app trigger has only the files):
    no diff; the deploy ledger's hashes decide (see ``finishing``)."""
    if location is None:
        raise InputError(f"--repo {target.repo}: not a git repository (run it inside a clone)")
    if deployed is None:
        raise InputError(
            f"--repo {target.repo}: not a git repository, and nothing is deployed yet to plan "
            f"from hashes ({location.uri} does not exist): run the first build in a clone with "
            "history"
        )
    head = target.head if _is_sha(target.head) else env.get("COMMIT_SHA", "")
    if not _is_sha(head):
        raise InputError(
            f"{target.repo} has no git history: pass the commit being built as --head <full sha> "
            "(Cloud Build: --head $COMMIT_SHA)"
        )
    return ChangeSet(base=deployed.state.commit, head=head.lower(), base_reason="hashes",
                     changes=())  # fmt: skip


def _is_sha(value: str) -> bool:
    return len(value) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in value)


def ledger_location(rules: Rules, ref: str) -> ledger.Location | None:
    if not rules.project.bucket:
        return None
    from orchestrator import ledger
    from orchestrator.bounded import shown
    from orchestrator.message import MAX_BRANCH_LENGTH, branch_of, is_recordable_branch

    branch = branch_of(ref)
    if not is_recordable_branch(branch):
        # --branch, GITHUB_REF, BRANCH_NAME: refused here, not when the record is encoded
        raise InputError(
            f"the branch {shown(branch)} cannot have a deploy ledger: a branch name must be 1 "
            f"to {MAX_BRANCH_LENGTH} characters of UTF-8 text without control characters"
        )
    return ledger.Location(rules.project.bucket, rules.project.prefix, branch)


class Prepared(NamedTuple):
    """The finished plan every command shows and every executor runs."""

    target: Target
    rules: Rules
    finished: Finished
    planned: Planned
    services: Services
    #: why the artifacts could not be named (rules.toml has no [project] bucket or registry):
    #: the plan is then the diff's, unchecked, and nothing can run
    unnamed: ConfigError | None = None

    @property
    def plan(self) -> Plan:
        return self.finished.plan

    @property
    def artifacts(self) -> Artifacts:
        if self.unnamed is not None:
            raise self.unnamed
        return self.finished.artifacts


def prepare(
    target: Target, env: Mapping[str, str], services: Services, *, data_uri: str = ""
) -> Prepared:
    """Plan by the diff, then finish the plan against the bucket, the registry and the deploy
    ledger (``finishing``): one place, for plan, --dry-run, emit and run."""
    planned = plan_target(target, env, services)
    rules = planned.rules
    deployed = planned.deployed
    if deployed is None and planned.location is not None:
        from orchestrator import ledger

        deployed = ledger.read(planned.location, services.env())
    # a build trains on the newest data a trigger or a notification brought, not the default
    data_version = ""
    if not data_uri and deployed is not None:
        data_uri, data_version = deployed.state.data_uri, deployed.state.data_version
    try:
        names = name_build(
            planned.tree, rules, planned.plan, planned.ref, data_uri=data_uri,
            contexts=planned.contexts,
        )  # fmt: skip
        names = names._replace(data_version=data_version)
    except ConfigError as exc:
        warning = f"not checked against what exists: {exc.message}"
        plan = planned.plan._replace(warnings=(*planned.plan.warnings, warning))
        placeholder = Artifacts("", "", "", (), "", "", ())
        return Prepared(target, rules, Finished(plan, placeholder), planned, services, exc)
    finished = finish(
        planned.plan,
        rules,
        names,
        StoreProbe(services, rules),
        deployed=deployed.state if deployed is not None else None,
        images_required=services.images_required,
        buildable=frozenset(n for n, c in planned.contexts.items() if c.exists),
    )
    return Prepared(target, rules, finished, planned._replace(deployed=deployed), services)


class StoreProbe:
    """finishing's lookups, against the services in use."""

    def __init__(self, services: Services, rules: Rules) -> None:
        self.env = services.env()
        self.registry = services.registry_lookups
        self.runs = (
            f"gs://{rules.project.bucket}/{rules.project.prefix}/runs/"
            if rules.project.bucket
            else None
        )

    def object_exists(self, uri: str) -> bool:
        try:
            return objects.exists(uri, self.env)
        except objects.ObjectError as exc:
            raise ServiceUnreachable(str(exc)) from exc

    def read_object(self, uri: str) -> bytes | None:
        try:
            stored = objects.read(uri, self.env)
        except objects.ObjectError as exc:
            raise ServiceUnreachable(str(exc)) from exc
        return stored.data if stored is not None else None

    def image_digest(self, image: str) -> str | None:
        if not self.registry:
            raise ServiceUnreachable("no container registry in use here")
        from orchestrator.adapters.registry import manifest_digest

        return manifest_digest(image, self.env)

    def run_status(self, run_id: str) -> RunStatus | None:
        if self.runs is None:
            return None
        data = self.read_object(f"{self.runs}{run_id}.json")
        return parse_run_status(data) if data is not None else None


def parse_run_status(data: bytes, now: float | None = None) -> RunStatus | None:
    """A runs-registry entry (written by the function) as finishing needs it."""
    from orchestrator import runs

    try:
        entry = runs.RegistryEntry.from_bytes(data)
    except runs.MessageError:
        return None  # an unreadable entry: the function replaces it, so the run is wanted
    moment = time.time() if now is None else now
    numbers = {k: float(v) for k, v in entry.metrics.items() if _is_number(v)}
    return RunStatus(status=entry.status, live=runs.live(entry, moment), metrics=numbers)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_contexts(tree: Tree, rules: Rules) -> dict[str, BuildContext]:
    """Each component's build context in ``tree``: whether it exists, and the ignore file
    Docker would apply to it. Two git calls, whatever the number of components; none
    without components."""
    if not rules.components:
        return {}
    existing = tree.existing_dirs([c.context for c in rules.components])
    candidates = [p for c in rules.components for p in ignore_candidates(c)]
    return build_contexts(rules, existing, tree.read_files(candidates))


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


def detect_ref(env: Mapping[str, str], git: Git | None) -> str:
    """The full git ref being built: from GitHub, Cloud Build, then the checkout itself."""
    if env.get("GITHUB_HEAD_REF"):  # a pull request: the branch it comes from
        return f"refs/heads/{env['GITHUB_HEAD_REF']}"
    if env.get("GITHUB_REF", "").startswith("refs/"):
        return env["GITHUB_REF"]
    if env.get("BRANCH_NAME"):  # Cloud Build trigger substitutions passed as env
        return f"refs/heads/{env['BRANCH_NAME']}"
    if env.get("TAG_NAME"):
        return f"refs/tags/{env['TAG_NAME']}"
    return (git.current_ref() if git is not None else None) or "refs/heads/detached"


def name_build(
    tree: Tree,
    rules: Rules,
    plan: Plan,
    ref: str,
    *,
    data_uri: str = "",
    contexts: Mapping[str, BuildContext] | None = None,
) -> Artifacts:
    """Content-addressed names of every artifact at the plan's head (see ``artifacts``).

    Each name hashes the git object ids of the files it is made from, as ``tree`` gives them
    (a commit, the working tree, or a checkout without git, which all agree), so an unchanged
    checkout names everything exactly as its commit does. A directory taken whole is named
    by its tree id (one git call for all of them at a commit); only a context with an ignore
    file, and the pipeline's directory (less its parameters file), are listed file by file.
    """
    if contexts is None:
        contexts = load_contexts(tree, rules)
    source_dir = _as_dir(rules.training_source.dir)
    function_dir = _as_dir(rules.function.dir)
    whole = [c.component.context for c in contexts.values() if c.exists and c.ignore is None]
    ids = tree.content_ids(list(dict.fromkeys([*whole, source_dir, function_dir])))
    image_inputs = {
        name: (
            None
            if not context.exists
            else ids[context.component.context]
            if context.ignore is None
            else image_input(context, tree.entries(context.component.context))
        )
        for name, context in contexts.items()
    }
    source_input = ids[source_dir]
    function_input = ids[function_dir] or ""
    params_path = rules.pipeline.params
    pipeline_dir = _as_dir(rules.pipeline.dir)
    pipeline_inputs = content_id(
        tree.entries(pipeline_dir), pipeline_dir, lambda p: p != params_path
    )
    params_text = tree.read_files([params_path])[params_path]
    parameters = (
        parse_parameters(params_text.decode("utf-8", "replace"), source=params_path)
        if params_text is not None
        else {}
    )
    names = name_artifacts(
        rules,
        commit=plan.head,
        ref=ref,
        image_inputs=image_inputs,
        source_input=source_input,
        pipeline_inputs=pipeline_inputs,
        parameters=parameters,
        function_input=function_input,
    )
    return names._replace(data_uri=data_uri)


def open_checkout(repo: Path) -> Git | None:
    """The repository's git, or ``None`` for a checkout that has no git metadata at all."""
    if not repo.is_dir():
        raise InputError(f"--repo {repo}: no such directory")
    git = Git(repo)
    if (repo / ".git").exists() or git.is_repository():
        return git
    return None


def _as_dir(path: str) -> str:
    """A directory from rules.toml as a repository path (``""`` for the root)."""
    return "/".join(part for part in path.split("/") if part not in ("", "."))
