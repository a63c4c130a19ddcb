"""The run report: what a run did, whichever executor ran it. Pure.

Both executors (``run.local`` and ``run.cloudbuild``) return a ``RunReport``; the ``run``
command prints it as a table summary or, with ``--format json``, as::

    {"status": "succeeded" | "failed" | "nothing-to-do",
     "steps": [{"id": ..., "status": ..., "seconds": ...}],
     "published": {...} | null,
     "pipeline_run": {"status": ..., "metrics": {...}} | null}

plus ``"build": {"id": ..., "log_url": ...}`` when a Cloud Build build ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from orchestrator.model import Existing
from orchestrator.output import Redactor

RunStatus = Literal["succeeded", "failed", "nothing-to-do"]
#: ``skipped``: not run because a step it needs failed (or was skipped).
StepStatus = Literal["succeeded", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class StepReport:
    id: str
    status: StepStatus
    seconds: float
    #: one line for the user: what the step did, or why it failed or was skipped
    message: str = ""


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """The pipeline run the embedded local default started (``function/`` in-process)."""

    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """The Cloud Build build that ran the steps (``--executor cloudbuild``)."""

    id: str
    log_url: str | None = None


@dataclass(frozen=True, slots=True)
class RunReport:
    status: RunStatus
    steps: tuple[StepReport, ...] = ()
    #: the publish message's data as sent (``PublishMessage`` as JSON), or None
    published: Mapping[str, Any] | None = None
    pipeline_run: PipelineRun | None = None
    build: BuildInfo | None = None
    #: what the plan found already done (the finished plan's ``existing``)
    existing: tuple[Existing, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def step(self, step_id: str) -> StepReport | None:
        for s in self.steps:
            if s.id == step_id:
                return s
        return None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "steps": [
                {"id": s.id, "status": s.status, "seconds": round(s.seconds, 3)} for s in self.steps
            ],
            "published": dict(self.published) if self.published is not None else None,
            "pipeline_run": (
                {"status": self.pipeline_run.status, "metrics": dict(self.pipeline_run.metrics)}
                if self.pipeline_run is not None
                else None
            ),
        }
        if self.build is not None:
            data["build"] = {"id": self.build.id, "log_url": self.build.log_url}
        data["existing"] = [{"id": e.id, "artifact": e.artifact, "note": e.note}
                            for e in self.existing]  # fmt: skip
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def redacted(self, redactor: Redactor) -> RunReport:
        """This report with the secret values the redactor knows replaced in what steps and
        the pipeline run wrote into it: step messages, the published message, the run's
        status and id, what already existed."""
        if not redactor:
            return self
        text, run = redactor.redact, self.pipeline_run
        if run is not None:
            run = replace(run, status=text(run.status), run_id=redactor.redact_data(run.run_id))
        return replace(
            self,
            steps=tuple(replace(s, message=text(s.message)) for s in self.steps),
            published=redactor.redact_data(self.published),
            pipeline_run=run,
            existing=tuple(Existing(*map(text, e)) for e in self.existing),
        )


def overall_status(steps: tuple[StepReport, ...]) -> RunStatus:
    if not steps:
        return "nothing-to-do"
    return "succeeded" if all(s.status == "succeeded" for s in steps) else "failed"


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``accuracy 0.9722, f1 0.97``: sorted by name, four significant digits."""
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))


def summary_lines(report: RunReport) -> list[str]:
    """The plain-text summary printed at the end of a run (table format)."""
    if report.status == "nothing-to-do":
        trained = [e for e in report.existing if e.id == "publish"]
        if trained:  # a re-run or a revert: the run that already trained this state
            return [f"nothing to do: {trained[0].note}"]
        return ["nothing to do: the plan has no actions"]
    lines = []
    width = max((len(s.id) for s in report.steps), default=0)
    for s in report.steps:
        detail = f"  {s.message}" if s.message else ""
        lines.append(f"{s.id:<{width}}  {s.status:<9} {s.seconds:7.1f}s{detail}")
    if report.build is not None:
        log = f" ({report.build.log_url})" if report.build.log_url else ""
        lines.append(f"build {report.build.id}{log}")
    if report.published is not None:
        lines.append(f"published the run request for {report.published.get('commit', '?')}")
    if report.pipeline_run is not None:
        run = report.pipeline_run
        metrics = format_metrics(run.metrics)
        if run.status == "duplicate":  # the same commit and spec ran before: its result
            head = " ".join(filter(None, ("pipeline run", run.run_id, "already ran")))
            head += " for these inputs"
        else:
            head = f"pipeline run {run.status}"
        lines.append(head + (f": {metrics}" if metrics else ""))
    lines.append(f"run {report.status}")
    return lines
