"""Executors: where a finished plan's steps run. They differ in nothing else.

Planning ends in ``workflow.prepare`` (the plan finished against the bucket, the registry
and the deploy ledger); an executor takes that and runs its steps, and the ``run`` command
records the deploy when it succeeds. Adding an executor is a class with ``name`` and
``execute`` registered in :data:`EXECUTORS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Protocol

from orchestrator.run.report import RunReport
from orchestrator.workflow import Prepared


class Executor(Protocol):
    name: str

    def execute(self, prepared: Prepared, stream: IO[str], env: Mapping[str, str]) -> RunReport:
        """Run ``prepared.plan``'s steps; progress goes to ``stream``."""
        ...


@dataclass(frozen=True)
class LocalExecutor(Executor):
    """This machine: steps in dependency order, independent ones concurrently."""

    name: str = "local"

    def execute(self, prepared: Prepared, stream: IO[str], env: Mapping[str, str]) -> RunReport:
        from orchestrator.run.local import make_progress, run_local

        return run_local(
            prepared.target.repo,
            prepared.rules,
            prepared.plan,
            prepared.artifacts,
            prepared.services,
            progress=make_progress(stream, env),
        )


@dataclass(frozen=True)
class CloudBuildExecutor(Executor):
    """Cloud Build: the emitted build, submitted through the API and followed to the end."""

    name: str = "cloudbuild"

    def execute(self, prepared: Prepared, stream: IO[str], env: Mapping[str, str]) -> RunReport:
        from orchestrator.emit.cloudbuild import emit_build
        from orchestrator.run.cloudbuild import run_cloudbuild

        build = emit_build(prepared.plan, prepared.rules, prepared.artifacts)
        return run_cloudbuild(
            prepared.target,
            prepared.rules,
            prepared.plan,
            prepared.artifacts,
            build,
            prepared.services.env(),
            stream,
        )


EXECUTORS: dict[str, Executor] = {e.name: e for e in (LocalExecutor(), CloudBuildExecutor())}
