"""Pattern scores as plain numpy: "none" as a ninth class, per-class thresholds, macro-F1, recall.

Usable by the Trainer (thresholds chosen on validation), a benchmark and the Evaluator side alike.
A wafer's prediction is the set of classes whose probability reaches that class's threshold; the
empty set is the prediction "none", scored like a ninth class (as WM-811K scores its "none").
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, recall_score

from data.patterns import PATTERN_CLASSES, SCORED_CLASSES

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def with_none(multi_hot: np.ndarray) -> np.ndarray:
    """(n, 8) multi-hot -> (n, 9): the ninth column is 1 where no pattern is set."""
    multi_hot = np.asarray(multi_hot).astype(np.int64)
    if multi_hot.ndim != 2 or multi_hot.shape[1] != len(PATTERN_CLASSES):
        raise ValueError(f"expected (n, {len(PATTERN_CLASSES)}) multi-hot labels, got shape {multi_hot.shape}")
    return np.concatenate([multi_hot, (multi_hot.sum(axis=1) == 0)[:, None].astype(np.int64)], axis=1)


def predict(probabilities: np.ndarray, thresholds: np.ndarray | float = 0.5) -> np.ndarray:
    """(n, 8) probabilities -> (n, 8) multi-hot decisions at each class's threshold."""
    return (np.asarray(probabilities) >= np.asarray(thresholds)).astype(np.int64)


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean F1 over the nine scored classes (8 patterns + none) of multi-hot labels and decisions."""
    return float(f1_score(with_none(labels), with_none(predictions), average="macro", zero_division=0))


def per_class_recall(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Recall of each scored class; NaN for a class absent from `labels`."""
    y, p = with_none(labels), with_none(predictions)
    return {
        name: float(recall_score(y[:, i], p[:, i], zero_division=0)) if y[:, i].any() else float("nan")
        for i, name in enumerate(SCORED_CLASSES)
    }


def fit_thresholds(labels: np.ndarray, probabilities: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per-class thresholds that maximise each class's F1 on validation (0.5 for a class absent there).

    Chosen one class at a time on the grid; a rare class (Near-full) would otherwise sit at 0.5
    where its calibrated probabilities seldom reach."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    thresholds = np.full(len(PATTERN_CLASSES), 0.5)
    for c in range(len(PATTERN_CLASSES)):
        if not labels[:, c].any():
            continue
        scores = [f1_score(labels[:, c], probabilities[:, c] >= t, zero_division=0) for t in grid]
        thresholds[c] = float(grid[int(np.argmax(scores))])
    return thresholds


def report(labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray | float = 0.5) -> dict:
    """Macro-F1 and per-class recall at the given thresholds, as one dict of figures."""
    decisions = predict(probabilities, thresholds)
    return {"macro_f1": macro_f1(labels, decisions), "recall": per_class_recall(labels, decisions)}
