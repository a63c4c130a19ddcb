"""training_src: deterministic with a seed, accurate on digits, runnable from its tarball."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.source import build_source_tarball
from training_src.data import load_dataset, parse_csv
from training_src.train import HyperParameters, run

FAST = HyperParameters(hidden_units=32, max_iter=200, seed=3)
REPO = Path(__file__).resolve().parents[2]


def test_digits_accuracy_is_well_above_090(tmp_path: Path) -> None:
    metrics = run(load_dataset(), HyperParameters(), tmp_path / "m", tmp_path / "metrics.json")
    assert metrics["accuracy"] > 0.95
    assert len(metrics["confusion_matrix"]) == 10
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_size"]
    assert set(metrics["per_class"]) == {str(i) for i in range(10)}
    assert (tmp_path / "m" / "model.pkl").stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_same_seed_same_results_different_seed_differs(tmp_path: Path) -> None:
    data = load_dataset()
    a = run(data, FAST, tmp_path / "a", tmp_path / "a.json")
    b = run(data, FAST, tmp_path / "b", tmp_path / "b.json")
    c = run(
        data,
        HyperParameters(hidden_units=32, max_iter=200, seed=4),
        tmp_path / "c",
        tmp_path / "c.json",
    )
    assert a == b
    assert a["confusion_matrix"] != c["confusion_matrix"]


def test_csv_dataset_and_errors() -> None:
    data = parse_csv("f1,label,f2\n1,0,2\n3,1,4\n")
    assert data.feature_names == ("f1", "f2")
    assert np.array_equal(data.features, [[1.0, 2.0], [3.0, 4.0]])
    assert list(data.labels) == [0, 1]
    with pytest.raises(ValueError, match="'label' column"):
        parse_csv("a,b\n1,2\n")
    with pytest.raises(ValueError, match=":3: expected 2 columns"):
        parse_csv("a,label\n1,0\n1\n")
    with pytest.raises(ValueError, match=":2:"):
        parse_csv("a,label\nx,0\n")


def test_bad_hyperparameters_are_refused() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        HyperParameters(test_fraction=1.5)


def test_csv_from_a_local_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 3},{i % 2}" for i in range(20)]
    (tmp_path / "bkt" / "data").mkdir(parents=True)
    (tmp_path / "bkt" / "data" / "d.csv").write_text("\n".join(rows))
    monkeypatch.setenv("ORCHESTRATOR_LOCAL_BUCKET_ROOT", str(tmp_path))
    data = load_dataset("gs://bkt/data/d.csv")
    assert data.features.shape == (20, 2)


def test_source_tarball_is_deterministic() -> None:
    assert build_source_tarball() == build_source_tarball()


def test_runs_from_the_unpacked_uploaded_source(tmp_path: Path) -> None:
    """fetch_and_train.py fetches the tarball from a gs:// URI, unpacks it and runs it."""
    (tmp_path / "root" / "bkt" / "src").mkdir(parents=True)
    (tmp_path / "root" / "bkt" / "src" / "t.tar.gz").write_bytes(build_source_tarball())
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "fetch_and_train.py"),
         "--source-uri", "gs://bkt/src/t.tar.gz", "--workdir", str(work), "--",
         "--model-dir", str(tmp_path / "model"), "--metrics-path", str(tmp_path / "m.json"),
         "--hidden-units", "32", "--seed", "3", "--max-iter", "200"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={"PATH": "/usr/bin:/bin", "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "root")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (work / "training_src" / "__main__.py").is_file()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["hyperparameters"]["hidden_units"] == 32
    assert metrics["accuracy"] > 0.9


def test_bootstrap_rejects_a_missing_source(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "fetch_and_train.py"),
         "--source-uri", "gs://bkt/none.tar.gz", "--", "--model-dir", "m", "--metrics-path", "x"],
        capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot fetch gs://bkt/none.tar.gz" in result.stderr


def _executor_input(tmp_path: Path) -> dict[str, object]:
    """An executor input as the launcher hands it to ``{{$}}`` (Vertex AI and Kubeflow write
    the output file under the pipeline root; here, a directory that does not exist yet)."""

    def artifact(name: str, schema: str) -> dict[str, object]:
        return {
            "artifacts": [
                {
                    "name": f"projects/p/locations/l/metadataStores/default/artifacts/{name}",
                    "type": {"schemaTitle": schema, "schemaVersion": "0.0.1"},
                    "uri": f"gs://ct-root/run/train/{name}",
                    "metadata": {},
                }
            ]
        }

    return {
        "inputs": {"parameterValues": {"seed": 3}},
        "outputs": {
            "artifacts": {
                "metrics": artifact("metrics", "system.Metrics"),
                "model": artifact("model", "system.Model"),
            },
            "outputFile": str(tmp_path / "gcs" / "run" / "train" / "executor_output.json"),
        },
    }


