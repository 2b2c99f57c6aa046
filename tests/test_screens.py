"""The outlier screens (data/screens.py) on hand-made wafers, each expected value worked out by hand.

Grids are 3x3 or 5x5; on a 3x3 wafer the dies are listed row by row from the top:

    (-1, 1) ( 0, 1) ( 1, 1)        index 0 1 2
    (-1, 0) ( 0, 0) ( 1, 0)              3 4 5
    (-1,-1) ( 0,-1) ( 1,-1)              6 7 8

Quartiles are numpy's default ("linear"): the q-quantile of n sorted values sits at position
q * (n - 1), interpolated between neighbours. Robust sigma = IQR / 1.35.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from data.program import TestDef
from data.screens import (
    SCREEN_FEATURES,
    ScreenConfig,
    _robust_centre_spread,
    dpat,
    dpat_limits,
    fires,
    gdbn,
    nnr,
    nnr_residuals,
    screen_lot,
    screen_wafer,
    zpat,
)

NAN = float("nan")
GRID3 = [(x, y) for y in (1, 0, -1) for x in (-1, 0, 1)]


def wafer3(sort_pass: list[bool], **tests: list[float]) -> pd.DataFrame:
    """A 3x3 wafer, dies in GRID3 order, with the given sort results and test columns."""
    frame = pd.DataFrame({"x": [x for x, _ in GRID3], "y": [y for _, y in GRID3], "sort_pass": sort_pass})
    for name, values in tests.items():
        frame[name] = np.array(values, dtype=np.float32)
    return frame


def at(frame: pd.DataFrame, x: int, y: int, column: str):
    return frame.loc[(frame["x"] == x) & (frame["y"] == y), column].item()


# ---------------------------------------------------------------------------------------------
# DPAT

# Die 8 fails sort (its readings are never screened); die 7 passed but has no readings.
DPAT_WAFER = wafer3(
    [True] * 8 + [False],
    t1=[10, 11, 12, 13, 40, 14, 15, NAN, 1000],
    t2=[1, 2, 3, 4, 5, 6, 8, NAN, -50],
)
# t2 has limits 0..7.5 (a non-binning test: die 6 reads 8, above the limit, yet passed sort).
DPAT_TESTS = [TestDef(1, "t1"), TestDef(2, "t2", lo_limit=0.0, hi_limit=7.5)]
SMALL = ScreenConfig(min_dies=5)


def test_dpat_limits_median_iqr_and_clamped_by_the_test_limits():
    limits = dpat_limits(DPAT_WAFER, DPAT_TESTS, SMALL)
    # t1 over the 7 passing readings 10 11 12 13 14 15 40 (1000 is a sort fail, NaN is missing):
    # Q1 at position 1.5 = 11.5, median at 3 = 13, Q3 at 4.5 = 14.5; sigma = 3 / 1.35 = 2.2222.
    # PAT = 13 -+ 6 x 2.2222 = -0.3333 .. 26.3333; t1 has no limits, nothing to clamp.
    sigma = 3 / 1.35
    assert limits.loc["t1", "n"] == 7
    assert limits.loc["t1", "centre"] == pytest.approx(13)
    assert limits.loc["t1", "sigma"] == pytest.approx(sigma)
    assert limits.loc["t1", "pat_lo"] == pytest.approx(13 - 6 * sigma)
    assert limits.loc["t1", "pat_hi"] == pytest.approx(13 + 6 * sigma)
    # t2 over 1 2 3 4 5 6 8: Q1 2.5, median 4, Q3 5.5, sigma 2.2222 again. Raw PAT -9.33 .. 17.33
    # lies outside the test limits 0 .. 7.5 on both sides, so the PAT limits are the test limits.
    assert limits.loc["t2", "centre"] == pytest.approx(4)
    assert limits.loc["t2", "pat_lo"] == 0.0
    assert limits.loc["t2", "pat_hi"] == 7.5


def test_dpat_per_die_fails_and_max_z():
    out = dpat(DPAT_WAFER, DPAT_TESTS, SMALL)
    sigma = 3 / 1.35
    # Die 4: t1 = 40 is above 26.33 (z = 27 / 2.2222 = 12.15); t2 = 5 is inside (z = 1 / 2.2222).
    assert out["dpat_n_fail"][4] == 1
    assert out["dpat_max_z"][4] == pytest.approx(27 / sigma)
    # Die 6: t2 = 8 is above the clamped PAT limit 7.5 although its z is only 4 / 2.2222 = 1.8;
    # t1 = 15 has z = 2 / 2.2222 = 0.9.
    assert out["dpat_n_fail"][6] == 1
    assert out["dpat_max_z"][6] == pytest.approx(4 / sigma)
    # Die 0: t1 = 10 and t2 = 1 are both 3 from their centres: z = 1.35, inside.
    assert out["dpat_n_fail"][0] == 0
    assert out["dpat_max_z"][0] == pytest.approx(3 / sigma)
    # Die 7 (passed, nothing measured) and die 8 (sort fail): no fails, no z.
    assert out["dpat_n_fail"][7] == 0 and math.isnan(out["dpat_max_z"][7])
    assert out["dpat_n_fail"][8] == 0 and math.isnan(out["dpat_max_z"][8])
    assert out["dpat_n_fail"].sum() == 2


def test_dpat_k_and_min_dies_are_configurable():
    # k = 1: t1 PAT 13 -+ 2.2222 = 10.78 .. 15.22 and t2 4 -+ 2.2222 = 1.78 .. 6.22. Die 0
    # (t1 = 10, t2 = 1) now fails both; die 1 (t1 = 11, t2 = 2) is just inside both; dies 4
    # (t1 = 40) and 6 (t2 = 8) fail one each.
    out = dpat(DPAT_WAFER, DPAT_TESTS, ScreenConfig(min_dies=5, dpat_k=1))
    assert out["dpat_n_fail"].tolist() == [2, 0, 0, 0, 1, 0, 1, 0, 0]
    # min_dies 8: only 7 passing readings per test, so no test is screened on this wafer.
    out = dpat(DPAT_WAFER, DPAT_TESTS, ScreenConfig(min_dies=8))
    assert (out["dpat_n_fail"] == 0).all() and out["dpat_max_z"].isna().all()


def test_dpat_zero_iqr_falls_back_to_the_standard_deviation():
    # t3 is discrete: eight dies read 5, one reads 9. Q1 = Q3 = 5, so the IQR is 0.
    # Fallback: mean = 49 / 9, sd = sqrt((8 x (4/9)^2 + (32/9)^2) / 9) = 4 sqrt(8) / 9 = 1.2571.
    # z of the 9 = 4 / 1.2571 = 9 / sqrt(8) = 3.18: inside at k = 6, outside at k = 3.
    # t4 never varies: no spread, not screened (no limits, no z).
    wafer = wafer3([True] * 9, t3=[5] * 8 + [9], t4=[7] * 9)
    limits = dpat_limits(wafer, [], SMALL)
    assert limits.loc["t3", "sigma"] == pytest.approx(4 * math.sqrt(8) / 9)
    assert math.isnan(limits.loc["t4", "sigma"]) and math.isnan(limits.loc["t4", "pat_hi"])
    out = dpat(wafer, [], SMALL)
    assert out["dpat_max_z"][8] == pytest.approx(9 / math.sqrt(8))
    assert out["dpat_n_fail"][8] == 0
    assert out["dpat_max_z"][0] == 0.0  # 5 is the median of t3; t4 gives no z
    assert dpat(wafer, [], ScreenConfig(min_dies=5, dpat_k=3))["dpat_n_fail"][8] == 1


def test_robust_statistics_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 101))
    a[rng.random(a.shape) < 0.2] = np.nan
    centre, sigma = _robust_centre_spread(a, 2)
    q1, q2, q3 = np.nanpercentile(a, [25, 50, 75], axis=1)
    np.testing.assert_allclose(centre, q2)
    np.testing.assert_allclose(sigma, (q3 - q1) / 1.35)


# ---------------------------------------------------------------------------------------------
# NNR


def test_nnr_residual_is_value_minus_neighbour_median_scaled_over_the_wafer():
    # t1:   1  2  3
    #       4 50  6
    #       7  8  9
    wafer = wafer3([True] * 9, t1=[1, 2, 3, 4, 50, 6, 7, 8, 9])
    # Neighbour medians and residuals (value - median):
    #   0: {2, 4, 50} -> 4, r = -3            1: {1, 3, 4, 50, 6} -> 4, r = -2
    #   2: {2, 50, 6} -> 6, r = -3            3: {1, 2, 50, 7, 8} -> 7, r = -3
    #   4: {1, 2, 3, 4, 6, 7, 8, 9} -> 5, r = 45
    #   5: {2, 3, 50, 8, 9} -> 8, r = -2      6: {4, 50, 8} -> 8, r = -1
    #   7: {4, 50, 6, 7, 9} -> 7, r = 1       8: {50, 6, 8} -> 8, r = 1
    # Residuals sorted: -3 -3 -3 -2 -2 -1 1 1 45: Q1 -3, median -2, Q3 1, sigma = 4 / 1.35.
    scale = 1.35 / 4
    out = nnr_residuals(wafer, ScreenConfig(min_dies=5))
    assert out["t1"][4] == pytest.approx((45 + 2) * scale)  # 15.86
    assert out["t1"][0] == pytest.approx((-3 + 2) * scale)
    assert out["t1"][7] == pytest.approx((1 + 2) * scale)
    assert nnr(wafer, ScreenConfig(min_dies=5))["nnr_max"][4] == pytest.approx(47 * scale)


def test_nnr_edge_die_with_too_few_neighbours_gets_no_residual():
    wafer = wafer3([True] * 9, t1=[1, 2, 3, 4, 50, 6, 7, 8, 9])
    # With at least 4 neighbours required, the corners (3 neighbours each) get none; the other
    # residuals are as above: -2 (1), -3 (3), 45 (4), -2 (5), 1 (7). Sorted -3 -2 -2 1 45:
    # Q1 -2, median -2, Q3 1, sigma = 3 / 1.35.
    out = nnr_residuals(wafer, ScreenConfig(min_dies=5, nnr_min_neighbours=4))
    assert out["t1"][[0, 2, 6, 8]].isna().all()
    assert out["t1"][4] == pytest.approx(47 * 1.35 / 3)
    assert out["t1"][3] == pytest.approx(-1 * 1.35 / 3)


def test_nnr_ignores_missing_readings_and_sort_fails():
    # t1:   1  -  3        die 1 has no reading; die 8 failed sort (its 900 is never a neighbour)
    #       4  5  6
    #       7  8  900
    wafer = wafer3([True] * 8 + [False], t1=[1, NAN, 3, 4, 5, 6, 7, 8, 900])
    # 0: measured passing neighbours {4, 5}: 2 < 3, none.   2: {5, 6}: none.
    # 3: {1, 5, 7, 8} -> 6, r = -2      4: {1, 3, 4, 6, 7, 8} -> 5, r = 0
    # 5: {3, 5, 8} -> 5, r = 1          6: {4, 5, 8} -> 5, r = 2
    # 7: {4, 5, 6, 7} -> 5.5, r = 2.5   (with the 900 it would be 6 and r = 2)
    # Residuals sorted -2 0 1 2 2.5: Q1 0, median 1, Q3 2, sigma = 2 / 1.35.
    scale = 1.35 / 2
    out = nnr_residuals(wafer, ScreenConfig(min_dies=5))["t1"]
    assert out[[0, 1, 2, 8]].isna().all()
    assert out[3] == pytest.approx(-3 * scale)
    assert out[4] == pytest.approx(-1 * scale)
    assert out[5] == pytest.approx(0.0)
    assert out[7] == pytest.approx(1.5 * scale)
    maxima = nnr(wafer, ScreenConfig(min_dies=5))["nnr_max"]
    assert maxima[3] == pytest.approx(3 * scale)  # |-2.025|
    assert math.isnan(maxima[8]) and math.isnan(maxima[0])


def test_nnr_max_is_over_tests():
    # Two tests: t1 as in the first NNR test, t2 = -t1 (the same |residuals|), t3 = t1 x 10
    # scaled the same; nnr_max of the centre die is still 47 x 1.35 / 4.
    t1 = [1, 2, 3, 4, 50, 6, 7, 8, 9]
    wafer = wafer3([True] * 9, t1=t1, t2=[-v for v in t1], t3=[10 * v for v in t1])
    out = nnr_residuals(wafer, ScreenConfig(min_dies=5))
    # t2: residuals negate, sorted -45 -1 -1 1 2 2 3 3 3: Q1 -1, median 2, Q3 3, sigma 4 / 1.35;
    # centre die (-45 - 2) x 1.35 / 4 = -15.86.
    assert out["t2"][4] == pytest.approx(-47 * 1.35 / 4)
    assert out["t3"][4] == pytest.approx(47 * 1.35 / 4)
    assert nnr(wafer, ScreenConfig(min_dies=5))["nnr_max"][4] == pytest.approx(47 * 1.35 / 4)


# ---------------------------------------------------------------------------------------------
# GDBN

# 5x5 wafer, x and y -2..2, no die at (2, 2) (off the wafer). F = failed sort, - = no die:
#   y= 2:  F  .  F  .  -
#   y= 1:  .  F  .  .  .
#   y= 0:  F  .  .  F  .
#   y=-1:  .  .  F  .  .
#   y=-2:  .  .  .  .  F
GDBN_FAILS = {(-2, 2), (0, 2), (-1, 1), (-2, 0), (1, 0), (0, -1), (2, -2)}
GDBN_WAFER = pd.DataFrame(
    [
        {"x": x, "y": y, "sort_pass": (x, y) not in GDBN_FAILS}
        for y in range(2, -3, -1)
        for x in range(-2, 3)
        if (x, y) != (2, 2)
    ]
)


def test_gdbn_counts_3x3_and_weighted_5x5():
    out = pd.concat([GDBN_WAFER, gdbn(GDBN_WAFER)], axis=1)
    # Centre (0, 0): adjacent fails (-1, 1), (1, 0), (0, -1) -> 3; on the ring beyond, (-2, 2),
    # (0, 2), (-2, 0), (2, -2) -> 4. Weighted: 2 x 3 + 1 x 4 = 10.
    assert at(out, 0, 0, "gdbn_bad3") == 3
    assert at(out, 0, 0, "gdbn_weighted5") == 10
    # Edge die (2, 1): adjacent positions (1, 2) (2, 2: no die) (1, 1) (1, 0) F (2, 0), three off
    # the wafer -> 1. Ring: the row y = -1 (0, -1) F (1, -1) (2, -1), the column x = 0 (0, 0)
    # (0, 1) (0, 2) F, the rest off the wafer -> 2. Weighted: 2 x 1 + 2 = 4.
    assert at(out, 2, 1, "gdbn_bad3") == 1
    assert at(out, 2, 1, "gdbn_weighted5") == 4
    # Corner (-2, -2): adjacent (-2, -1) (-1, -1) (-1, -2) all pass -> 0; ring: (-2, 0) F and
    # (0, -1) F (and (0, -2), (-1, 0), (0, 0) pass) -> 2. Weighted 2.
    assert at(out, -2, -2, "gdbn_bad3") == 0
    assert at(out, -2, -2, "gdbn_weighted5") == 2
    assert not out["gdbn_fire"].any()  # defaults 6 and 14: nothing here reaches them


def test_gdbn_thresholds_and_weights_are_configurable():
    def fire(**kw) -> bool:
        return at(pd.concat([GDBN_WAFER, gdbn(GDBN_WAFER, ScreenConfig(**kw))], axis=1), 0, 0, "gdbn_fire")

    assert fire(gdbn3_threshold=6, gdbn5_threshold=10)  # the weighted rule: 10 >= 10
    assert fire(gdbn3_threshold=3, gdbn5_threshold=11)  # the 3x3 rule: 3 >= 3
    assert not fire(gdbn3_threshold=4, gdbn5_threshold=11)
    # Weights 1 and 0.5: 1 x 3 + 0.5 x 4 = 5.
    out = gdbn(GDBN_WAFER, ScreenConfig(gdbn_inner_weight=1, gdbn_outer_weight=0.5))
    assert at(pd.concat([GDBN_WAFER, out], axis=1), 0, 0, "gdbn_weighted5") == 5


def test_gdbn_never_fires_on_a_sort_fail():
    out = pd.concat([GDBN_WAFER, gdbn(GDBN_WAFER, ScreenConfig(gdbn3_threshold=1))], axis=1)
    # (1, 0) failed sort and has a failing neighbour (0, -1): counted, but it is not a good die.
    assert at(out, 1, 0, "gdbn_bad3") == 1
    assert not at(out, 1, 0, "gdbn_fire")
    assert at(out, 0, 0, "gdbn_fire")
    assert not out.loc[~out["sort_pass"], "gdbn_fire"].any()


# ---------------------------------------------------------------------------------------------
# ZPAT


def lot_wafer(fails: set[tuple[int, int]], missing: set[tuple[int, int]] = frozenset()) -> pd.DataFrame:
    return pd.DataFrame([{"x": x, "y": y, "sort_pass": (x, y) not in fails} for x, y in GRID3 if (x, y) not in missing])


def test_zpat_rate_leaves_the_die_s_own_wafer_out():
    # Four wafers A B C D. At (0, 0): A passes, B C D fail. At (1, 1): only A fails.
    # At (-1, -1): D has no die, B fails.
    lot = [
        lot_wafer({(1, 1)}),
        lot_wafer({(0, 0), (-1, -1)}),
        lot_wafer({(0, 0)}),
        lot_wafer({(0, 0)}, missing={(-1, -1)}),
    ]
    a, b, c, d = (pd.concat([w, z], axis=1) for w, z in zip(lot, zpat(lot, ScreenConfig()), strict=True))
    # (0, 0): for A, the other three all failed -> 3/3; for B (itself failing), C and D of A C D -> 2/3.
    assert at(a, 0, 0, "zpat_fail_rate") == 1.0
    assert at(b, 0, 0, "zpat_fail_rate") == pytest.approx(2 / 3)
    # (1, 1): A's own fail is not in A's rate (0/3); B sees A's fail (1/3).
    assert at(a, 1, 1, "zpat_fail_rate") == 0.0
    assert at(b, 1, 1, "zpat_fail_rate") == pytest.approx(1 / 3)
    # (-1, -1): only A, B, C have a die there. For A: B failed, C passed -> 1/2; for B: 0/2.
    assert at(a, -1, -1, "zpat_fail_rate") == 0.5
    assert at(b, -1, -1, "zpat_fail_rate") == 0.0
    assert at(c, -1, -1, "zpat_fail_rate") == 0.5
    # Default zpat_min_wafers 5: no position has 5 other wafers in a lot of 4, nothing fires.
    assert not any(w["zpat_fire"].any() for w in (a, b, c, d))


def test_zpat_fire_threshold_and_minimum_wafers():
    lot = [
        lot_wafer({(1, 1)}),
        lot_wafer({(0, 0), (-1, -1)}),
        lot_wafer({(0, 0)}),
        lot_wafer({(0, 0)}, missing={(-1, -1)}),
    ]
    a, b, *_ = (
        pd.concat([w, z], axis=1)
        for w, z in zip(lot, zpat(lot, ScreenConfig(zpat_threshold=0.5, zpat_min_wafers=2)), strict=True)
    )
    assert at(a, 0, 0, "zpat_fire")  # 1.0 over 3 others
    assert at(a, -1, -1, "zpat_fire")  # 0.5 over 2 others
    assert not at(b, 0, 0, "zpat_fire")  # 2/3, but B's die there failed sort: already rejected
    assert not at(b, 1, 1, "zpat_fire")  # 1/3
    a3 = pd.concat([lot[0], zpat(lot, ScreenConfig(zpat_min_wafers=3))[0]], axis=1)
    assert at(a3, 0, 0, "zpat_fire") and not at(a3, -1, -1, "zpat_fire")  # (-1, -1) has only 2 others


def test_zpat_single_wafer_lot_has_no_rate():
    [out] = screen_lot([lot_wafer({(0, 0)})])
    assert out["zpat_fail_rate"].isna().all() and not out["zpat_fire"].any()


# ---------------------------------------------------------------------------------------------
# Entry points


def test_screen_wafer_adds_the_columns_and_keeps_the_wafer():
    wafer = DPAT_WAFER.set_index(pd.Index(range(100, 109)))  # any index
    out = screen_wafer(wafer, DPAT_TESTS, SMALL)
    assert list(out.columns[: len(wafer.columns)]) == list(wafer.columns)
    assert set(SCREEN_FEATURES) - {"zpat_fail_rate"} <= set(out.columns)
    assert out.index.equals(wafer.index)
    assert out.loc[104, "dpat_n_fail"] == 1
    assert out["gdbn_bad3"].dtype == np.int64 and out["gdbn_fire"].dtype == bool
    again = screen_wafer(out, DPAT_TESTS, SMALL)  # screening twice replaces, never duplicates
    assert list(again.columns) == list(out.columns)
    [lot] = screen_lot([out])
    assert set(SCREEN_FEATURES) <= set(lot.columns)


def test_a_wafer_with_no_passing_die_or_no_die():
    failed = screen_wafer(DPAT_WAFER.assign(sort_pass=False), DPAT_TESTS, SMALL)
    assert (failed["dpat_n_fail"] == 0).all() and failed["dpat_max_z"].isna().all()
    assert failed["nnr_max"].isna().all() and not failed["gdbn_fire"].any()
    assert failed["gdbn_bad3"][4] == 8
    empty = screen_wafer(DPAT_WAFER.iloc[:0], DPAT_TESTS, SMALL)
    assert empty.empty and set(SCREEN_FEATURES) - {"zpat_fail_rate"} <= set(empty.columns)


def test_two_dies_at_one_position_is_an_error():
    wafer = pd.concat([DPAT_WAFER, DPAT_WAFER.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="two dies at one x/y"):
        screen_wafer(wafer, DPAT_TESTS, SMALL)


def test_fires_is_any_screen_on_passing_dies():
    frame = pd.DataFrame(
        {
            "sort_pass": [True, True, True, True, True, True, False],
            "dpat_n_fail": [0, 1, 0, 0, 0, 0, 3],
            "nnr_max": [5.9, 0.0, 6.0, NAN, 0.0, 0.0, 99.0],
            "gdbn_fire": [False, False, False, True, False, False, False],
            "zpat_fire": [False, False, False, False, True, False, False],
        }
    )
    assert fires(frame, ScreenConfig()).tolist() == [False, True, True, True, True, False, False]
    assert fires(frame, ScreenConfig(nnr_k=5.5)).tolist()[0]
    with pytest.raises(ValueError):
        fires(frame[["sort_pass"]])


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        ScreenConfig(dpat_k=0)
    with pytest.raises(ValueError):
        ScreenConfig(nnr_min_neighbours=9)
    with pytest.raises(ValueError):
        ScreenConfig(zpat_threshold=1.5)


def test_a_planted_outlier_on_a_synthetic_wafer_is_caught():
    # A whole generated wafer (no product knowledge used): one passing die's reading of one test
    # moved 30 robust sigmas up must fail DPAT and stand out in NNR; the unmodified wafer's dies
    # mostly pass every screen at the defaults.
    from data.synthetic import GeneratorConfig, generate

    wafer = next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=3)))
    dies, tests = wafer.dies.copy(), wafer.file_program().tests
    test = next(t for t in tests if t.hi_limit is None or t.lo_limit is None)
    limits = dpat_limits(dies, tests)
    victim = dies.index[dies["sort_pass"] & dies[test.feature].notna()][len(dies) // 3]
    step = 30 * limits.loc[test.feature, "sigma"]
    dies.loc[victim, test.feature] += step if test.hi_limit is None else -step
    out = screen_wafer(dies, tests)
    assert out.loc[victim, "dpat_n_fail"] >= 1
    assert out.loc[victim, "nnr_max"] >= 6
    assert fires(out)[victim]
    passing = out[out["sort_pass"]]
    assert fires(passing).mean() < 0.05
