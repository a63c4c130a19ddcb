"""run.local.execute with plain step functions: order, concurrency, skips, publish last."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import StepFailed
from orchestrator.model import Action, Plan
from orchestrator.run.local import PlainProgress, execute
from orchestrator.run.report import PipelineRun, RunReport, StepReport, summary_lines
from orchestrator.run.steps import StepOutcome
from orchestrator.services import Services


def plan_of(*actions: tuple[str, tuple[str, ...]]) -> Plan:
    return Plan(
        base=None,
        head="0" * 40,
        base_reason="test",
        changes=(),
        actions=tuple(
            Action(id=i, kind=i.split(":")[0], target=None, needs=needs, reasons=())
            for i, needs in actions
        ),
    )


FULL = plan_of(
    ("test", ()),
    ("build_image:a", ("test",)),
    ("build_image:b", ("test",)),
    ("upload_source", ("test",)),
    ("compile_pipeline", ("test", "build_image:a", "build_image:b")),
    ("publish", ("test", "upload_source", "compile_pipeline")),
)


class Recorder:
    def __init__(self, fail: Callable[[str], bool] = lambda _id: False) -> None:
        self.order: list[str] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, action: Action) -> StepOutcome:
        with self.lock:
            self.order.append(action.id)
        if self.fail(action.id):
            raise StepFailed(f"{action.id} broke")
        return StepOutcome(message=f"did {action.id}")


def statuses(report: RunReport) -> dict[str, str]:
    return {s.id: s.status for s in report.steps}


def test_runs_every_action_after_what_it_needs_and_publishes_last() -> None:
    recorder = Recorder()
    report = execute(FULL, recorder)
    assert report.status == "succeeded"
    assert set(statuses(report).values()) == {"succeeded"}
    position = {a: i for i, a in enumerate(recorder.order)}
    for action in FULL.actions:
        assert all(position[n] < position[action.id] for n in action.needs)
    assert recorder.order[-1] == "publish"
    assert [s.id for s in report.steps] == [a.id for a in FULL.actions]  # plan order


def test_independent_actions_run_concurrently() -> None:
    barrier = threading.Barrier(2, timeout=10)

    def step(action: Action) -> StepOutcome:
        if action.id.startswith("build_image"):
            barrier.wait()  # breaks (and fails the step) unless both builds run at once
        return StepOutcome()

    report = execute(FULL, step, workers=2)
    assert report.status == "succeeded", report.steps


def test_a_failure_skips_its_dependents_and_never_publishes() -> None:
    recorder = Recorder(fail=lambda i: i == "build_image:a")
    report = execute(FULL, recorder)
    assert report.status == "failed"
    assert statuses(report) == {
        "test": "succeeded",
        "build_image:a": "failed",
        "build_image:b": "succeeded",
        "upload_source": "succeeded",
        "compile_pipeline": "skipped",
        "publish": "skipped",
    }
    assert "publish" not in recorder.order
    step = report.step("build_image:a")
    assert step is not None and step.message == "build_image:a broke"
    skipped = report.step("compile_pipeline")
    assert skipped is not None and skipped.message == "build_image:a failed"


def test_a_failing_test_step_runs_nothing_else() -> None:
    recorder = Recorder(fail=lambda i: i == "test")
    report = execute(FULL, recorder)
    assert recorder.order == ["test"]
    assert statuses(report) == {a.id: "skipped" for a in FULL.actions} | {"test": "failed"}


def test_publish_never_runs_after_a_failure_it_does_not_need() -> None:
    plan = plan_of(("deploy_function", ()), ("upload_source", ()), ("publish", ("upload_source",)))
    recorder = Recorder(fail=lambda i: i == "deploy_function")
    report = execute(plan, recorder)
    assert statuses(report)["publish"] == "skipped"
    step = report.step("publish")
    assert step is not None and "deploy_function failed" in step.message


def test_an_unexpected_exception_fails_the_step_with_its_type() -> None:
    def step(action: Action) -> StepOutcome:
        raise KeyError("boom")

    report = execute(plan_of(("test", ())), step)
    assert report.steps[0].status == "failed"
    assert report.steps[0].message == "internal error: KeyError: 'boom'"


def test_an_outcome_with_an_error_is_a_failure_that_keeps_what_was_published() -> None:
    def step(action: Action) -> StepOutcome:
        return StepOutcome(message="ran", published={"commit": "c"}, error="the run failed")

    report = execute(plan_of(("publish", ())), step)
    assert report.status == "failed"
    assert report.published == {"commit": "c"}
    assert report.steps[0].message == "the run failed"


def test_an_empty_plan_is_nothing_to_do() -> None:
    report = execute(plan_of(), Recorder())
    assert report == RunReport(status="nothing-to-do")
    assert report.ok
    assert report.to_dict() == {
        "status": "nothing-to-do",
        "steps": [],
        "published": None,
        "pipeline_run": None,
        "existing": [],
    }


def test_plain_progress_prints_one_line_per_event() -> None:
    stream = io.StringIO()
    clock = iter([0.0, 1.5, 2.0, 2.25]).__next__
    plan = plan_of(("test", ()), ("publish", ("test",)))
    execute(plan, Recorder(), progress=PlainProgress(stream), clock=clock)
    assert stream.getvalue().splitlines() == [
        "[test] started",
        "[test] succeeded in 1.5s: did test",
        "[publish] started",
        "[publish] succeeded in 0.2s: did publish",
    ]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ((), "nothing-to-do"),
        ((StepReport("test", "succeeded", 1.0),), "succeeded"),
        ((StepReport("test", "failed", 1.0), StepReport("publish", "skipped", 0)), "failed"),
    ],
)
def test_summary_ends_with_the_status(steps: tuple[StepReport, ...], expected: str) -> None:
    from orchestrator.run.report import overall_status

    status = overall_status(steps)
    assert status == expected
    lines = summary_lines(RunReport(status=status, steps=steps))
    assert lines[-1] in (f"run {expected}", "nothing to do: the plan has no actions")


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (PipelineRun("succeeded", {"accuracy": 0.97222, "f1": 0.9}, "ct-1"),
         "pipeline run succeeded: accuracy 0.9722, f1 0.9"),
        (PipelineRun("duplicate", {"accuracy": 0.97222}, "ct-1"),
         "pipeline run ct-1 already ran for these inputs: accuracy 0.9722"),
        (PipelineRun("duplicate", {}, "ct-1"),  # the earlier run is still going
         "pipeline run ct-1 already ran for these inputs"),
        (PipelineRun("failed", {}, "ct-1"), "pipeline run failed"),
    ],
)  # fmt: skip
def test_summary_reports_the_pipeline_run(run: PipelineRun, expected: str) -> None:
    steps = (StepReport("publish", "succeeded", 1.0),)
    lines = summary_lines(RunReport(status="succeeded", steps=steps, pipeline_run=run))
    assert lines[-2:] == [expected, "run succeeded"]


@pytest.mark.parametrize(
    ("env", "choice", "storage", "publish"),
    [
        ({}, None, "local-dir", "in-process"),  # the embedded default
        ({"STORAGE_EMULATOR_HOST": "http://127.0.0.1:1"}, None, "emulator", "in-process"),
        ({"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}, None, "local-dir", "emulator"),
        ({"STORAGE_EMULATOR_HOST": "http://127.0.0.1:1"}, "cloud", "gcs", "pubsub"),
        ({}, "local", "local-dir", "in-process"),
    ],
)
def test_where_a_run_sends_its_uploads_and_its_message(
    tmp_path: Path, env: dict[str, str], choice: str | None, storage: str, publish: str
) -> None:
    services = Services.resolve(tmp_path, env, choice)
    assert (services.storage, services.publish) == (storage, publish)
    run_env = services.env()
    assert ("ORCHESTRATOR_LOCAL_BUCKET_ROOT" in run_env) is (storage == "local-dir")
    assert ("STORAGE_EMULATOR_HOST" in run_env) is (storage == "emulator")
