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
