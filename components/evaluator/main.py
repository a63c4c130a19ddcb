"""Evaluator: gate model registration on a metric threshold, and register a model that passed.

    python3 main.py evaluate --metrics-path FILE --threshold 0.9 [--metric accuracy]
                             --gate-path FILE [--evaluation-path FILE]
    python3 main.py register --model-dir DIR --metrics-path FILE --output-dir DIR
                             [--model-name NAME]

``evaluate`` writes ``pass`` or ``fail`` to ``--gate-path`` (the pipeline's condition on the
register step reads it) and a JSON evaluation; it exits 0 either way, since a model that
misses the bar is an outcome, not an error. ``register`` copies the model files and writes
``registration.json`` next to them. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def gate(metrics: Mapping[str, Any], metric: str, threshold: float) -> tuple[bool, str]:
    """Pure: does the metric reach the threshold? Returns the verdict and the reason."""
    value = metrics.get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False, f"metric {metric!r} is missing from the training metrics"
    if value >= threshold:
        return True, f"{metric} {value:.4f} >= threshold {threshold:.4f}"
    return False, f"{metric} {value:.4f} < threshold {threshold:.4f}"


def evaluate(args: argparse.Namespace) -> int:
    metrics = json.loads(Path(args.metrics_path).read_text())
    passed, reason = gate(metrics, args.metric, args.threshold)
    Path(args.gate_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.gate_path).write_text("pass" if passed else "fail")
    if args.evaluation_path:
        evaluation = {
            "metric": args.metric,
            "value": metrics.get(args.metric),
            "threshold": args.threshold,
            "passed": passed,
            "reason": reason,
        }
        Path(args.evaluation_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.evaluation_path).write_text(json.dumps(evaluation, indent=2, sort_keys=True))
    print(f"evaluator: {'pass' if passed else 'fail'}: {reason}")
    return 0


def register(args: argparse.Namespace) -> int:
    source, target = Path(args.model_dir), Path(args.output_dir)
    if not (source / "model.pkl").is_file():
        print(f"evaluator: no model.pkl in {source}", file=sys.stderr)
        return 1
    shutil.copytree(source, target, dirs_exist_ok=True)
    metrics = json.loads(Path(args.metrics_path).read_text())
    registration = {
        "model_name": args.model_name,
        "accuracy": metrics.get("accuracy"),
        "hyperparameters": metrics.get("hyperparameters", {}),
        "files": sorted(p.name for p in target.iterdir()),
    }
    (target / "registration.json").write_text(json.dumps(registration, indent=2, sort_keys=True))
    print(f"evaluator: registered {args.model_name} (accuracy {registration['accuracy']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluator")
    parser.add_argument("--check-deps", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command")
    ev = commands.add_parser("evaluate")
    ev.add_argument("--metrics-path", required=True)
    ev.add_argument("--metric", default="accuracy")
    ev.add_argument("--threshold", type=float, required=True)
    ev.add_argument("--gate-path", required=True)
    ev.add_argument("--evaluation-path")
    reg = commands.add_parser("register")
    reg.add_argument("--model-dir", required=True)
    reg.add_argument("--metrics-path", required=True)
    reg.add_argument("--output-dir", required=True)
    reg.add_argument("--model-name", default="digits-classifier")
    args = parser.parse_args(argv)
    if args.check_deps:
        return 0
    if args.command == "evaluate":
        return evaluate(args)
    if args.command == "register":
        return register(args)
    parser.error("a command is required: evaluate or register")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
