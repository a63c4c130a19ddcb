"""The records that travel between diffing, matching, planning, emitting and executing.

Everything here is frozen and typed; raw dicts never travel past the config loader.

The records are ``typing.NamedTuple`` classes, not frozen dataclasses: every command imports
this module, and a dataclass writes and compiles its methods when the module is imported
(about 1 ms a class; Python 3.11's ``dataclasses._create_fn``), which for these fifteen was
the largest single cost of starting a plan. A NamedTuple is built in C and as immutable;
``record._replace(field=value)`` is ``dataclasses.replace``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

# ---------------------------------------------------------------------------
# Changes: what a commit range touched
# ---------------------------------------------------------------------------

#: Git's change statuses as this tool keeps them: Added, Modified, Deleted,
#: Renamed, Type change (file <-> symlink <-> submodule). Copies count as added.
ChangeStatus = Literal["A", "M", "D", "R", "T"]


class ChangedPath(NamedTuple):
    """One entry of the diff. A rename has both ``path`` (new) and ``old_path``.

    A commit can hold tens of thousands of them: tuples build and hash in C.
    """

    status: ChangeStatus
    path: str
    old_path: str | None = None

    def touched(self) -> tuple[str, ...]:
        """Every path this change touches: a rename counts for its old and its new path."""
        if self.old_path is not None and self.old_path != self.path:
            return (self.path, self.old_path)
        return (self.path,)


class TreeEntry(NamedTuple):
    """A file as git stores it in a tree (or would, for a working-tree file)."""

    mode: str  # 100644, 100755, 120000 (symbolic link) or 160000 (submodule)
    oid: str
    path: str  # from the repository's root


class ChangeSet(NamedTuple):
    """The changed paths between ``base`` and ``head`` and why that base was chosen.

    ``base`` is ``None`` when head is compared against the empty tree (a root commit,
    or a new branch whose merge-base cannot be found): then everything at head changed.
    """

    base: str | None
    head: str
    base_reason: str
    changes: tuple[ChangedPath, ...]


# ---------------------------------------------------------------------------
# Rules: the validated content of rules.toml
# ---------------------------------------------------------------------------

#: What a rule's ``do`` may say.
DIRECTIVE_KINDS: tuple[str, ...] = (
    "skip",
    "all",
    "test",
    "build_image",
    "upload_source",
    "compile_pipeline",
    "deploy_function",
    "retrain",
)

#: The kinds of planned actions (``retrain`` and ``all`` expand into these).
ACTION_KINDS: tuple[str, ...] = (
    "test",
    "build_image",
    "upload_source",
    "compile_pipeline",
    "deploy_function",
    "publish",
)

UnmatchedPolicy = Literal["all", "skip", "error"]


class Directive(NamedTuple):
    """A parsed ``do`` value: ``build_image:trainer`` is kind build_image, target trainer."""

    kind: str
    target: str | None = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


class Rule(NamedTuple):
    name: str
    patterns: tuple[str, ...]
    do: tuple[Directive, ...]
    line: int | None = None

    @property
    def is_skip(self) -> bool:
        return all(d.kind == "skip" for d in self.do)


class Component(NamedTuple):
    """A custom pipeline component built as a container image from ``context``."""

    name: str
    context: str
    dockerfile: str = "Dockerfile"
    build_args: tuple[tuple[str, str], ...] = ()


class ProjectSettings(NamedTuple):
    gcp_project: str | None = None
    region: str | None = None
    bucket: str | None = None
    registry: str | None = None
    topic: str | None = None
    #: where the tool keeps its own state in the bucket: <prefix>/ledger/, <prefix>/runs/
    prefix: str = "ct"


class DataSettings(NamedTuple):
    """New training data: an object finalized under ``prefix`` starts a run."""

    prefix: str | None = None
    bucket: str | None = None  # default: [project].bucket


class TestSettings(NamedTuple):
    command: tuple[str, ...]
    setup: str | None = None  # a shell line run before the command in a fresh build container
    image: str = "python:3.11-slim"  # the Cloud Build step image for the test step


class PipelineSettings(NamedTuple):
    dir: str = "pipeline"
    #: argv that compiles the spec; the orchestrator appends --image NAME=URI ... --output FILE
    compile: tuple[str, ...] = ("python", "-m", "pipeline.compile")
    params: str = "pipeline/params.toml"  # hyper-parameters published with each run


class SourceSettings(NamedTuple):
    dir: str = "training_src"  # uploaded as a tarball, not baked into an image


class FunctionSettings(NamedTuple):
    """The trigger function and the resources it is deployed with (``gcloud functions deploy``).

    The defaults are what the function in ``function/`` needs: its imports alone take about
    200 MiB (the platform's default is 256 MB), a Vertex AI or Kubeflow submission fits well
    within 540 s (the most an event-driven function may run), and only Pub/Sub, through
    Eventarc, ever calls it (``internal-only`` ingress admits that, and nothing from outside).
    """

    dir: str = "function"
    name: str = "ct-trigger"
    entry_point: str = "on_message"
    runtime: str = "python311"
    service_account: str | None = None
    #: --trigger-service-account: what Eventarc calls the function as (it needs Cloud Run
    #: Invoker); unset, Eventarc uses the Compute Engine default service account
    trigger_service_account: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    memory: str = "512Mi"  # --memory: <number><k|M|G|Ki|Mi|Gi>, 128Mi to 32Gi
    timeout: str = "540s"  # --timeout: 1s to 540s
    max_instances: int = 10  # --max-instances: bounds the cost of a burst of messages
    min_instances: int = 0  # --min-instances: 0 keeps no idle instance
    ingress: str = "internal-only"  # --ingress-settings: all | internal-only | internal-and-gclb
    vpc_connector: str | None = None  # --vpc-connector: a connector's id or full name
    egress: str | None = None  # --egress-settings (with a connector): private-ranges-only | all


class BuildSettings(NamedTuple):
    """Cloud Build options for the emitted build."""

    machine_type: str | None = None
    logging: str = "CLOUD_LOGGING_ONLY"  # a BuildOptions.LoggingMode name
    logs_bucket: str | None = None  # the Build's logsBucket: gs://<bucket>[/<path>]
    timeout: str = "3600s"
    service_account: str | None = None
    python_image: str = "python:3.11-slim"
    docker_image: str = "gcr.io/cloud-builders/docker"
    gcloud_image: str = "gcr.io/google.com/cloudsdktool/cloud-sdk:slim"
    #: what the python steps pip-install to get this tool (inside the build's /workspace)
    install: str = ".[cloud,workload]"
    #: secret environment variables, (NAME, Secret Manager version name) sorted by name: the
    #: steps that run the repository's own commands get them (``orchestrator.secrets``)
    secret_env: tuple[tuple[str, str], ...] = ()


class Rules(NamedTuple):
    """rules.toml, validated. ``source`` is the file it came from (for messages)."""

    source: str
    version: int
    project: ProjectSettings
    unmatched: UnmatchedPolicy
    components: tuple[Component, ...]
    rules: tuple[Rule, ...]
    test: TestSettings | None = None
    pipeline: PipelineSettings = PipelineSettings()
    training_source: SourceSettings = SourceSettings()
    function: FunctionSettings = FunctionSettings()
    build: BuildSettings = BuildSettings()
    data: DataSettings = DataSettings()

    def component(self, name: str) -> Component | None:
        for c in self.components:
            if c.name == name:
                return c
        return None


# ---------------------------------------------------------------------------
# Matching: which rules a path hit, and through which pattern
# ---------------------------------------------------------------------------


class RuleHit(NamedTuple):
    """``rule`` matched a path; ``pattern`` is the pattern that decided (the last matching one)."""

    rule: str
    pattern: str


# ---------------------------------------------------------------------------
# Plan: the minimal, dependency-ordered set of actions, each with its reasons
# ---------------------------------------------------------------------------


class Reason(NamedTuple):
    """Why an action is planned: a changed path through a rule and pattern, or another action."""

    path: str | None = None
    rule: str | None = None
    pattern: str | None = None
    implied_by: str | None = None
    note: str | None = None
    #: how many changed paths it stands for: 1, except for what an ``all`` (a rule's, or
    #: ``[unmatched] do = "all"``) gives every action, which is one reason per rule and
    #: pattern with its first path (every path for every action would be paths x actions)
    path_count: int = 1


def reason_group(reason: Reason) -> tuple[str | None, ...]:
    """What reasons are summarised by (the JSON plan) and counted by (an ``all``): rule,
    pattern, implied_by and note; the path is the first of the group."""
    return reason[1:5]


class Action(NamedTuple):
    id: str
    kind: str
    target: str | None
    needs: tuple[str, ...]
    reasons: tuple[Reason, ...]


class Skipped(NamedTuple):
    """A changed path that causes nothing: it matched only skip rules, or (``note`` says
    why) a build_image rule whose image it cannot change."""

    path: str
    rule: str
    note: str | None = None


class Existing(NamedTuple):
    """An action the plan does not need, because what it would make is already there."""

    id: str  # the action: build_image:<c>, upload_source, compile_pipeline, deploy_function...
    artifact: str  # what is there: a URI, an image by digest, a run id
    note: str  # why that makes the action unnecessary, for the user


class Plan(NamedTuple):
    """The output of planning. ``actions`` are in dependency order (a stable topological sort)."""

    base: str | None
    head: str
    base_reason: str
    changes: tuple[ChangedPath, ...]
    actions: tuple[Action, ...]
    skipped: tuple[Skipped, ...] = ()
    unmatched: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: actions dropped because their artifacts exist (filled in by ``finishing``)
    existing: tuple[Existing, ...] = ()

    @property
    def has_work(self) -> bool:
        return bool(self.actions)

    def action(self, action_id: str) -> Action | None:
        for a in self.actions:
            if a.id == action_id:
                return a
        return None
