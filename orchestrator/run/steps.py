"""One function per action kind: what each step of a build does.

Shared by the local executor (``run.local``) and by ``python -m orchestrator step``, which is
what the emitted Cloud Build build runs for ``upload_source``, ``compile_pipeline`` and
``publish``: both executors perform exactly the same steps.

Steps hand results to later steps through files under ``<repo>/.orchestrator/outputs/``
(``emit.cloudbuild.output_file``): a ``build_image`` step writes ``{"image": "<repo>@sha256:..."}``
and ``compile_pipeline`` and ``publish`` use that digest reference when this build produced one,
else the component's content tag (an image an earlier build made from the same inputs).

Every step raises an ``OrchestratorError`` (one sentence) when it fails. Heavy clients (docker,
google-cloud, kfp) are imported inside the adapters and the function, never at import time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from orchestrator import message as message_schema
from orchestrator import objects, shipped
from orchestrator.adapters import docker as docker_adapter
from orchestrator.adapters import process, pubsub, storage
from orchestrator.artifacts import Artifacts
from orchestrator.contexts import context_path
from orchestrator.emit.cloudbuild import output_file
from orchestrator.errors import (
    ConfigError,
    InputError,
    OrchestratorError,
    ServiceUnreachable,
    StepFailed,
)
from orchestrator.model import Action, Plan, Rules
from orchestrator.run.report import PipelineRun
from orchestrator.trees import inside_repository

STATE_DIR = ".orchestrator"
PIPELINE_ROOT_DIR = f"{STATE_DIR}/pipeline-root"
FUNCTION_STAGE_DIR = f"{STATE_DIR}/function"
#: ``RUN`` network mode for local image builds (an engine without a bridge needs host or none)
DOCKER_NETWORK_VAR = "ORCHESTRATOR_DOCKER_NETWORK"

#: ``pubsub``: publish to [project].topic (real Pub/Sub, or the emulator when
#: PUBSUB_EMULATOR_HOST is set); ``in-process``: hand the message to function/main.py here.
PublishMode = Literal["pubsub", "in-process"]
Log = Callable[[str], None]


@dataclass(frozen=True)
class StepContext:
    """Everything a step reads: the checkout, the rules, the artifact names, the environment."""

    repo: Path
    rules: Rules
    artifacts: Artifacts
    env: Mapping[str, str]
    publish_mode: PublishMode = "pubsub"
    #: the plan being run, for the publish message's action summaries (None: not known here)
    plan: Plan | None = None
    log: Log = field(default=lambda _line: None)
    #: why the run is wanted: commit (a build), or manual / schedule / data (``trigger``)
    reason: message_schema.Reason = "commit"
    #: replaces secret values (``output.Redactor.redact``) in what a command printed, before
    #: it is split into lines or cut to its last line (a value may span lines)
    redact: Callable[[str], str] = field(default=lambda text: text)

    def outputs_dir(self) -> Path:
        return self.repo / STATE_DIR / "outputs"


@dataclass(frozen=True)
class StepOutcome:
    """What a step did. ``error`` set means the step ran but its result is a failure."""

    message: str = ""
    published: Mapping[str, Any] | None = None
    pipeline_run: PipelineRun | None = None
    error: str | None = None


StepFunction = Callable[[Action, StepContext], StepOutcome]


# --- test --------------------------------------------------------------------------------


def run_test(action: Action, ctx: StepContext) -> StepOutcome:
    """The [test] command in the repository (not [test].setup: that is for fresh containers)."""
    test = ctx.rules.test
    if test is None:
        raise ConfigError("the plan has a test step but no [test] command", file=ctx.rules.source)
    argv = python_argv(test.command)
    # the repository's tests get the caller's environment, not the run's directory bucket
    env = {k: v for k, v in ctx.env.items() if k != objects.LOCAL_BUCKET_ROOT_VAR}
    completed = process.run(argv, cwd=ctx.repo, env=env, check=False)
    stdout, stderr = _shown(completed.stdout, ctx), _shown(completed.stderr, ctx)
    for line in (stdout + stderr).splitlines():
        ctx.log(line)
    if completed.returncode != 0:
        detail = _last_line(stdout) or _last_line(stderr)
        raise StepFailed(
            f"the test command '{' '.join(test.command)}' failed with exit code "
            f"{completed.returncode}" + (f": {detail}" if detail else "")
        )
    return StepOutcome(message=_last_line(stdout) or "tests passed")


def _shown(output: bytes, ctx: StepContext) -> str:
    """A command's output as it may be shown: decoded, secrets redacted."""
    return ctx.redact(output.decode("utf-8", "replace"))


