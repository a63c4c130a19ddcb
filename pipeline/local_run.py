"""Run the pipeline on this machine with ``kfp.local``.

``runner="subprocess"`` (the default) needs no Docker engine: it runs the lightweight
components with ``SubprocessRunner(use_venv=False)`` and the current interpreter, which must
have numpy and scikit-learn. The steps inherit this process's environment.

``runner="docker"`` runs the container components (the images given, the ones that get
compiled for the cloud) with ``DockerRunner`` against the engine at ``DOCKER_HOST``. kfp.local
never builds: each image must be in the engine already or pullable (a local registry will
do). What the containers see:

- the pipeline root, which kfp.local bind-mounts at the same path (every artifact path);
- the local bucket: the train step fetches the training source from ``source_uri`` and, for
  ``gs://`` URIs without a cloud, reads ``ORCHESTRATOR_LOCAL_BUCKET_ROOT``. That directory is
  bind-mounted read-only at the same path, so the variable means the same inside and out and
  the container reads the very bytes that were uploaded (nothing is copied);
- the storage variables (``ORCHESTRATOR_LOCAL_BUCKET_ROOT``, ``STORAGE_EMULATOR_HOST``) of
  ``environ``, overridden by ``env``: a container inherits nothing from this process;
- the network ``ORCHESTRATOR_DOCKER_NETWORK`` names (Docker's default when unset; ``none``
  for an engine without a bridge, ``host`` to reach an emulator on 127.0.0.1).

A ``data_uri`` that is a local path must therefore lie under the pipeline root or the local
bucket; ``""``/``digits`` (bundled with scikit-learn) and ``gs://`` URIs need nothing.

Three kfp.local 2.17 quirks are handled so that the containers run as they do in the cloud:
the image ENTRYPOINT is cleared (``docker_run_args``), output artifacts are reported through
``record_outputs.py``, and the evaluator's gate is the output named ``Output`` (GATE_OUTPUT in
pipeline/definition.py), the only name kfp.local resolves in the register step's condition.
"""

from __future__ import annotations

import json
import os
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
BUCKET_ROOT_VAR = "ORCHESTRATOR_LOCAL_BUCKET_ROOT"
STORAGE_VARS = (BUCKET_ROOT_VAR, "STORAGE_EMULATOR_HOST")
DOCKER_NETWORK_VAR = "ORCHESTRATOR_DOCKER_NETWORK"


@dataclass(frozen=True)
class LocalRunResult:
    status: Literal["succeeded", "failed"]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    gate: str | None = None
    error: str | None = None
    metrics_path: Path | None = None
    #: The Metrics artifact's metadata (its ``log_metric`` scalars), as kfp.local read it back
    #: from the train step's executor output: what Vertex AI shows for the run.
    logged_metrics: Mapping[str, float] = field(default_factory=dict)


def run_pipeline_locally(
    parameters: Mapping[str, Any],
    pipeline_root: Path,
    *,
    runner: Runner = "subprocess",
    images: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LocalRunResult:
    """Run one pipeline end to end; a failed step gives ``status="failed"`` with its error.

    ``env`` is added to every step's environment (for example the storage settings);
    ``environ`` (default ``os.environ``) is read by the docker runner only (see above).
    """
    from kfp import local

    pipeline_root = pipeline_root.resolve()  # kfp.local mounts it at this very path
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if runner == "docker":
        if not images:
            raise ValueError("the docker runner needs the component images")
        environ = os.environ if environ is None else environ
        step_env = {name: environ[name] for name in STORAGE_VARS if environ.get(name)}
        step_env.update(env or {})
        if step_env.get(BUCKET_ROOT_VAR):
            step_env[BUCKET_ROOT_VAR] = str(Path(step_env[BUCKET_ROOT_VAR]).resolve())
        pipeline = build_pipeline(container_components(images, record_outputs=True), env=step_env)
        local.init(
            runner=local.DockerRunner(**docker_run_args(step_env, environ)),
            pipeline_root=str(pipeline_root),
        )
    else:
        pipeline = build_pipeline(lightweight_components(), code_dir=str(REPO_ROOT), env=env)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    try:
        task = pipeline(**parameters)
    except RuntimeError as error:  # kfp.local raises RuntimeError when a task fails
        return LocalRunResult(status="failed", error=str(error).strip().splitlines()[0])
    metrics_artifact = task.outputs["metrics"]
    metrics_path = Path(metrics_artifact.path)
    if not metrics_path.is_file():
        # kfp.local's DockerRunner counts a container it could no longer inspect (auto-removed
        # on exit) as succeeded, so a failed step can go unreported: trust only the output.
        return LocalRunResult(status="failed", error=f"the run wrote no metrics ({metrics_path})")
    metrics = json.loads(metrics_path.read_text())
    return LocalRunResult(
        status="succeeded",
        metrics=metrics,
        gate=str(task.outputs["gate"]),
        metrics_path=metrics_path,
        logged_metrics=dict(metrics_artifact.metadata),
    )


def docker_run_args(step_env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, Any]:
    """``containers.run`` arguments for every step: the entrypoint, bucket mount and network."""
    import docker

    # kfp.local hands the component's command and args to Docker as the CMD, after the image's
    # ENTRYPOINT; Vertex AI and Kubeflow run the command instead of the ENTRYPOINT. [""] is
    # how the Docker CLI's ``--entrypoint ""`` clears it, so the container runs as in the cloud.
    args: dict[str, Any] = {"entrypoint": [""]}
    if step_env.get(BUCKET_ROOT_VAR):
        bucket_root = step_env[BUCKET_ROOT_VAR]
        # kfp.local passes its own ``volumes`` (the pipeline root), so this one is a mount.
        args["mounts"] = [
            docker.types.Mount(target=bucket_root, source=bucket_root, type="bind", read_only=True)
        ]
    if environ.get(DOCKER_NETWORK_VAR):
        args["network_mode"] = environ[DOCKER_NETWORK_VAR]
    return args
