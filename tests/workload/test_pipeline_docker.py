"""The pipeline end to end with kfp.local's DockerRunner on the component images built for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.local_run import run_pipeline_locally
from tests.fixtures.docker import DockerEngine
from tests.workload.conftest import LocalBucket
from tests.workload.test_images import build_and_push

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_docker_run_end_to_end(
    docker_engine: DockerEngine,
    local_bucket: LocalBucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = {name: build_and_push(docker_engine, name)[1] for name in ("validator", "evaluator")}
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)  # kfp.local's docker.from_env()
    # Neither the test process nor its environment may leak into the containers: only what
    # run_pipeline_locally passes on reaches them.
    monkeypatch.delenv("ORCHESTRATOR_LOCAL_BUCKET_ROOT", raising=False)
    result = run_pipeline_locally(
        {"source_uri": local_bucket.source_uri},
        tmp_path / "root",
        runner="docker",
        images=images,
        env={"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(local_bucket.root)},
        environ={"ORCHESTRATOR_DOCKER_NETWORK": "none"},
    )
    assert result.status == "succeeded", result.error
    assert result.metrics["accuracy"] > 0.9
    assert result.gate == "pass"
    # The compiled train step reported its metrics as the Metrics artifact's metadata, and
    # record_outputs.py (kfp.local only) kept them.
    assert result.logged_metrics["accuracy"] == result.metrics["accuracy"]
    run_dir = next((tmp_path / "root").iterdir())
    assert (run_dir / "train" / "model" / "model.pkl").is_file()
    registration = json.loads(
        (run_dir / "register" / "registered_model" / "registration.json").read_text()
    )
    assert registration["accuracy"] == result.metrics["accuracy"]