def _last_line(text: str) -> str:
    """The last non-empty line of ``text``, stripped (``process.last_line`` on decoded text)."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def python_argv(argv: tuple[str, ...] | list[str]) -> list[str]:
    """``python ...`` in rules.toml means the interpreter running this tool.

    In a Cloud Build step this tool runs from a virtualenv that is not on PATH, so a bare
    ``python`` would be the image's interpreter, without the project installed.
    """
    argv = list(argv)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


# --- build_image -------------------------------------------------------------------------


def build_image(action: Action, ctx: StepContext) -> StepOutcome:
    """docker build and push to the artifact's content tag; record the digest reference."""
    component = ctx.rules.component(action.target or "")
    if component is None:
        raise ConfigError(f"unknown component {action.target!r}", file=ctx.rules.source)
    image = ctx.artifacts.image(component.name)
    where = f"[components.{component.name}]"
    context = inside_repository(ctx.repo, component.context, f"{where} context")
    inside_repository(ctx.repo, context_path(component.context, component.dockerfile),
                      f"{where} dockerfile")  # fmt: skip
    try:
        pinned = docker_adapter.build_and_push(
            context,
            component.dockerfile,
            image,
            dict(component.build_args),
            env=ctx.env,
            on_log=ctx.log,
            network_mode=ctx.env.get(DOCKER_NETWORK_VAR) or None,
        )
    except ServiceUnreachable as exc:
        raise StepFailed(f"{action.id} needs a Docker engine: {exc}") from exc
    out = ctx.repo / output_file(action.id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"image": pinned}) + "\n", encoding="utf-8")
    return StepOutcome(message=f"pushed {pinned}")


def built_image(ctx: StepContext, component: str) -> str | None:
    """The digest reference this build recorded for ``component``, if it built it."""
    path = ctx.repo / output_file(f"build_image:{component}")
    if not path.is_file():
        return None
    try:
        image = json.loads(path.read_text(encoding="utf-8"))["image"]
    except (ValueError, KeyError, TypeError):
        raise StepFailed(f"{path} is not a valid build_image output") from None
    if not isinstance(image, str) or "@sha256:" not in image:
        raise StepFailed(f"{path} does not hold an image digest reference")
    return image


def image_refs(ctx: StepContext) -> dict[str, str]:
    """Every component's image: built here (by digest), else its content tag."""
    return {name: built_image(ctx, name) or tag for name, tag in ctx.artifacts.images}


# --- upload_source -----------------------------------------------------------------------


