"""Train from the command line.

python -m training_src --model-dir DIR --metrics-path FILE [--data-uri URI] [--seed N] ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from training_src.data import load_dataset
from training_src.train import HyperParameters, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training_src", description=__doc__)
    parser.add_argument("--data-uri", default="", help="CSV path or gs:// URI; empty: digits")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--metrics-path", type=Path, required=True)
    for f in fields(HyperParameters):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default
        )
    args = parser.parse_args(argv)
    try:
        hp = HyperParameters(**{f.name: getattr(args, f.name) for f in fields(HyperParameters)})
        dataset = load_dataset(args.data_uri)
    except (ValueError, OSError) as error:
        print(f"training failed: {error}", file=sys.stderr)
        return 2
    metrics = run(dataset, hp, args.model_dir, args.metrics_path)
    print(f"accuracy={metrics['accuracy']:.4f} converged={metrics['converged']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
