"""``run``: finish the plan, run its steps with an executor, record the deploy.

The plan is the one ``plan`` and ``--dry-run`` show with the same ``--services``
(``workflow.prepare``); the executor (``run.executors``) only decides where the steps run;
a successful run records what it deployed in the deploy ledger (``deploying``).
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator import secrets
from orchestrator.commands.io import CommandIO
from orchestrator.commands.plan import show as show_plan
from orchestrator.errors import EXIT_OK, EXIT_STEP_FAILED, InputError
from orchestrator.run.report import RunReport, summary_lines
from orchestrator.services import Services
from orchestrator.workflow import Target, prepare


def run(target: Target, executor: str, fmt: str, io: CommandIO, services: str) -> int:
    from orchestrator.run.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if fmt not in ("table", "json"):
        raise InputError(f"run prints --format table or json, not {fmt}")
    prepared = prepare(target, io.env, Services.resolve(target.repo, io.env, services))
    # nothing from here on shows a declared secret's value: not the plan, a step's line, the
    # report or an error (the executors redact at the source too: a value may span lines)
    io.redactor.add(secrets.values(prepared.rules, io.env))
    # Progress goes to stderr when stdout carries the JSON report.
    stream = io.stderr if fmt == "json" else io.stdout
    if fmt == "table":  # what is about to happen, and why, before it happens
        show_plan(prepared.plan, "table", io._replace(stdout=stream))
    if prepared.plan.has_work:
        report = EXECUTORS[executor].execute(prepared, stream, io.env)
    else:
        report = RunReport(status="nothing-to-do")
    report = replace(report, existing=prepared.plan.existing).redacted(io.redactor)
    from orchestrator.deploying import record_deploy

    recorded = record_deploy(prepared, report)
    if fmt == "json":
        io.stdout.write(report.to_json())
    else:
        lines = summary_lines(report)
        if recorded:  # before the final "run succeeded" line
            lines = [*lines[:-1], recorded, *lines[-1:]]
        io.stdout.write("".join(line + "\n" for line in lines))
    return EXIT_OK if report.ok else EXIT_STEP_FAILED
