"""``run``: plan the range, then execute the minimal steps locally or through Cloud Build."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Literal

from orchestrator.artifacts import Artifacts
from orchestrator.commands.io import CommandIO
from orchestrator.commands.plan import show as show_plan
from orchestrator.errors import EXIT_OK, EXIT_STEP_FAILED, InputError, ServiceUnreachable
from orchestrator.planning import add_missing_artifacts
from orchestrator.run.local import local_env, make_progress, run_local
from orchestrator.run.report import RunReport, summary_lines
from orchestrator.workflow import Target, make_plan, name_build

Executor = Literal["local", "cloudbuild"]
EXECUTORS: tuple[Executor, ...] = ("local", "cloudbuild")


def missing_artifacts(artifacts: Artifacts, env: Mapping[str, str]) -> dict[str, str]:
    """The artifacts a publish reads that no build has made yet, by the action that makes them."""
    from orchestrator.adapters.storage import object_exists

    wanted = {"upload_source": artifacts.source_uri, "compile_pipeline": artifacts.spec_uri}
    try:
        return {action: uri for action, uri in wanted.items() if not object_exists(uri, env=env)}
    except ServiceUnreachable:
        return {}  # the steps themselves will meet it, and the report will name it


def run(target: Target, executor: str, fmt: str, io: CommandIO) -> int:
    if executor not in EXECUTORS:
        raise InputError(f"--executor must be local or cloudbuild, not {executor!r}")
    if fmt not in ("table", "json"):
        raise InputError(f"run prints --format table or json, not {fmt}")
    rules, plan = make_plan(target, io.env)
    # Progress goes to stderr when stdout carries the JSON report.
    stream = io.stderr if fmt == "json" else io.stdout
    if fmt == "table":  # what is about to happen, and why, before it happens
        show_plan(plan, "table", CommandIO(stdout=stream, stderr=io.stderr, env=io.env))
    if not plan.has_work:
        report = RunReport(status="nothing-to-do")
    elif executor == "local":
        env = local_env(target.repo, io.env)
        artifacts = name_build(target, rules, plan, env)
        if plan.action("publish") is not None:
            completed = add_missing_artifacts(plan, rules, missing_artifacts(artifacts, env))
            if completed != plan and fmt == "table":
                added = [a.id for a in completed.actions if plan.action(a.id) is None]
                stream.write(f"Not built yet, added to the plan: {', '.join(added)}\n")
            plan = completed
        report = run_local(
            target.repo, rules, plan, artifacts, io.env, progress=make_progress(stream, io.env)
        )
    else:
        from orchestrator.emit.cloudbuild import emit_build

        artifacts = name_build(target, rules, plan, io.env)
        build = emit_build(plan, rules, artifacts)
        try:
            cloudbuild = importlib.import_module("orchestrator.run.cloudbuild")
        except ModuleNotFoundError as exc:
            if exc.name != "orchestrator.run.cloudbuild":
                raise
            raise InputError("--executor cloudbuild is not available in this version") from None
        report = cloudbuild.run_cloudbuild(target, rules, plan, artifacts, build, io.env, stream)
    if fmt == "json":
        io.stdout.write(report.to_json())
    else:
        io.stdout.write("".join(line + "\n" for line in summary_lines(report)))
    return EXIT_OK if report.ok else EXIT_STEP_FAILED
