"""Data validator: fail the pipeline run on bad data before any training happens.

    python3 main.py --data-uri URI --num-classes 10 --report-path FILE [--min-rows N]
                    [--min-class-ratio R]

Checks: the schema (a ``label`` column and numeric, finite features of one width), the label
range (integers in ``[0, num_classes)``), the row count, and the class balance (each class
has at least ``min_class_ratio`` times the mean class count). Writes a JSON report; exits 1
with one line per problem when any check fails, 2 when the data cannot be read at all.

``--data-uri`` is empty or ``digits`` for scikit-learn's bundled digits, otherwise a CSV path
or ``gs://bucket/key`` (``ORCHESTRATOR_LOCAL_BUCKET_ROOT`` maps buckets to a local
directory; ``STORAGE_EMULATOR_HOST`` selects a storage emulator). Standard library only,
except numpy/scikit-learn for digits and google-cloud-storage for real ``gs://`` reads.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/key`` -> ``(bucket, key)``. A key that is not a clean relative name (a
    ``..``, ``.`` or empty segment, a leading ``/``, a backslash or NUL) is refused: with a
    local directory bucket it would reach outside the bucket (``orchestrator/objects.py``)."""
    bucket, _, key = uri[len("gs://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or not key:
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI")
    if "\\" in key or "\0" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"{uri!r} is not a gs://<bucket>/<key> URI with a clean key")
    return bucket, key


def read_bytes(uri: str) -> bytes:
    if not uri.startswith("gs://"):
        return Path(uri).read_bytes()
    bucket, key = split_gs_uri(uri)
    if os.environ.get("ORCHESTRATOR_LOCAL_BUCKET_ROOT"):
        return (Path(os.environ["ORCHESTRATOR_LOCAL_BUCKET_ROOT"]) / bucket / key).read_bytes()
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project="local", credentials=AnonymousCredentials())
    else:
        client = storage.Client()
    data: bytes = client.bucket(bucket).blob(key).download_as_bytes()
    return data


def load_rows(data_uri: str) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows, as text."""
    if data_uri in ("", "digits"):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        header = [f"pixel_{i}" for i in range(bunch.data.shape[1])] + ["label"]
        rows = [
            [repr(float(v)) for v in x] + [str(int(y))]
            for x, y in zip(bunch.data, bunch.target, strict=True)
        ]
        return header, rows
    reader = csv.reader(io.StringIO(read_bytes(data_uri).decode("utf-8")))
    lines = list(reader)
    if not lines:
        return [], []
    return lines[0], lines[1:]


def validate(
    header: list[str],
    rows: list[list[str]],
    *,
    num_classes: int,
    min_rows: int = 50,
    min_class_ratio: float = 0.5,
) -> tuple[list[str], dict[str, object]]:
    """Return (problems, statistics). Pure: no I/O."""
    problems: list[str] = []
    if "label" not in header:
        return ["schema: the header has no 'label' column"], {}
    if len(header) < 2:
        problems.append("schema: no feature columns")
    label_at = header.index("label")
    labels: list[int] = []
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            problems.append(f"schema: row {line} has {len(row)} columns, expected {len(header)}")
            continue
        for column, value in enumerate(row):
            if column == label_at:
                continue
            try:
                number = float(value)
            except ValueError:
                problems.append(
                    f"schema: row {line} column {header[column]!r} is not a number: {value!r}"
                )
                break
            if not math.isfinite(number):
                problems.append(f"schema: row {line} column {header[column]!r} is not finite")
                break
        try:
            label = int(row[label_at])
        except ValueError:
            problems.append(f"labels: row {line} label {row[label_at]!r} is not an integer")
            continue
        if not 0 <= label < num_classes:
            problems.append(f"labels: row {line} label {label} is outside [0, {num_classes})")
            continue
        labels.append(label)
    if len(rows) < min_rows:
        problems.append(f"rows: {len(rows)} data rows, need at least {min_rows}")
    counts = Counter(labels)
    if labels:
        mean = len(labels) / num_classes
        for label in range(num_classes):
            if counts[label] < min_class_ratio * mean:
                problems.append(
                    f"balance: class {label} has {counts[label]} rows, "
                    f"need at least {min_class_ratio:g} x mean ({mean:.1f})"
                )
    stats = {
        "rows": len(rows),
        "features": max(len(header) - 1, 0),
        "class_counts": {str(k): counts[k] for k in sorted(counts)},
    }
    return problems[:50], stats


def check_deps() -> int:
    """Exit 0 when the core dependencies are importable (the Dockerfile then skips pip)."""
    try:
        import numpy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="validator", description="Validate a labelled dataset.")
    parser.add_argument("--check-deps", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-uri", default="")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--min-rows", type=int, default=50)
    parser.add_argument("--min-class-ratio", type=float, default=0.5)
    parser.add_argument("--report-path", type=Path)
    args = parser.parse_args(argv)
    if args.check_deps:
        return check_deps()
    try:
        header, rows = load_rows(args.data_uri)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        print(f"validator: cannot read {args.data_uri or 'digits'}: {error}", file=sys.stderr)
        return 2
    problems, stats = validate(
        header,
        rows,
        num_classes=args.num_classes,
        min_rows=args.min_rows,
        min_class_ratio=args.min_class_ratio,
    )
    report = {
        "data_uri": args.data_uri or "digits",
        "valid": not problems,
        "problems": problems,
        **stats,
    }
    if args.report_path:
        args.report_path.parent.mkdir(parents=True, exist_ok=True)
        args.report_path.write_text(json.dumps(report, indent=2, sort_keys=True))
    for problem in problems:
        print(f"validator: {problem}", file=sys.stderr)
    if problems:
        print(f"validator: data rejected ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    print(f"validator: data ok ({stats['rows']} rows, {stats['features']} features)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
