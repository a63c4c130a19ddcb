"""Run the pipeline on this machine with ``kfp.local``.

``runner="subprocess"`` (the default) needs no Docker engine: it runs the lightweight
components with ``SubprocessRunner(use_venv=False)`` and the current interpreter, which must
have numpy and scikit-learn. ``runner="docker"`` runs the container components (the images
given) with ``DockerRunner`` against the engine at ``DOCKER_HOST``.

The train step fetches the training source from ``source_uri``; for ``gs://`` URIs without a
cloud set ``ORCHESTRATOR_LOCAL_BUCKET_ROOT`` (it is inherited by the step processes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.definition import (
    REPO_ROOT,
    build_pipeline,
    container_components,
    lightweight_components,
)

Runner = Literal["subprocess", "docker"]


@dataclass(frozen=True)
class LocalRunResult:
    status: Literal["succeeded", "failed"]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    gate: str | None = None
    error: str | None = None
    metrics_path: Path | None = None


def run_pipeline_locally(
    parameters: Mapping[str, Any],
    pipeline_root: Path,
    *,
    runner: Runner = "subprocess",
    images: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> LocalRunResult:
    """Run one pipeline end to end; a failed step gives ``status="failed"`` with its error.

    ``env`` is added to every step's environment (for example the storage settings).
    """
    from kfp import local

    pipeline_root.mkdir(parents=True, exist_ok=True)
    if runner == "docker":
        if not images:
            raise ValueError("the docker runner needs the component images")
        pipeline = build_pipeline(container_components(images), env=env)
        local.init(runner=local.DockerRunner(), pipeline_root=str(pipeline_root))
    else:
        pipeline = build_pipeline(lightweight_components(), code_dir=str(REPO_ROOT), env=env)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    try:
        task = pipeline(**parameters)
    except RuntimeError as error:  # kfp.local raises RuntimeError when a task fails
        return LocalRunResult(status="failed", error=str(error).strip().splitlines()[0])
    metrics_artifact = task.outputs["metrics"]
    metrics_path = Path(metrics_artifact.path)
    metrics = json.loads(metrics_path.read_text())
    return LocalRunResult(
        status="succeeded",
        metrics=metrics,
        gate=str(task.outputs["gate"]),
        metrics_path=metrics_path,
    )
