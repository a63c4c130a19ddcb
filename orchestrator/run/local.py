"""The local executor: run a plan's actions on this machine.

``execute(plan, run_step)`` is the generic part (dvc-style: it takes the step function as a
parameter): actions run in dependency order, independent ones concurrently on a small thread
pool; a failed step marks everything that needs it (directly or not) ``skipped``; ``publish``
starts only after every other action has finished, and never after a failure.

``run_local(...)`` wires it to the real steps (``run.steps``) and the services chosen
(``orchestrator.services``): by default the directory bucket ``<repo>/.orchestrator/bucket``,
and a ``publish`` that hands the message to ``function/main.py`` in this process, which runs
the pipeline with kfp.local.

Secrets (``[build] secret_env``) come from this process's environment: a run that needs one
the environment lacks stops before any step runs (exit 2, naming it). Only the steps that get
them on Cloud Build (``secrets.RECEIVES_SECRETS``) see them here, and every line, message and
report the run produces has their values redacted.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from orchestrator import message as message_schema
from orchestrator import secrets
from orchestrator.artifacts import Artifacts
from orchestrator.errors import InputError, OrchestratorError
from orchestrator.model import Action, Plan, Rules
from orchestrator.output import Redactor, wants_rich
from orchestrator.run import steps
from orchestrator.run.report import PipelineRun, RunReport, StepReport, StepStatus, overall_status
from orchestrator.services import STATE_DIR, Services
from orchestrator.trees import check_confined_on_disk

WORKERS = 2

StepRunner = Callable[[Action], steps.StepOutcome]


class Progress(Protocol):
    """Where the executor reports what happens (called from worker threads)."""

    def started(self, action: Action) -> None: ...

    def log(self, action_id: str, line: str) -> None: ...

    def finished(self, step: StepReport) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Done:
    report: StepReport
    outcome: steps.StepOutcome | None


def execute(
    plan: Plan,
    run_step: StepRunner,
    *,
    progress: Progress | None = None,
    workers: int = WORKERS,
    clock: Callable[[], float] = time.monotonic,
    redact: Callable[[str], str] = lambda text: text,
) -> RunReport:
    """Run ``plan``'s actions with ``run_step``; return the report (steps in plan order).

    Every step's message (what it did, or its error) passes through ``redact`` before it is
    shown or reported."""
    if not plan.actions:
        return RunReport(status="nothing-to-do")
    shown = progress or NullProgress()
    actions = {a.id: a for a in plan.actions}
    done: dict[str, _Done] = {}
    running: dict[Future[_Done], str] = {}

    def perform(action: Action) -> _Done:
        start = clock()
        status: StepStatus = "succeeded"
        outcome: steps.StepOutcome | None = None
        try:
            outcome = run_step(action)
            message = outcome.message
            if outcome.error:
                status, message = "failed", outcome.error
        except OrchestratorError as exc:
            status, message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in one step must not hide the others
            status, message = "failed", f"internal error: {type(exc).__name__}: {exc}"
        report = StepReport(action.id, status, clock() - start, redact(message))
        shown.finished(report)
        return _Done(report, outcome)

    def skip(action_id: str, why: str) -> None:
        report = StepReport(action_id, "skipped", 0.0, why)
        done[action_id] = _Done(report, None)
        shown.finished(report)

    def failed_any() -> bool:
        return any(d.report.status == "failed" for d in done.values())

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ct-step") as pool:
        while len(done) < len(actions):
            progressed = False
            for action in plan.actions:
                if action.id in done or action.id in running.values():
                    continue
                blocked = [
                    n for n in action.needs if n in done and done[n].report.status != "succeeded"
                ]
                if blocked:
                    skip(action.id, f"{blocked[0]} {done[blocked[0]].report.status}")
                    progressed = True
                    continue
                if not all(n in done for n in action.needs if n in actions):
                    continue
                if action.kind == "publish":
                    others = [a for a in actions if a != action.id]
                    if not all(o in done for o in others):
                        continue  # publish goes last, after everything
                    if failed_any():
                        first = next(d for d in done.values() if d.report.status == "failed")
                        skip(action.id, f"not published: {first.report.id} failed")
                        progressed = True
                        continue
                shown.started(action)
                running[pool.submit(perform, action)] = action.id
                progressed = True
            if progressed:
                continue
            if not running:  # cannot happen with a topologically sorted plan; never hang
                for action in plan.actions:
                    if action.id not in done:
                        skip(action.id, "its dependencies never finished")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                action_id = running.pop(future)
                done[action_id] = future.result()
    shown.close()

    reports = tuple(done[a.id].report for a in plan.actions)
    published = None
    pipeline_run: PipelineRun | None = None
    for item in done.values():
        if item.outcome is not None and item.outcome.published is not None:
            published = item.outcome.published
        if item.outcome is not None and item.outcome.pipeline_run is not None:
            pipeline_run = item.outcome.pipeline_run
    return RunReport(
        status=overall_status(reports),
        steps=reports,
        published=published,
        pipeline_run=pipeline_run,
    )


# --- the embedded local default ----------------------------------------------------------


def run_local(
    repo: Path,
    rules: Rules,
    plan: Plan,
    artifacts: Artifacts,
    services: Services,
    *,
    progress: Progress | None = None,
    workers: int = WORKERS,
    reason: message_schema.Reason = "commit",
) -> RunReport:
    """Run ``plan`` here with the real steps, against ``services``.

    Raises ``InputError`` before any step runs when a secret the plan needs is not in the
    environment, or when a path rules.toml names leads out of the repository on disk."""
    env = services.env()
    shown = progress or NullProgress()
    try:
        secrets.require(rules, plan, env)
        check_confined_on_disk(repo, rules)  # the disk may differ from the commit planned
    except InputError:
        shown.close()  # a live display would otherwise keep the terminal
        raise
    redactor = Redactor(secrets.values(rules, env))
    outputs = repo / STATE_DIR / "outputs"
    if outputs.exists():
        shutil.rmtree(outputs)  # a digest from an earlier run must not leak into this one
    mode: steps.PublishMode = "in-process" if services.publish == "in-process" else "pubsub"

    def run_step(action: Action) -> steps.StepOutcome:
        ctx = steps.StepContext(
            repo=repo,
            rules=rules,
            artifacts=artifacts,
            env=secrets.step_env(rules, action.kind, env),
            publish_mode=mode,
            plan=plan,
            log=lambda line: shown.log(action.id, redactor.redact(line)),
            reason=reason,
            redact=redactor.redact,
        )
        return steps.run_step(action, ctx)

    report = execute(plan, run_step, progress=shown, workers=workers, redact=redactor.redact)
    return report.redacted(redactor)


# --- progress ----------------------------------------------------------------------------


class NullProgress:
    def started(self, action: Action) -> None:
        pass

    def log(self, action_id: str, line: str) -> None:
        pass

    def finished(self, step: StepReport) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """One line per event, for CI logs and pipes. ``verbose`` also prints the steps' output."""

    def __init__(self, stream: IO[str], *, verbose: bool = False) -> None:
        self._stream = stream
        self._verbose = verbose
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def started(self, action: Action) -> None:
        self._write(f"[{action.id}] started")

    def log(self, action_id: str, line: str) -> None:
        if self._verbose and line.strip():
            self._write(f"[{action_id}] {line}")

    def finished(self, step: StepReport) -> None:
        detail = f": {step.message}" if step.message else ""
        self._write(f"[{step.id}] {step.status} in {step.seconds:.1f}s{detail}")

    def close(self) -> None:
        pass


