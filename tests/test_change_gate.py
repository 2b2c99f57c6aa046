"""The noise-aware change gate (components/noise_aware_evaluator): its statistics and its config edit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow_model_analysis as tfma

from components.noise_aware_evaluator import executor
from pipeline.pipeline import eval_config


def _frame(lots: int, dies_per_lot: int, worse_by: float, seed: int) -> pd.DataFrame:
    """Lots of dies whose fail risk grows with a latent score; the candidate sees the latent score
    with noise, the baseline with the same noise plus `worse_by` more of its own."""
    rng = np.random.default_rng(seed)
    n = lots * dies_per_lot
    latent = rng.normal(size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * latent - 3.5)))).astype(int)
    shared = rng.normal(size=n)
    return pd.DataFrame(
        {
            "lot_id": np.repeat([f"L{i:03d}" for i in range(lots)], dies_per_lot),
            "ft_fail": labels,
            "baseline": latent + shared,
            "candidate": latent + shared + worse_by * rng.normal(size=n),
        }
    )


def test_the_same_model_is_blessable_with_zero_difference():
    frame = _frame(8, 2000, 0.0, seed=0)
    report = executor.gate(frame, cap=0.02)
    assert report["difference"] == 0.0 and report["se"] == 0.0
    assert report["blessable"] and report["tolerance"] == 0.0
    assert (report["dies"], report["lots"]) == (16_000, 8)


def test_a_clearly_worse_model_is_refused():
    # Noise of 3x the signal's spread on top of the baseline's: an AUC drop of about 0.15 (measured
    # on this seed), far beyond both the bootstrap noise and the cap.
    report = executor.gate(_frame(8, 2000, 3.0, seed=0), cap=0.02)
    assert report["difference"] < -0.1
    assert not report["blessable"]


def test_tolerance_shrinks_with_more_test_lots():
    """The same two models: five times the lots, a smaller standard error (about 1/sqrt(5) of it;
    the bound 0.7 leaves room for the bootstrap's own noise at these sizes, seeded)."""
    few = executor.gate(_frame(6, 1500, 0.5, seed=1), cap=1.0)
    many = executor.gate(_frame(30, 1500, 0.5, seed=1), cap=1.0)
    assert 0 < many["se"] < 0.7 * few["se"]
    assert many["tolerance"] == pytest.approx(executor.Z * many["se"])


def test_the_cap_bounds_the_tolerance_on_a_noisy_split():
    report = executor.gate(_frame(3, 300, 1.0, seed=2), cap=0.001)
    assert executor.Z * report["se"] > 0.001
    assert report["tolerance"] == 0.001


def test_the_pipeline_config_has_one_change_threshold_to_resize():
    config = eval_config(min_auc=0.6, max_auc_drop=0.02, operating_threshold=0.1)
    (threshold,) = executor.change_thresholds(config)
    assert threshold.absolute.value == pytest.approx(-0.02)
    threshold.absolute.value = -0.005
    (again,) = executor.change_thresholds(config)
    assert again.absolute.value == pytest.approx(-0.005)
    assert isinstance(config, tfma.EvalConfig)


def test_a_single_test_lot_resamples_dies():
    """One lot cannot be resampled as lots (every draw would be that lot, a zero spread)."""
    frame = _frame(1, 5000, 0.5, seed=3)
    report = executor.gate(frame, cap=1.0)
    assert report["resampled"] == "die" and report["se"] > 0
    assert executor.gate(_frame(4, 1000, 0.5, seed=3), cap=1.0)["resampled"] == "lot"