def upload_source(action: Action, ctx: StepContext) -> StepOutcome:
    """A deterministic tarball of [source].dir to its immutable, content-addressed URI."""
    source = inside_repository(ctx.repo, ctx.rules.training_source.dir, "[source] dir")
    if not source.is_dir():
        raise StepFailed(
            f"the training source directory {ctx.rules.training_source.dir} is missing"
        )
    # The tarball unpacks to <dir name>/... (the train step runs `python -m <dir name>`).
    with tempfile.TemporaryDirectory(prefix="ct-source-") as tmp:
        top = Path(tmp) / (source.resolve().name or "source")
        shutil.copytree(source, top, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        tarball = storage.build_source_tarball(Path(tmp))
    result = storage.upload_bytes(
        ctx.artifacts.source_uri, tarball.data, env=ctx.env, content_type="application/gzip"
    )
    where = storage.describe_location(result.uri, ctx.env)
    if result.created:
        return StepOutcome(
            message=f"uploaded the training source ({tarball.files} files) to {where}"
        )
    return StepOutcome(message=f"the training source was already uploaded, unchanged: {where}")


# --- compile_pipeline --------------------------------------------------------------------


def compile_pipeline(action: Action, ctx: StepContext) -> StepOutcome:
    """Compile with the exact images of this build, then upload the spec immutably."""
    inside_repository(ctx.repo, ctx.rules.pipeline.dir, "[pipeline] dir")
    argv = python_argv(ctx.rules.pipeline.compile)
    for name, image in sorted(image_refs(ctx).items()):
        argv += ["--image", f"{name}={image}"]
    with tempfile.TemporaryDirectory(prefix="ct-compile-") as tmp:
        spec = Path(tmp) / "pipeline.yaml"
        completed = process.run([*argv, "--output", str(spec)], cwd=ctx.repo, env=ctx.env,
                                check=False)  # fmt: skip
        if completed.returncode != 0 or not spec.is_file():
            detail = _last_line(_shown(completed.stderr, ctx)) or _last_line(
                _shown(completed.stdout, ctx)
            )
            raise StepFailed(
                f"compiling the pipeline ('{' '.join(ctx.rules.pipeline.compile)}') failed"
                + (f": {detail}" if detail else f" with exit code {completed.returncode}")
            )
        data = spec.read_bytes()
    try:
        result = storage.upload_bytes(
            ctx.artifacts.spec_uri, data, env=ctx.env, content_type="application/yaml"
        )
    except storage.ObjectConflict:
        # The name is a hash of the inputs (pipeline files, compile argv, image tags): an object
        # already there was compiled from the same inputs, perhaps with other image digests.
        return StepOutcome(
            message="kept the existing spec, an earlier compile of the same inputs (the new one "
            "differs only in what the same inputs built): "
            + storage.describe_location(ctx.artifacts.spec_uri, ctx.env)
        )
    where = storage.describe_location(result.uri, ctx.env)
    if result.created:
        return StepOutcome(message=f"uploaded the compiled pipeline to {where}")
    return StepOutcome(message=f"the compiled pipeline was already uploaded, unchanged: {where}")


# --- deploy_function ---------------------------------------------------------------------


def deploy_function(action: Action, ctx: StepContext) -> StepOutcome:
    """Locally: stage the function as it would be deployed (Cloud Build runs gcloud instead).

    ``<repo>/.orchestrator/function/`` gets the function directory plus the modules it shares
    with this package (``orchestrator.shipped``), which the deployed function imports.
    """
    source = inside_repository(ctx.repo, ctx.rules.function.dir, "[function] dir")
    if not (source / "main.py").is_file():
        raise StepFailed(f"{ctx.rules.function.dir}/main.py does not exist: nothing to deploy")
    stage = ctx.repo / FUNCTION_STAGE_DIR
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(source, stage, ignore=shutil.ignore_patterns("__pycache__"))
    shipped.copy_into(stage)
    return StepOutcome(message=f"staged the function in {FUNCTION_STAGE_DIR}/")


# --- publish -----------------------------------------------------------------------------


def publish(action: Action, ctx: StepContext) -> StepOutcome:
    """Publish the run request; with ``in-process``, run it through function/main.py here."""
    spec_uri = ctx.artifacts.spec_uri
    try:
        storage.download_bytes(spec_uri, env=ctx.env)
    except storage.ObjectNotFound:
        raise StepFailed(
            "no compiled pipeline exists for these inputs, "
            f"{storage.describe_location(spec_uri, ctx.env)} is missing; "
            "compile it once by running a build that includes compile_pipeline, for example "
            "with a base before the pipeline's last change (--base) or a commit that touches "
            "rules.toml (which plans all)"
        ) from None
    return send(ctx, build_message(ctx))


def send(ctx: StepContext, msg: message_schema.PublishMessage) -> StepOutcome:
    """Publish ``msg`` to the topic, or hand it to the function in this process."""
    try:  # encode validates as the function will: never publish what it would reject
        encoded = message_schema.encode(msg)
    except message_schema.MessageError as exc:
        # Everything in the request comes from the artifacts (step --artifacts) or the
        # checkout and its CI environment (the ref): the input is at fault, not the tool.
        raise InputError(f"cannot publish the run request these artifacts make: {exc}") from exc
    published = message_schema.to_json_dict(msg)
    if ctx.publish_mode == "pubsub":
        project, topic = ctx.rules.project.gcp_project, ctx.rules.project.topic
        if not project or not topic:
            raise ConfigError(
                "[project] gcp_project and topic are required to publish",
                file=ctx.rules.source,
                key="project.topic" if project else "project.gcp_project",
            )
        message_id = pubsub.publish(
            project, topic, encoded.data, encoded.attributes, encoded.ordering_key, env=ctx.env
        )
        return StepOutcome(
            message=f"published message {message_id} to projects/{project}/topics/{topic}",
            published=published,
        )
    return _run_in_process(ctx, encoded, published)


def build_message(ctx: StepContext) -> message_schema.PublishMessage:
    """The run request for this build's artifacts. Every publish gets its own request id (a
    redelivery keeps it) and asks to retry a state whose last run failed or was interrupted:
    the tool publishes only when a run is wanted."""
    artifacts = ctx.artifacts
    return message_schema.PublishMessage(
        commit=artifacts.commit,
        ref=artifacts.ref,
        pipeline_spec_uri=artifacts.spec_uri,
        source_uri=artifacts.source_uri,
        images=image_refs(ctx),
        parameters=dict(artifacts.parameters),
        actions=action_summaries(ctx.plan),
        data_uri=artifacts.data_uri,
        data_version=artifacts.data_version,
        reason=ctx.reason,
        request_id=uuid.uuid4().hex,
        retry=True,
    )


def action_summaries(plan: Plan | None) -> tuple[message_schema.ActionSummary, ...]:
    if plan is None:
        return (message_schema.ActionSummary("publish", "requested by the build"),)
    from orchestrator.render import summarize_reasons

    return tuple(
        message_schema.ActionSummary(a.id, "; ".join(summarize_reasons(a, limit=2))[:300])
        for a in plan.actions
    )


def _run_in_process(
    ctx: StepContext, encoded: message_schema.EncodedMessage, published: Mapping[str, Any]
) -> StepOutcome:
    """The embedded local default: the function's ``handle_message`` with the local backend."""
    function_dir = inside_repository(ctx.repo, ctx.rules.function.dir, "[function] dir")
    function = load_function(function_dir / "main.py")
    pipeline_root = ctx.repo / PIPELINE_ROOT_DIR
    config = function.Config.from_env(
        {
            "CT_BUCKET": ctx.artifacts.bucket,
            "CT_BACKEND": "local",
            "CT_PIPELINE_ROOT": str(pipeline_root),
            "CT_STATE_PREFIX": ctx.rules.project.prefix,
            "CT_ALLOW_LOCAL_DATA": "true",  # trigger --data FILE, on this machine
        }
    )
    ctx.log("running the pipeline locally (function/main.py, local backend)")
    # kfp.local prints the tasks' logs to sys.stdout: route them to this step's log instead,
    # so they reach the progress display (and never the JSON report on stdout). Publish runs
    # alone, after every other step, so nothing else writes to sys.stdout meanwhile.
    lines = _LineWriter(ctx.log)
    try:
        with contextlib.redirect_stdout(lines):
            result = function.handle_message(encoded.data, encoded.attributes, config, ctx.env)
    except function.MessageError as exc:
        raise StepFailed(f"the trigger function rejected the message: {exc}") from exc
    finally:
        lines.flush()
    run = PipelineRun(
        status=str(result.status),
        metrics={k: float(v) for k, v in result.metrics.items() if _is_number(v)},
        run_id=str(result.run_id),
    )
    if result.status == "failed":
        return StepOutcome(
            message=f"pipeline run {result.run_id} failed",
            published=published,
            pipeline_run=run,
            error=f"the pipeline run {result.run_id} failed: "
            + (_plain(str(result.detail)) or "no detail"),
        )
    if result.status == "duplicate":
        text = f"pipeline run {result.run_id} already ran for these inputs ({result.detail})"
    else:
        text = f"pipeline run {result.run_id} {result.status}"
    return StepOutcome(message=text, published=published, pipeline_run=run)


class _LineWriter(io.TextIOBase):
    """A text stream that hands each complete line to ``sink`` (ANSI colours removed)."""

    def __init__(self, sink: Log) -> None:
        self._sink = sink
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *complete, self._pending = (self._pending + text).split("\n")
        for line in complete:
            self._sink(_plain(line))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._sink(_plain(self._pending))
            self._pending = ""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(text: str) -> str:
    return _ANSI.sub("", text).rstrip()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_function(path: Path) -> Any:
    """Import the repository's function/main.py by path (it is not a package)."""
    if not path.is_file():
        raise StepFailed(f"{path} does not exist: no trigger function to hand the run to")
    name = f"_ct_function_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StepFailed(f"cannot import {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while being created
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        del sys.modules[name]
        raise StepFailed(
            f"cannot import {path}: {exc} (install the workload: pip install -e '.[workload]')"
        ) from exc
    except BaseException:
        del sys.modules[name]
        raise
    return module


# --- dispatch ----------------------------------------------------------------------------

STEPS: dict[str, StepFunction] = {
    "test": run_test,
    "build_image": build_image,
    "upload_source": upload_source,
    "compile_pipeline": compile_pipeline,
    "deploy_function": deploy_function,
    "publish": publish,
}


def run_step(action: Action, ctx: StepContext) -> StepOutcome:
    """Perform ``action``. Raises ``OrchestratorError`` (one sentence) when it fails."""
    step = STEPS.get(action.kind)
    if step is None:
        raise OrchestratorError(f"no step performs actions of kind {action.kind!r}")
    return step(action, ctx)


def action_from_id(action_id: str) -> Action:
    """``build_image:trainer`` -> an Action (for the step command, which has no plan)."""
    kind, _, target = action_id.partition(":")
    if kind not in STEPS or (kind == "build_image") != bool(target):
        raise InputError(
            f"unknown action {action_id!r}: expected one of "
            "test, build_image:<component>, upload_source, compile_pipeline, deploy_function, "
            "publish"
        )
    return Action(id=action_id, kind=kind, target=target or None, needs=(), reasons=())