class RichProgress:
    """A live spinner per running step, with its latest output line, for a terminal."""

    def __init__(self, console: Any) -> None:
        from rich.progress import Progress as RichBar
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        self._console = console
        self._bar = RichBar(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[step]}[/bold]"),
            TextColumn("{task.description}", markup=False),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._bar.start()

    def started(self, action: Action) -> None:
        with self._lock:
            self._tasks[action.id] = self._bar.add_task("started", total=None, step=action.id)

    def log(self, action_id: str, line: str) -> None:
        text = line.strip()
        with self._lock:
            task = self._tasks.get(action_id)
            if task is not None and text:
                self._bar.update(task, description=text[:100])

    def finished(self, step: StepReport) -> None:
        marks = {
            "succeeded": "[green]✔[/green]",
            "failed": "[red]✘[/red]",
            "skipped": "[dim]-[/dim]",
        }
        with self._lock:
            task = self._tasks.pop(step.id, None)
            if task is not None:
                self._bar.remove_task(task)
            detail = f"  [dim]{_escape(step.message)}[/dim]" if step.message else ""
            self._bar.console.print(
                f"{marks[step.status]} {step.id} {step.status} in {step.seconds:.1f}s{detail}"
            )

    def close(self) -> None:
        self._bar.stop()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def make_progress(stream: IO[str], env: Mapping[str, str]) -> Progress:
    """Rich progress in a terminal, plain lines when not a TTY or under CI (``CI`` set)."""
    if wants_rich(stream, env) and not env.get("CI"):
        from orchestrator.output import make_console

        return RichProgress(make_console(stream))
    return PlainProgress(stream, verbose=bool(env.get("CI")))
