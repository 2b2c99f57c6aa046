"""The ink decision: the probability threshold at which a sort-passing die is inked, and its costs.

A die that passed wafer sort but fails final test is an *escape* if it is packaged (the package,
the assembly and the final-test time are lost, or worse, a customer return); a die that would have
passed final test but is inked is *overkill* (a good die thrown away). With an escape costing
`escape_cost` and an overkill `overkill_cost` (50:1 by default in the run configuration), a die is
inked when its predicted fail probability is at or above the threshold that minimises the expected
cost on validation dies, chosen by the Trainer and stored with every exported model:

    SavedModel            assets/operating_point.json
    TF Lite / ONNX file   operating_point.json beside the model file

    {"threshold": 0.0213, "escape_cost": 50.0, "overkill_cost": 1.0, "expected_cost": 0.71, ...}

`read` looks where `models.dense_signature.read_columns` looks, through `tf.io.gfile` (gs:// too);
the predict client (pipeline/predict.py) inks dies with `probability >= threshold`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

OPERATING_POINT_FILE = "operating_point.json"


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """Ink a die when its final-test fail probability is >= `threshold`.

    `expected_cost` (per die, in the cost units, on the dies the threshold was chosen on) and
    `n_dies` describe the choice; `extra` keeps any other keys of the JSON, so a file written by a
    newer Trainer round-trips unchanged.
    """

    threshold: float
    escape_cost: float
    overkill_cost: float
    expected_cost: float | None = None
    n_dies: int | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold}")
        _check_costs(self.escape_cost, self.overkill_cost)

    @property
    def bayes_threshold(self) -> float:
        """What the costs alone imply for a calibrated model (see `bayes_threshold`)."""
        return bayes_threshold(self.escape_cost, self.overkill_cost)

    def ink(self, probabilities: np.ndarray) -> np.ndarray:
        """bool [n]: which dies to ink. Compared in float64, so a float32 probability equal to a
        threshold chosen from float32 probabilities is inked, as it was when the threshold was chosen."""
        return np.asarray(probabilities, np.float64) >= self.threshold

    def to_dict(self) -> dict:
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**dict(self.extra), **{k: v for k, v in known.items() if v is not None}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OperatingPoint:
        missing = [k for k in ("threshold", "escape_cost", "overkill_cost") if k not in d]
        if missing:
            raise ValueError(f"operating point lacks {missing}: {dict(d)}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            threshold=float(d["threshold"]),
            escape_cost=float(d["escape_cost"]),
            overkill_cost=float(d["overkill_cost"]),
            expected_cost=None if d.get("expected_cost") is None else float(d["expected_cost"]),
            n_dies=None if d.get("n_dies") is None else int(d["n_dies"]),
            extra={k: v for k, v in d.items() if k not in names},
        )

    @classmethod
    def from_json(cls, text: str) -> OperatingPoint:
        return cls.from_dict(json.loads(text))


def write(op: OperatingPoint, directory: str) -> str:
    """`operating_point.json` in `directory` (a SavedModel's assets/, or beside a .tflite / .onnx
    file); returns its path."""
    path = os.path.join(directory, OPERATING_POINT_FILE)
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(op.to_json())
    return path


def _candidates(model_path: str) -> list[str]:
    # The same places as dense_signature.read_columns: a SavedModel directory's assets (or the
    # directory itself), else beside the model file (or beside assets/dense_columns.json).
    if tf.io.gfile.isdir(model_path):
        return [
            os.path.join(model_path, "assets", OPERATING_POINT_FILE),
            os.path.join(model_path, OPERATING_POINT_FILE),
        ]
    return [os.path.join(os.path.dirname(model_path), OPERATING_POINT_FILE)]


def read(model_path: str) -> OperatingPoint:
    """The operating point stored with a model: a SavedModel directory (its assets), or a .tflite /
    .onnx file (the `operating_point.json` beside it). FileNotFoundError if it has none."""
    candidates = _candidates(model_path)
    for path in candidates:
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                return OperatingPoint.from_json(f.read())
    raise FileNotFoundError(f"no {OPERATING_POINT_FILE} stored with {model_path} (looked at {candidates})")


def find(model_path: str) -> OperatingPoint | None:
    """`read`, or None for a model exported without an operating point."""
    try:
        return read(model_path)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# Choosing the threshold


def _check_costs(escape_cost: float, overkill_cost: float) -> None:
    costs = (escape_cost, overkill_cost)
    if not all(math.isfinite(c) and c >= 0 for c in costs) or not any(c > 0 for c in costs):
        raise ValueError(f"costs must be finite, >= 0 and not both 0: escape {escape_cost}, overkill {overkill_cost}")


def _check(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(probabilities, np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels for {len(p)} probabilities")
    if len(y) == 0:
        raise ValueError("no dies to choose a threshold on")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (passed final test) or 1 (failed final test)")
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite")
    return y.astype(bool), p


def bayes_threshold(escape_cost: float, overkill_cost: float) -> float:
    """The threshold the costs imply for a calibrated model: overkill / (overkill + escape).

    If p is a die's true probability of failing final test, inking it costs overkill * (1 - p) in
    expectation (it was good with probability 1 - p) and packaging it costs escape * p. Inking is the
    cheaper choice when escape * p >= overkill * (1 - p), i.e. p >= overkill / (overkill + escape):
    1/51 = 0.0196 at 50:1. This holds die by die with no data at all, but only if the probabilities
    are calibrated; `choose_threshold` finds the cost-minimising threshold on labelled dies instead,
    which also absorbs the model's miscalibration, and the two agreeing is a check on calibration.
    """
    _check_costs(escape_cost, overkill_cost)
    return overkill_cost / (overkill_cost + escape_cost)


def expected_cost(labels, probabilities, threshold: float, escape_cost: float, overkill_cost: float) -> float:
    """Cost per die of inking `probabilities >= threshold`: (escape_cost * fails not inked +
    overkill_cost * passes inked) / n. Labels: 1 = failed final test."""
    _check_costs(escape_cost, overkill_cost)
    fail, p = _check(labels, probabilities)
    inked = p >= threshold
    escapes = int(np.count_nonzero(fail & ~inked))
    overkill = int(np.count_nonzero(~fail & inked))
    return (escape_cost * escapes + overkill_cost * overkill) / len(p)


def choose_threshold(labels, probabilities, escape_cost: float, overkill_cost: float) -> tuple[float, float]:
    """(threshold, expected cost per die): the threshold t minimising

        (escape_cost * #fails with p < t + overkill_cost * #passes with p >= t) / n

    over the candidates that give every distinct decision: each distinct probability (all dies at
    that probability are inked together, so ties never split) and, for inking nothing, the next
    float32 above the largest probability (a float32 so that a graph comparing in float32 inks
    nothing too). One sort and cumulative sums: O(n log n). Where several thresholds cost the same,
    the highest wins (the fewest dies inked).
    """
    _check_costs(escape_cost, overkill_cost)
    fail, p = _check(labels, probabilities)
    order = np.argsort(p, kind="stable")
    p, fail = p[order], fail[order]
    values, first = np.unique(p, return_index=True)  # distinct probabilities, where each starts
    fails_below = np.concatenate([[0], np.cumsum(fail)])  # fails_below[i]: fails among p[:i]
    n, n_fail = len(p), int(fails_below[-1])
    # Threshold values[k] inks p[first[k]:]; the last candidate (index len(p)) inks nothing.
    starts = np.append(first, n)
    escapes = fails_below[starts]
    overkill = (n - n_fail) - (starts - escapes)  # passes at or above the threshold
    costs = (escape_cost * escapes + overkill_cost * overkill) / n
    above_all = np.nextafter(np.float32(values[-1]), np.float32(np.inf))  # > values[-1] however it rounds
    thresholds = np.append(values, np.float64(above_all))
    best = len(costs) - 1 - int(np.argmin(costs[::-1]))  # highest threshold among the minima
    return float(thresholds[best]), float(costs[best])


def fit(labels, probabilities, escape_cost: float, overkill_cost: float, **extra: Any) -> OperatingPoint:
    """The cost-minimising `OperatingPoint` on labelled dies (the Trainer's validation split)."""
    threshold, cost = choose_threshold(labels, probabilities, escape_cost, overkill_cost)
    return OperatingPoint(
        threshold=threshold,
        escape_cost=float(escape_cost),
        overkill_cost=float(overkill_cost),
        expected_cost=cost,
        n_dies=int(np.size(probabilities)),
        extra=extra,
    )
