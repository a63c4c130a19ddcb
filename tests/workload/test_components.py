"""components/: the validator's checks and the evaluator's gate, as code and as command lines."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"{name}_main", REPO / "components" / name / "main.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validator = load("validator")
evaluator = load("evaluator")


def balanced_rows(n: int = 60, classes: int = 3) -> list[list[str]]:
    return [[str(i), str(i * 2), str(i % classes)] for i in range(n)]


def broken_csv() -> str:
    rows = ["f1,f2,label"] + [f"{i},{i},{i % 3}" for i in range(60)]
    rows[5] = "1,not-a-number,0"
    rows[7] = "1,2,9"
    return "\n".join(rows) + "\n"


def test_valid_data_passes() -> None:
    problems, stats = validator.validate(["a", "b", "label"], balanced_rows(), num_classes=3)
    assert problems == []
    assert stats["class_counts"] == {"0": 20, "1": 20, "2": 20}


def test_each_check_reports_its_problem() -> None:
    rows = balanced_rows()
    rows[0] = ["x", "1", "0"]
    rows[1] = ["1", "1", "7"]
    rows[2] = ["1", "nan", "0"]
    rows[3] = ["1", "1"]
    problems, _ = validator.validate(["a", "b", "label"], rows, num_classes=3)
    text = "\n".join(problems)
    assert "row 2 column 'a' is not a number" in text
    assert "row 3 label 7 is outside [0, 3)" in text
    assert "row 4 column 'b' is not finite" in text
    assert "row 5 has 2 columns" in text
    assert validator.validate(["a"], [["1"]], num_classes=2)[0] == [
        "schema: the header has no 'label' column"
    ]


def test_imbalance_and_too_few_rows() -> None:
    rows = [[str(i), "0"] for i in range(40)] + [["1", "1"]]
    problems, _ = validator.validate(["a", "label"], rows, num_classes=2, min_rows=50)
    assert any(p.startswith("rows: 41 data rows") for p in problems)
    assert any(p.startswith("balance: class 1 has 1 rows") for p in problems)


def test_validator_cli_rejects_broken_data(tmp_path: Path) -> None:
    (tmp_path / "broken.csv").write_text(broken_csv())
    result = subprocess.run(
        [sys.executable, str(REPO / "components/validator/main.py"),
         "--data-uri", str(tmp_path / "broken.csv"), "--num-classes", "3",
         "--report-path", str(tmp_path / "r.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "data rejected (2 problem(s))" in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["valid"] is False


def test_validator_cli_accepts_digits(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "components/validator/main.py"),
         "--report-path", str(tmp_path / "r.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == 1797


def test_evaluator_gate() -> None:
    assert evaluator.gate({"accuracy": 0.95}, "accuracy", 0.9) == (
        True,
        "accuracy 0.9500 >= threshold 0.9000",
    )
    assert evaluator.gate({"accuracy": 0.5}, "accuracy", 0.9)[0] is False
    assert evaluator.gate({}, "accuracy", 0.9) == (
        False,
        "metric 'accuracy' is missing from the training metrics",
    )


def test_evaluator_cli_evaluate_and_register(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pkl").write_bytes(b"model")
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.42}))
    main = str(REPO / "components/evaluator/main.py")
    ran = subprocess.run(
        [sys.executable, main, "evaluate", "--metrics-path", str(tmp_path / "metrics.json"),
         "--threshold", "0.9", "--gate-path", str(tmp_path / "gate")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0 and (tmp_path / "gate").read_text() == "fail"
    ran = subprocess.run(
        [sys.executable, main, "register", "--model-dir", str(tmp_path / "model"),
         "--metrics-path", str(tmp_path / "metrics.json"), "--output-dir", str(tmp_path / "reg")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads((tmp_path / "reg" / "registration.json").read_text())["accuracy"] == 0.42


def test_component_folders_are_complete() -> None:
    for name in ("validator", "evaluator"):
        folder = REPO / "components" / name
        dockerfile = (folder / "Dockerfile").read_text()
        assert "ARG BASE_IMAGE" in dockerfile and "FROM ${BASE_IMAGE}" in dockerfile
        assert (folder / "requirements.txt").is_file() and (folder / "main.py").is_file()


def test_validator_image_can_run_the_training_source() -> None:
    """The train step runs in the validator image by default: it must ship training's needs."""

    def names(path: Path) -> set[str]:
        lines = path.read_text().splitlines()
        return {
            line.split(">")[0].split("=")[0].strip()
            for line in lines
            if line and not line.startswith("#")
        }

    assert names(REPO / "training_src/requirements.txt") <= names(
        REPO / "components/validator/requirements.txt"
    )
