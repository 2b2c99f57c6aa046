"""Pattern scores as plain numpy: "none" as a ninth class, per-class thresholds, macro-F1, recall.

Usable by the Trainer (thresholds chosen on validation), a benchmark and the Evaluator side alike:
`PatternMacroF1` and `PatternRecall` are the same figures as TFMA metrics (tf.keras metrics over
the model's `patterns` output, the decisions at the model's own thresholds), so the Evaluator
slices them by product and gates on them. A wafer's prediction is the set of classes whose
probability reaches that class's threshold; the empty set is the prediction "none", scored like a
ninth class (as WM-811K scores its "none").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras
from sklearn.metrics import f1_score, recall_score

from data.patterns import PATTERN_CLASSES, SCORED_CLASSES

MACRO_F1 = "macro_f1"  # the Evaluator's metric names
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
    """Mean F1 over the scored classes (8 patterns + none) that are labelled or predicted.

    A class neither labelled nor predicted has no F1 (0/0) and is left out of the mean, as the
    WM-811K papers score only the classes their test set has: a 75-wafer test set without a Near-full
    wafer should not lose 1/9 of its macro-F1 for it. A class predicted but never labelled has F1 0."""
    return float(f1_score(with_none(labels), with_none(predictions), average="macro", zero_division=np.nan))


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


def recall_name(class_name: str) -> str:
    """The Evaluator's name for a class's recall: recall_center, ..., recall_none."""
    return f"recall_{class_name.lower()}"


class _ScoredClassCounts(tf_keras.metrics.Metric):
    """True positives, false positives and false negatives of each scored class (8 patterns + none)
    from multi-hot labels and decisions, both (batch, 8). Sums, so TFMA merges them by adding.
    A tf.keras (Keras 2) metric because TFMA reads models and metrics through tf.keras."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        n = len(SCORED_CLASSES)
        self.tp = self.add_weight(name="tp", shape=(n,), initializer="zeros", dtype=tf.float64)
        self.fp = self.add_weight(name="fp", shape=(n,), initializer="zeros", dtype=tf.float64)
        self.fn = self.add_weight(name="fn", shape=(n,), initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        def scored(multi_hot):
            multi_hot = tf.cast(
                tf.reshape(tf.cast(multi_hot, tf.float64), [-1, len(PATTERN_CLASSES)]) >= 0.5, tf.float64
            )
            none = tf.cast(tf.reduce_sum(multi_hot, axis=1, keepdims=True) == 0, tf.float64)
            return tf.concat([multi_hot, none], axis=1)

        y, p = scored(y_true), scored(y_pred)
        weight = (
            tf.ones_like(y[:, :1]) if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float64), [-1, 1])
        )
        self.tp.assign_add(tf.reduce_sum(y * p * weight, axis=0))
        self.fp.assign_add(tf.reduce_sum((1 - y) * p * weight, axis=0))
        self.fn.assign_add(tf.reduce_sum(y * (1 - p) * weight, axis=0))

    def reset_state(self):
        for variable in (self.tp, self.fp, self.fn):
            variable.assign(tf.zeros_like(variable))


class PatternMacroF1(_ScoredClassCounts):
    """`macro_f1` as a TFMA metric: the mean of 2TP / (2TP + FP + FN) over the scored classes that
    are labelled or predicted in the slice (a per-product slice often lacks the rare classes)."""

    def __init__(self, name: str = MACRO_F1, **kwargs):
        super().__init__(name=name, **kwargs)

    def result(self):
        denominator = 2 * self.tp + self.fp + self.fn
        scored = denominator > 0
        f1 = tf.boolean_mask(2 * self.tp, scored) / tf.boolean_mask(denominator, scored)
        return tf.where(tf.reduce_any(scored), tf.reduce_mean(f1), tf.constant(np.nan, tf.float64))


class PatternRecall(_ScoredClassCounts):
    """One scored class's recall TP / (TP + FN), as `per_class_recall`; NaN when the slice has none."""

    def __init__(self, class_name: str = PATTERN_CLASSES[0], name: str | None = None, **kwargs):
        if class_name not in SCORED_CLASSES:
            raise ValueError(f"unknown pattern class {class_name!r}; known: {', '.join(SCORED_CLASSES)}")
        super().__init__(name=name or recall_name(class_name), **kwargs)
        self.class_name = class_name
        self.index = SCORED_CLASSES.index(class_name)

    def result(self):
        support = self.tp[self.index] + self.fn[self.index]
        return tf.where(support > 0, self.tp[self.index] / tf.maximum(support, 1.0), tf.constant(np.nan, tf.float64))

    def get_config(self) -> dict:
        return {**super().get_config(), "class_name": self.class_name}
