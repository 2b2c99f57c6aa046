"""The lot bootstrap computed as lot weights (models/evaluation.RankedScores) against resampling the
frame itself (bootstrap_by_lot with `headline`), on the same draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import evaluation


def _frame(seed: int = 3, lots: int = 12, dies_per_lot: int = 400) -> pd.DataFrame:
    """Scores with lot effects, like the test split: fails cluster by lot, one continuous score
    (no ties) and one coarse score (heavy ties, like a screen's)."""
    rng = np.random.default_rng(seed)
    lot = np.repeat([f"L{i:02d}" for i in range(lots)], dies_per_lot)
    lot_rate = np.repeat(rng.uniform(0.01, 0.08, lots), dies_per_lot)
    fail = (rng.random(len(lot)) < lot_rate).astype(np.int64)
    model = fail * 0.8 + rng.normal(size=len(lot))
    coarse = np.round(model * 2) / 2
    return pd.DataFrame({"lot_id": lot, "ft_fail": fail, "model": model, "coarse": coarse})


def _resampled(frame: pd.DataFrame, columns: list[str], n_boot: int) -> dict:
    """The definition: each resample a concatenated frame, each figure sklearn's or catch_at's."""

    def metric(sample: pd.DataFrame) -> dict[str, float]:
        y = sample["ft_fail"].to_numpy()
        return {f"{c}|{k}": v for c in columns for k, v in evaluation.headline(y, sample[c].to_numpy()).items()}

    flat = evaluation.bootstrap_by_lot(frame, metric, n_boot, seed=0)
    table: dict = {c: {} for c in columns}
    for key, value in flat.items():
        column, name = key.split("|")
        table[column][name] = value
    return table


def test_weighted_bootstrap_equals_resampling_the_frame():
    frame = _frame()
    fast = evaluation.scores_table(frame, ["model", "coarse"], n_boot=60)
    slow = _resampled(frame, ["model", "coarse"], n_boot=60)
    for column in ("model", "coarse"):
        assert set(fast[column]) == set(slow[column])
        for name in ("auc", "pr_auc"):  # exact up to float summation order, ties included
            for part in ("value", "lo", "hi"):
                assert fast[column][name][part] == pytest.approx(slow[column][name][part], abs=1e-9)
    # No ties in the continuous score: catch rates are the same dies, so the same figures.
    for name in (k for k in fast["model"] if k.startswith("catch@")):
        for part in ("value", "lo", "hi"):
            assert fast["model"][name][part] == pytest.approx(slow["model"][name][part], abs=1e-9)


def test_unweighted_headline_is_sklearns():
    frame = _frame(seed=5)
    y, s = frame["ft_fail"].to_numpy(), frame["coarse"].to_numpy()
    ranked = evaluation.RankedScores(y, s).headline()
    reference = evaluation.headline(y, s)
    assert ranked["auc"] == pytest.approx(reference["auc"], abs=1e-12)
    assert ranked["pr_auc"] == pytest.approx(reference["pr_auc"], abs=1e-12)


def test_one_class_sample_has_no_figures():
    assert evaluation.RankedScores(np.zeros(5), np.arange(5.0)).headline() is None


def _paired_by_resampling(frame: pd.DataFrame, a: str, b: str, n_boot: int) -> list[float]:
    """The definition of the change gate's draws: each resample the rows of the drawn lots (or, with
    one lot, of drawn dies), concatenated, and sklearn's AUC of both columns on it."""
    from sklearn.metrics import roc_auc_score

    y, lots = frame["ft_fail"].to_numpy(), frame["lot_id"].to_numpy()
    names = np.unique(lots)
    groups = [np.flatnonzero(lots == name) for name in names]
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(n_boot):
        if len(names) >= 2:
            index = np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))])
        else:
            index = rng.integers(len(y), size=len(y))
        if np.unique(y[index]).size == 2:
            draws.append(
                roc_auc_score(y[index], frame[a].to_numpy()[index])
                - roc_auc_score(y[index], frame[b].to_numpy()[index])
            )
    return draws


@pytest.mark.parametrize("lots", [12, 1])
def test_the_paired_auc_change_equals_resampling_the_rows(lots):
    """Lot resamples as weights (dies when there is one lot), ties included: the same draws and
    the same interval as resampling the rows themselves."""
    frame = _frame(seed=7, lots=lots, dies_per_lot=4800 // lots)
    fast = evaluation.paired_auc_change(frame, "model", "coarse", n_boot=80)
    draws = _paired_by_resampling(frame, "model", "coarse", n_boot=80)
    assert fast["resampled"] == ("lot" if lots > 1 else "die")
    assert fast["lo"] == pytest.approx(np.percentile(draws, 2.5), abs=1e-12)
    assert fast["hi"] == pytest.approx(np.percentile(draws, 97.5), abs=1e-12)
    assert fast["difference"] == pytest.approx(fast["candidate_auc"] - fast["baseline_auc"])
