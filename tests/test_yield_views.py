"""Bin Paretos, yield tables and the site comparison on small hand-made dies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data import yield_views


def _dies() -> pd.DataFrame:
    # 10 dies on one wafer: bins 1 (good) x6, 5 x3, 7 x1; two sites.
    return pd.DataFrame(
        {
            "lot_id": ["L1"] * 10,
            "wafer_id": ["W1"] * 10,
            "head": [1] * 10,
            "site": [0, 1] * 5,
            "hard_bin": [1, 5, 1, 5, 1, 5, 1, 7, 1, 1],
            "soft_bin": [1, 50, 1, 51, 1, 50, 1, 70, 1, 1],
            "sort_pass": [True, False, True, False, True, False, True, False, True, True],
        }
    )


def test_bin_pareto_counts_fails_largest_first():
    table = yield_views.bin_pareto(_dies())
    assert table["bin"].tolist() == [5, 7]
    assert table["dies"].tolist() == [3, 1]
    assert table["share_of_dies"].tolist() == pytest.approx([0.3, 0.1])
    assert table["cumulative_share_of_fails"].tolist() == pytest.approx([0.75, 1.0])
    soft = yield_views.bin_pareto(_dies(), "soft_bin")
    assert soft["bin"].tolist() == [50, 51, 70]  # ties broken by bin number


def test_yield_by_with_final_test_fails():
    dies = _dies()
    dies["ft_fail"] = [1, np.nan, 0, np.nan, 0, np.nan, 0, np.nan, 0, 1]
    table = yield_views.yield_by(dies, ["site"])
    # site 0: dies 0,2,4,6,8 all pass sort, one final-test fail; site 1: 1,3,5,7,9, one passes and fails FT.
    assert table["sort_yield"].tolist() == pytest.approx([1.0, 0.2])
    assert table["ft_fails"].tolist() == [1, 1]
    assert table["final_yield"].tolist() == pytest.approx([0.8, 0.0])


def test_a_bad_probe_site_is_flagged_and_good_ones_are_not():
    """Eight sites over 4,000 dies, seeded: seven yield 90%, site 5 yields 70%. Fisher's test of site 5
    against the rest gives p far below 0.001 / 8; for the others the chance of a flag is below 1e-3 each."""
    rng = np.random.default_rng(0)
    site = np.tile(np.arange(8), 500)
    passing = rng.random(site.size) < np.where(site == 5, 0.7, 0.9)
    dies = pd.DataFrame({"head": 1, "site": site, "sort_pass": passing})
    table = yield_views.site_comparison(dies)
    assert table.loc[table["flagged"], "site"].tolist() == [5]
    assert table.loc[table["site"] == 5, "difference"].item() < -0.15
