"""pipeline/: compile (exact images, byte-identical, refusals) and a full local run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.compile import CompileError, compile_pipeline
from pipeline.local_run import run_pipeline_locally
from tests.workload.conftest import FAKE_IMAGES, LocalBucket

REPO = Path(__file__).resolve().parents[2]


def images_in(spec: Path) -> set[str]:
    executors = yaml.safe_load(spec.read_text())["deploymentSpec"]["executors"]
    return {e["container"]["image"] for e in executors.values()}


def test_spec_references_exactly_the_given_images(tmp_path: Path) -> None:
    compile_pipeline(FAKE_IMAGES, tmp_path / "spec.yaml")
    assert images_in(tmp_path / "spec.yaml") == set(FAKE_IMAGES.values())
    images = {**FAKE_IMAGES, "trainer": "reg/trainer:v1"}
    compile_pipeline(images, tmp_path / "t.yaml")
    assert images_in(tmp_path / "t.yaml") == set(images.values())


def test_spec_runs_the_components_without_the_local_output_recorder(tmp_path: Path) -> None:
    """record_outputs.py is for kfp.local only; only the train step reads the executor input
    (``{{$}}``), to report its metrics."""
    compile_pipeline(FAKE_IMAGES, tmp_path / "spec.yaml")
    executors = yaml.safe_load((tmp_path / "spec.yaml").read_text())["deploymentSpec"]["executors"]
    recorder = (REPO / "pipeline" / "record_outputs.py").read_text()
    assert all(recorder not in e["container"]["command"] for e in executors.values())
    assert {name for name, e in executors.items() if "{{$}}" in json.dumps(e["container"])} == {
        "exec-train"
    }


def test_no_inlined_script_holds_placeholder_syntax(tmp_path: Path) -> None:
    """The launchers substitute placeholders anywhere in a container's command: the scripts
    inlined there (``python3 -c``) must hold none, or the executor input lands in the code."""
    compile_pipeline(FAKE_IMAGES, tmp_path / "spec.yaml")
    executors = yaml.safe_load((tmp_path / "spec.yaml").read_text())["deploymentSpec"]["executors"]
    inlined = [arg for e in executors.values() for arg in e["container"]["command"][2:3]]
    assert (REPO / "pipeline" / "fetch_and_train.py").read_text() in inlined
    for script in ("fetch_and_train.py", "record_outputs.py"):
        assert "{{" not in (REPO / "pipeline" / script).read_text(), script


def test_the_train_step_outputs_a_system_metrics_artifact_it_logs_to(tmp_path: Path) -> None:
    """What Vertex AI shows as a run's metrics: the ``system.Metrics`` output artifact of the
    step that computes them, with the metrics as its metadata (written by the step into the
    executor output file, ``--executor-input {{$}} --log-metrics <its path>``)."""
    compile_pipeline(FAKE_IMAGES, tmp_path / "spec.yaml")
    spec = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    outputs = spec["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert outputs["metrics"]["artifactType"] == {
        "schemaTitle": "system.Metrics",
        "schemaVersion": "0.0.1",
    }
    args = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["args"]
    path = "{{$.outputs.artifacts['metrics'].path}}"
    assert args[args.index("--executor-input") + 1] == "{{$}}"
    assert args[args.index("--log-metrics") + 1] == path
    assert args[args.index("--metrics-path") + 1] == path  # the file the training writes
    assert args.index("--log-metrics") < args.index("--")  # the bootstrap's, not training's
    # The pipeline's own output is that artifact, so a run lists it too.
    root = spec["root"]["outputDefinitions"]["artifacts"]["metrics"]
    assert root["artifactType"]["schemaTitle"] == "system.Metrics"


def test_compiling_twice_gives_identical_bytes(tmp_path: Path) -> None:
    compile_pipeline(FAKE_IMAGES, tmp_path / "a.yaml")
    compile_pipeline(dict(reversed(list(FAKE_IMAGES.items()))), tmp_path / "b.yaml")
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()
    other = {**FAKE_IMAGES, "evaluator": "reg/evaluator:other"}
    compile_pipeline(other, tmp_path / "c.yaml")
    assert (tmp_path / "a.yaml").read_bytes() != (tmp_path / "c.yaml").read_bytes()


@pytest.mark.parametrize(
    ("images", "reason"),
    [
        ({"validator": "r/v:1"}, "no image given for component(s) evaluator"),
        ({**FAKE_IMAGES, "trainr": "x"}, "unknown component(s) trainr"),
        ({**FAKE_IMAGES, "evaluator": ""}, "no image given for component(s) evaluator"),
        ({**FAKE_IMAGES, "evaluator": "a b"}, "whitespace"),
    ],
)
def test_compile_refuses_bad_images(tmp_path: Path, images: dict[str, str], reason: str) -> None:
    with pytest.raises(CompileError, match=re.escape(reason)):
        compile_pipeline(images, tmp_path / "spec.yaml")
    assert not (tmp_path / "spec.yaml").exists()


def test_cli_exit_codes(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "pipeline.compile", "--output", str(tmp_path / "s.yaml")]
    ok = subprocess.run(
        [*base, "--image", f"validator={FAKE_IMAGES['validator']}",
         "--image", f"evaluator={FAKE_IMAGES['evaluator']}"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        [*base, "--image", "validator=r/v:1"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == "pipeline.compile: no image given for component(s) evaluator"
    malformed = subprocess.run(
        [*base, "--image", "validator"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert malformed.returncode == 2 and "NAME=URI" in malformed.stderr


def test_params_file_names_are_pipeline_parameters(tmp_path: Path) -> None:
    compile_pipeline(FAKE_IMAGES, tmp_path / "spec.yaml")
    inputs = yaml.safe_load((tmp_path / "spec.yaml").read_text())["root"]["inputDefinitions"][
        "parameters"
    ]
    params = tomllib.loads((REPO / "pipeline/params.toml").read_text())
    kinds = {int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING", bool: "BOOLEAN"}
    for name, value in params.items():
        assert inputs[name]["parameterType"] == kinds[type(value)], name
        assert inputs[name]["defaultValue"] == value, name
    assert {"source_uri", "data_uri"} <= set(inputs)
    assert "defaultValue" not in inputs["source_uri"]


@pytest.mark.slow
def test_local_run_end_to_end(
    local_bucket: LocalBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LOCAL_BUCKET_ROOT", str(local_bucket.root))
    result = run_pipeline_locally({"source_uri": local_bucket.source_uri}, tmp_path / "root")
    assert result.status == "succeeded", result.error
    assert result.metrics["accuracy"] > 0.95
    assert result.gate == "pass"
    run_dir = next((tmp_path / "root").iterdir())
    # The Metrics artifact carries the scalars as metadata (what Vertex AI shows per run) ...
    executor_output = json.loads((run_dir / "train" / "executor_output.json").read_text())
    [artifact] = executor_output["artifacts"]["metrics"]["artifacts"]
    assert artifact["metadata"] == {
        "accuracy": result.metrics["accuracy"],
        "train_size": result.metrics["train_size"],
        "test_size": result.metrics["test_size"],
    }
    assert result.logged_metrics == artifact["metadata"]  # as kfp.local read it back
    # ... and its file stays the full record the local report and the evaluator read.
    assert json.loads((run_dir / "train" / "metrics").read_text()) == dict(result.metrics)
    assert (run_dir / "train" / "model" / "model.pkl").is_file()
    assert (run_dir / "register" / "registered_model" / "registration.json").is_file()


@pytest.mark.slow
def test_local_run_fails_on_bad_data_and_skips_training(
    local_bucket: LocalBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,label\n1,0\n2,11\n")
    monkeypatch.setenv("ORCHESTRATOR_LOCAL_BUCKET_ROOT", str(local_bucket.root))
    result = run_pipeline_locally(
        {"source_uri": local_bucket.source_uri, "data_uri": str(bad)}, tmp_path / "root"
    )
    assert result.status == "failed"
    assert "validate-data" in (result.error or "")
    run_dir = next((tmp_path / "root").iterdir())
    assert not (run_dir / "train").exists()


@pytest.mark.slow
def test_gate_blocks_registration_below_threshold(
    local_bucket: LocalBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LOCAL_BUCKET_ROOT", str(local_bucket.root))
    result = run_pipeline_locally(
        {"source_uri": local_bucket.source_uri, "accuracy_threshold": 0.999, "max_iter": 50},
        tmp_path / "root",
    )
    assert result.status == "succeeded" and result.gate == "fail"
    run_dir = next((tmp_path / "root").iterdir())
    assert not (run_dir / "register").exists()
