"""Load a labelled dataset: scikit-learn's bundled digits, or a CSV with a ``label`` column."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from training_src import storage

DIGITS = "digits"


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # (n_samples, n_features), float64
    labels: np.ndarray  # (n_samples,), int64
    feature_names: tuple[str, ...]


def load_dataset(data_uri: str = "") -> Dataset:
    """``""`` or ``"digits"``: the bundled digits set (no download); otherwise a CSV path/URI."""
    if data_uri in ("", DIGITS):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        names = tuple(f"pixel_{i}" for i in range(bunch.data.shape[1]))
        return Dataset(bunch.data.astype(np.float64), bunch.target.astype(np.int64), names)
    return parse_csv(storage.read_bytes(data_uri).decode("utf-8"), source=data_uri)


def parse_csv(text: str, source: str = "<csv>") -> Dataset:
    """A header row, numeric feature columns and an integer ``label`` column."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "label" not in rows[0]:
        raise ValueError(f"{source}: the header must contain a 'label' column")
    header = rows[0]
    label_index = header.index("label")
    names = tuple(name for i, name in enumerate(header) if i != label_index)
    features, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{source}:{line}: expected {len(header)} columns, got {len(row)}")
        try:
            labels.append(int(row[label_index]))
            features.append([float(v) for i, v in enumerate(row) if i != label_index])
        except ValueError as error:
            raise ValueError(f"{source}:{line}: {error}") from None
    if not labels:
        raise ValueError(f"{source}: no data rows")
    return Dataset(
        np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64), names
    )
