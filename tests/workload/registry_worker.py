"""One delivery in a process of its own: ``python -m tests.workload.registry_worker SPEC.json``.

The tests of the runs registry start several of these at once (racing claims) or signal one
in the middle of its run (an interrupted run). The worker loads ``function/main.py`` as the
orchestrator does, replaces the pipeline with :class:`StandInPipeline` (it records that it
ran, sleeps, and succeeds: what is under test is the registry, not kfp), waits for the
``go`` file when one is named, delivers the message with ``handle_message`` and prints the
result as one JSON line.

SPEC.json: ``{"env": {...}, "data": "<message JSON>", "marks": DIR, "sleep": SECONDS,
"go": PATH | null}``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StandInOutcome:
    """What ``pipeline.local_run.run_pipeline_locally`` returns, as far as the function reads."""

    status: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class StandInPipeline:
    """Replaces ``function/main.py``'s ``run_pipeline``: leaves a mark in ``marks`` (one file
    per run: this process and the run directory), sleeps, and returns ``status``."""

    marks: Path
    sleep: float = 0.0
    status: str = "succeeded"
    error: BaseException | None = None
    during: Any = None  # called with the run directory while the run goes on
    calls: list[Path] = field(default_factory=list)

    def __call__(
        self,
        parameters: Mapping[str, Any],
        pipeline_root: Path,
        *,
        runner: str,
        images: Mapping[str, str],
        env: Mapping[str, str],
    ) -> StandInOutcome:
        self.calls.append(pipeline_root)
        pipeline_root.mkdir(parents=True, exist_ok=True)
        self.marks.mkdir(parents=True, exist_ok=True)
        (self.marks / f"{os.getpid()}-{len(self.calls)}-{time.monotonic_ns()}").write_text(
            json.dumps({"root": str(pipeline_root), "parameters": dict(parameters)})
        )
        if self.during is not None:
            self.during(pipeline_root)
        time.sleep(self.sleep)
        if self.error is not None:
            raise self.error
        if self.status == "succeeded":
            return StandInOutcome("succeeded", {"accuracy": 0.97})
        return StandInOutcome("failed", error="validate-data failed: 3 problems")


def load_function() -> Any:
    """function/main.py by path, as the orchestrator loads it (without the test modules, whose
    imports would slow every worker down)."""
    path = Path(__file__).resolve().parents[2] / "function" / "main.py"
    spec = importlib.util.spec_from_file_location("ct_function_main", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ct_function_main"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    fn = load_function()
    fn.run_pipeline = StandInPipeline(Path(spec["marks"]), sleep=float(spec["sleep"]))
    config = fn.Config.from_env(spec["env"])
    go = Path(spec["go"]) if spec.get("go") else None
    print(json.dumps({"ready": os.getpid()}), flush=True)
    while go is not None and not go.exists():
        time.sleep(0.002)
    result = fn.handle_message(spec["data"].encode(), {}, config, spec["env"])
    print(json.dumps(result.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