def test_the_bootstrap_reports_the_metrics_as_the_metrics_artifacts_metadata(
    tmp_path: Path,
) -> None:
    """The compiled train step (a container component) passes ``{{$}}`` and its metrics path:
    after training, the executor output file carries the scalar metrics as the metadata of the
    ``system.Metrics`` output, which Vertex AI shows per run, and announces the model as is."""
    (tmp_path / "root" / "bkt" / "src").mkdir(parents=True)
    (tmp_path / "root" / "bkt" / "src" / "t.tar.gz").write_bytes(build_source_tarball())
    executor_input = _executor_input(tmp_path)
    metrics_path = tmp_path / "metrics"
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "fetch_and_train.py"),
         "--source-uri", "gs://bkt/src/t.tar.gz",
         "--executor-input", json.dumps(executor_input), "--log-metrics", str(metrics_path),
         "--", "--model-dir", str(tmp_path / "model"), "--metrics-path", str(metrics_path),
         "--hidden-units", "32", "--seed", "3", "--max-iter", "200"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={"PATH": "/usr/bin:/bin", "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "root")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(metrics_path.read_text())  # the file stays the full record
    written = json.loads(Path(executor_input["outputs"]["outputFile"]).read_text())  # type: ignore[index]
    announced = executor_input["outputs"]["artifacts"]  # type: ignore[index]
    assert written == {
        "artifacts": {
            "metrics": {
                "artifacts": [
                    {
                        **announced["metrics"]["artifacts"][0],
                        "metadata": {
                            "accuracy": metrics["accuracy"],
                            "train_size": float(metrics["train_size"]),
                            "test_size": float(metrics["test_size"]),
                        },
                    }
                ]
            },
            "model": announced["model"],
        }
    }
    assert metrics["accuracy"] > 0.9


def test_the_bootstrap_logs_nothing_when_training_fails(tmp_path: Path) -> None:
    (tmp_path / "root" / "bkt").mkdir(parents=True)
    (tmp_path / "root" / "bkt" / "t.tar.gz").write_bytes(build_source_tarball())
    executor_input = _executor_input(tmp_path)
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "fetch_and_train.py"),
         "--source-uri", "gs://bkt/t.tar.gz",
         "--executor-input", json.dumps(executor_input), "--log-metrics", str(tmp_path / "m"),
         "--", "--model-dir", str(tmp_path / "model"), "--metrics-path", str(tmp_path / "m"),
         "--data-uri", str(tmp_path / "missing.csv")],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={"PATH": "/usr/bin:/bin", "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "root")},
    )  # fmt: skip
    assert result.returncode != 0
    assert not Path(executor_input["outputs"]["outputFile"]).exists()  # type: ignore[index]


def test_scalar_metrics_are_the_finite_top_level_numbers() -> None:
    sys.path.insert(0, str(REPO / "pipeline"))
    from fetch_and_train import scalar_metrics

    record = {
        "accuracy": 0.97,
        "train_size": 1347,
        "converged": True,
        "loss": float("nan"),
        "per_class": {"0": {"f1": 1.0}},
        "labels": [0, 1],
        "name": "x",
    }
    assert scalar_metrics(record) == {"accuracy": 0.97, "train_size": 1347.0}


def test_record_outputs_keeps_what_the_command_reported(tmp_path: Path) -> None:
    """kfp.local's DockerRunner runs container steps under record_outputs.py, which announces
    every output artifact afterwards: the metadata the train step wrote must survive it."""
    executor_input = _executor_input(tmp_path)
    output_file = Path(executor_input["outputs"]["outputFile"])  # type: ignore[index]
    command = (
        "import json, pathlib, sys; sys.path.insert(0, sys.argv[2]); "
        "from fetch_and_train import write_executor_output; "
        "write_executor_output(sys.argv[1], {'accuracy': 0.9})"
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "pipeline" / "record_outputs.py"), json.dumps(executor_input),
         sys.executable, "-c", command, json.dumps(executor_input), str(REPO / "pipeline")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = json.loads(output_file.read_text())
    assert written["artifacts"]["metrics"]["artifacts"][0]["metadata"] == {"accuracy": 0.9}
    assert written["artifacts"]["model"] == executor_input["outputs"]["artifacts"]["model"]  # type: ignore[index]
