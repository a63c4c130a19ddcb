"""The ``cloudbuild`` executor: run the emitted build on Cloud Build and follow it to the end.

The same plan and the same emitted steps as ``orchestrator emit`` (and, step for step, as the
local executor). Cloud Build runs the steps in ``/workspace``, so the build needs the
repository as its source: the checked-out working tree (which must be at the plan's head,
unless ``--working-tree``) is packed as a deterministic tarball and uploaded with the storage
adapter to ``gs://<bucket>/cloudbuild-source/<sha256>.tar.gz``, the way ``gcloud builds
submit`` does it.

Project and region come from rules.toml ``[project]``, overridden by ``ORCHESTRATOR_PROJECT``
/ ``ORCHESTRATOR_REGION`` (which the ``run`` command's ``--project`` / ``--region`` set).
``ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS`` sets how often the build is polled (default 5).

The build id and log URL are printed as soon as the build exists, then each step's status as
it changes: plain lines when the stream is not a terminal, coloured ones when it is. Nothing
printed comes from credentials: only ids, statuses, URLs and Cloud Build's status detail.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import IO, Any

from orchestrator.artifacts import Artifacts
from orchestrator.errors import ConfigError, InputError
from orchestrator.model import Plan, Rules
from orchestrator.output import wants_rich
from orchestrator.run.report import BuildInfo, RunReport, StepReport, StepStatus
from orchestrator.workflow import Target, open_checkout

POLL_VAR = "ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 5.0
DEFAULT_REGION = "global"
SOURCE_PREFIX = "cloudbuild-source"
#: Never sent as build source: local state, caches, the repository's own metadata.
SOURCE_EXCLUDES = frozenset(
    {".git", ".orchestrator", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
     ".hypothesis", ".venv", "node_modules"}
)  # fmt: skip

_FAILED_STEP_STATUSES = frozenset({"FAILURE", "INTERNAL_ERROR", "TIMEOUT"})
_STYLES = {"SUCCESS": "green", "WORKING": "cyan", "QUEUED": "dim"}


def run_cloudbuild(
    target: Target,
    rules: Rules,
    plan: Plan,
    artifacts: Artifacts,
    build: Mapping[str, Any] | None,
    env: Mapping[str, str],
    stream: IO[str],
) -> RunReport:
    """Submit ``build`` (``emit_build``'s output for ``plan``) and wait for it to finish."""
    if build is None or not plan.actions:
        return RunReport(status="nothing-to-do")
    from orchestrator.adapters import cloudbuild

    project, region = _location(rules)
    poll = _poll_seconds(env)
    printer = _Printer(stream, env)
    config = {**build, "source": _upload_source(target, plan, artifacts, env, printer)}

    def submitted(record: cloudbuild.BuildRecord) -> None:
        printer.line(f"Cloud Build build {record.build_id} in {project}/{region}")
        printer.line(f"logs: {record.log_url}")

    final = cloudbuild.submit_build(
        project,
        region,
        config,
        env=env,
        on_submitted=submitted,
        on_status=printer.status,
        poll_interval=poll,
    )
    printer.finished(final)
    steps = tuple(_step_report(step, final) for step in final.steps)
    return RunReport(
        status="succeeded" if final.succeeded else "failed",
        steps=steps,
        build=BuildInfo(id=final.build_id, log_url=final.log_url or None),
    )


def _location(rules: Rules) -> tuple[str, str]:
    project = rules.project.gcp_project
    if not project:
        raise ConfigError(
            "[project] gcp_project is required for --executor cloudbuild "
            "(or pass --project, or set ORCHESTRATOR_PROJECT)",
            file=rules.source,
            key="project.gcp_project",
        )
    return project, rules.project.region or DEFAULT_REGION


def _poll_seconds(env: Mapping[str, str]) -> float:
    raw = env.get(POLL_VAR)
    if not raw:
        return DEFAULT_POLL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise InputError(f"{POLL_VAR} must be a number of seconds in (0, 600], not {raw!r}")
    return value


def _upload_source(
    target: Target, plan: Plan, artifacts: Artifacts, env: Mapping[str, str], printer: _Printer
) -> dict[str, Any]:
    """Pack the working tree at the plan's head and upload it; the build's ``source``."""
    from orchestrator.adapters import storage

    git = open_checkout(target.repo)
    if not target.working_tree and git is not None:  # without git the files are the commit's
        checked_out = git.read_commit("HEAD")
        if checked_out is None or checked_out.sha != plan.head:
            raise InputError(
                f"--executor cloudbuild sends the checked-out files as the build source, but "
                f"{target.repo} is not at {plan.head[:12]}: check out the head first "
                "(or use --working-tree)"
            )
    tarball = storage.build_source_tarball(target.repo, exclude_names=SOURCE_EXCLUDES)
    key = f"{SOURCE_PREFIX}/{tarball.sha256}.tar.gz"
    result = storage.upload_bytes(
        f"gs://{artifacts.bucket}/{key}", tarball.data, env=env, content_type="application/gzip"
    )
    printer.line(f"source ({tarball.files} files): {storage.describe_location(result.uri, env)}")
    return {"storageSource": {"bucket": artifacts.bucket, "object": key}}


def _step_report(step: Any, final: Any) -> StepReport:
    status: StepStatus
    if step.status == "SUCCESS":
        status, message = "succeeded", ""
    elif step.status in _FAILED_STEP_STATUSES:
        status, message = "failed", final.status_detail or step.status.lower()
    else:  # QUEUED, CANCELLED, ...: never ran, or was stopped because another step failed
        status, message = "skipped", f"not run ({step.status.lower()})"
    return StepReport(id=step.id or step.name, status=status, seconds=step.seconds or 0.0,
                      message=message)  # fmt: skip


class _Printer:
    """Build and step status lines, printed only when something changed."""

    def __init__(self, stream: IO[str], env: Mapping[str, str]) -> None:
        self._stream = stream
        self._console: Any = None
        if wants_rich(stream, env) and not env.get("CI"):
            from orchestrator.output import make_console

            self._console = make_console(stream)
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def line(self, text: str, style: str | None = None) -> None:
        with self._lock:
            if self._console is not None:
                from rich.text import Text

                self._console.print(Text(text, style=style or ""))
            else:
                self._stream.write(text + "\n")
                self._stream.flush()

    def status(self, record: Any) -> None:
        for key, label, status in [
            ("", "build", record.status),
            *((f"step:{s.id or s.name}", f"[{s.id or s.name}]", s.status) for s in record.steps),
        ]:
            if self._seen.get(key, "QUEUED" if key else "") != status:
                self._seen[key] = status
                self.line(f"{label} {status}", _STYLES.get(status, "red"))

    def finished(self, record: Any) -> None:
        self.status(record)
        if not record.succeeded:
            detail = f": {record.status_detail}" if record.status_detail else ""
            self.line(f"build {record.build_id} {record.status}{detail}", "bold red")
