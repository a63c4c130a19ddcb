"""Preprocess, train with a fixed seed, evaluate and save. Pure functions plus one ``run``."""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from training_src.data import Dataset


@dataclass(frozen=True)
class HyperParameters:
    hidden_units: int = 64
    alpha: float = 1e-4
    learning_rate: float = 1e-3
    max_iter: int = 300
    test_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_units < 1 or self.max_iter < 1:
            raise ValueError("hidden_units and max_iter must be positive")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError("test_fraction must be between 0 and 1")
        if self.alpha < 0 or self.learning_rate <= 0:
            raise ValueError("alpha must be >= 0 and learning_rate > 0")


def build_model(hp: HyperParameters) -> Pipeline:
    """Standardise the features, then a one-hidden-layer MLP."""
    mlp = MLPClassifier(
        hidden_layer_sizes=(hp.hidden_units,),
        alpha=hp.alpha,
        learning_rate_init=hp.learning_rate,
        max_iter=hp.max_iter,
        random_state=hp.seed,
    )
    return make_pipeline(StandardScaler(), mlp)


def split(dataset: Dataset, hp: HyperParameters) -> tuple[np.ndarray, ...]:
    stratify = dataset.labels if np.bincount(dataset.labels).min(initial=0) >= 2 else None
    parts: list[np.ndarray] = train_test_split(
        dataset.features,
        dataset.labels,
        test_size=hp.test_fraction,
        random_state=hp.seed,
        stratify=stratify,
    )
    return tuple(parts)


def fit(x_train: np.ndarray, y_train: np.ndarray, hp: HyperParameters) -> tuple[Pipeline, bool]:
    """Train; returns the model and whether the optimiser converged within ``max_iter``."""
    model = build_model(hp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, converged


def evaluate(model: Pipeline, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    predicted = model.predict(x_test)
    classes = np.unique(np.concatenate([y_test, predicted]))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_test, predicted, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "per_class": {
            str(int(c)): {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": confusion_matrix(y_test, predicted, labels=classes).tolist(),
        "labels": [int(c) for c in classes],
    }


def run(
    dataset: Dataset, hp: HyperParameters, model_dir: Path, metrics_path: Path
) -> dict[str, Any]:
    """Train and evaluate on ``dataset``; write ``model_dir/model.pkl`` and the metrics JSON."""
    x_train, x_test, y_train, y_test = split(dataset, hp)
    model, converged = fit(x_train, y_train, hp)
    metrics = evaluate(model, x_test, y_test)
    metrics.update(
        converged=converged,
        train_size=len(y_train),
        test_size=len(y_test),
        hyperparameters=asdict(hp),
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / "model.pkl", "wb") as out:
        pickle.dump(model, out)
    (model_dir / "feature_names.json").write_text(json.dumps(list(dataset.feature_names)))
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
