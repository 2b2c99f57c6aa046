"""The outlier screens yield and test engineers run on wafer-sort data: DPAT, NNR, GDBN and ZPAT.

Each screen is a pure, vectorised function of one wafer's dies (a DataFrame with integer die
indices `x`, `y`, a boolean `sort_pass` and parametric test columns `t<number>` /
`t<number>_p<pin>`, NaN where not measured) or, for ZPAT, of one lot's wafers. They read nothing
about any product: the tests are the wafer's test columns (`data.program.is_test_feature`) and the
limits come from the learned program (`data.program.TestDef`).

- DPAT (dynamic part average testing, AEC-Q001 rev D): per test and wafer, limits at the robust
  centre (median) +- k robust sigmas (IQR / 1.35) of the sort-passing dies, never outside the test's
  own limits. Per die: how many tests fall outside them, and the largest robust z.
- NNR (nearest-neighbour residual): per test, a die's value minus the median of its adjacent
  sort-passing dies', scaled robustly over the wafer. Per die: the largest scaled residual.
- GDBN (good die in a bad neighbourhood): sort-failing dies among the 8 neighbours, and a weighted
  count over the 5x5 window around the die.
- ZPAT (zonal PAT, wafer-map stacking): the share of the lot's other wafers that failed sort at
  the die's x/y.

`screen_wafer` adds the per-wafer columns, `screen_lot` the lot columns, `SCREEN_FEATURES` names the
numeric columns a model can take, and `fires` is the usual inking rule: a passing die is rejected
when any screen fires. Only sort-passing dies are screened (a failing die is rejected already):
failing dies get no DPAT / NNR figures and never fire, but they are the "bad" in GDBN and ZPAT.
Every threshold is a field of `ScreenConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd

from data.program import TestDef, TestProgram, is_test_feature

# IQR of a normal distribution in sigmas (2 x 0.6745 = 1.349); AEC-Q001 rev D writes 1.35.
IQR_PER_SIGMA = 1.35

# The numeric per-die columns a model can take (the *_fire flags are decisions, not features).
SCREEN_FEATURES = ("dpat_n_fail", "dpat_max_z", "nnr_max", "gdbn_bad3", "gdbn_weighted5", "zpat_fail_rate")
WAFER_COLUMNS = ("dpat_n_fail", "dpat_max_z", "nnr_max", "gdbn_bad3", "gdbn_weighted5", "gdbn_fire")
LOT_COLUMNS = ("zpat_fail_rate", "zpat_fire")

# The 8 adjacent offsets and the 16 of the 5x5 ring around them, as (dy, dx).
_RING1 = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
_RING2 = tuple((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) == 2)
_PAD = 2  # grid margin: the 5x5 window never leaves the padded grid

# Batcher's odd-even merge sort of 8 values (19 compare-exchanges), one line per layer. Sorting the
# 8 neighbours of every die and test at once with elementwise min / max takes a third of the time
# of np.nanmedian over the stacked neighbours (and less than np.sort along a length-8 axis), which
# pay a per-row overhead on each of a few hundred thousand rows (dies x tests).
_SORT8_LAYERS = (
    ((0, 1), (2, 3), (4, 5), (6, 7)),
    ((0, 2), (1, 3), (4, 6), (5, 7)),
    ((1, 2), (5, 6)),
    ((0, 4), (1, 5), (2, 6), (3, 7)),
    ((2, 4), (3, 5)),
    ((1, 2), (3, 4), (5, 6)),
)
_SORT8 = tuple(pair for layer in _SORT8_LAYERS for pair in layer)


@dataclasses.dataclass(frozen=True)
class ScreenConfig:
    """Every threshold of the screens. The defaults are starting points; tune them on returns data.

    Where each default comes from:
    - `dpat_k` = 6: AEC-Q001 rev D sets PAT limits at robust mean +- 6 robust sigma.
    - `min_dies` = 30: ours, not a standard. The quartiles of fewer values move a lot with one die
      (the IQR's relative error is about 20 % at 30 values), so a wafer with fewer sort-passing
      dies with a reading of a test is not screened on that test (DPAT) or its residuals (NNR).
    - `nnr_k` = 6: the DPAT multiple, applied to residuals; the NNR literature leaves k to the user,
      and 6 keeps the chance of a Gaussian die firing on any of 300 tests far below one in a wafer.
    - `nnr_min_neighbours` = 3: the fewest whose median is still one neighbour's value and cannot be
      dragged by a single odd neighbour (the median of 2 is their mean).
    - `gdbn3_threshold` = 6 (of 8): the common "surrounded" rule, at most two adjacent dies good.
      With 10 % random fails 6 of 8 happens to about 2 dies in 100,000; at 30 %, to 1 in 100.
    - `gdbn_inner_weight` = 2, `gdbn_outer_weight` = 1: the adjacent ring counts double the ring
      beyond it, so the weighted count runs 0..32 (8 x 2 + 16 x 1).
    - `gdbn5_threshold` = 14 (of 32): more than the 3x3 rule's 6 adjacent fails alone (12), so
      each rule fires where the other does not: 5 adjacent + 4 beyond, or 4 + 6, fire here only.
      At 10 % random fails the weighted count averages 3.2 (sd 2.1); 14 is five sds above.
    - `zpat_threshold` = 0.5: at least half of the lot's other wafers failed at that x/y, a
      systematic fail site rather than chance (at a 10 % fail rate, 12 or more of 24 wafers
      failing at one site has a probability near one in a million).
    - `zpat_min_wafers` = 5: ours; a rate over fewer other wafers (0 or 1 with one) is too coarse to
      ink on, so `zpat_fire` needs that many. `zpat_fail_rate` is given whenever there is one.
    """

    dpat_k: float = 6.0
    min_dies: int = 30
    nnr_k: float = 6.0
    nnr_min_neighbours: int = 3
    gdbn3_threshold: int = 6
    gdbn5_threshold: float = 14.0
    gdbn_inner_weight: float = 2.0
    gdbn_outer_weight: float = 1.0
    zpat_threshold: float = 0.5
    zpat_min_wafers: int = 5

    def __post_init__(self) -> None:
        if self.dpat_k <= 0 or self.nnr_k <= 0:
            raise ValueError("dpat_k and nnr_k must be positive")
        if self.min_dies < 2:
            raise ValueError("min_dies must be at least 2 (a spread needs two values)")
        if not 1 <= self.nnr_min_neighbours <= 8:
            raise ValueError("nnr_min_neighbours must be 1..8")
        if self.gdbn_inner_weight < 0 or self.gdbn_outer_weight < 0:
            raise ValueError("GDBN weights must not be negative")
        if not 0 < self.zpat_threshold <= 1:
            raise ValueError("zpat_threshold is a fail rate in (0, 1]")
        if self.zpat_min_wafers < 1:
            raise ValueError("zpat_min_wafers must be at least 1")


# ---------------------------------------------------------------------------------------------
# Shared helpers: the die grid and robust statistics over NaN-holed arrays.


def _grid(frames: Iterable[pd.DataFrame]) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[int, int]]:
    """Row / column indices of every frame's dies in one padded 2-D grid, and the grid's shape.

    The grid spans every frame's x/y plus `_PAD` on each side, so a 5x5 window around any die stays
    inside it and positions without a die are simply empty cells. Two dies at one x/y are an error:
    the caller resolves retests first (`data.wafers.assemble_wafer`)."""
    xys = [(f["x"].to_numpy(np.int64), f["y"].to_numpy(np.int64)) for f in frames]
    non_empty = [(x, y) for x, y in xys if len(x)]
    if not non_empty:
        return [(np.zeros(0, np.intp), np.zeros(0, np.intp)) for _ in xys], (1, 1)
    x0 = min(int(x.min()) for x, _ in non_empty) - _PAD
    y0 = min(int(y.min()) for _, y in non_empty) - _PAD
    width = max(int(x.max()) for x, _ in non_empty) - x0 + _PAD + 1
    height = max(int(y.max()) for _, y in non_empty) - y0 + _PAD + 1
    out = []
    for x, y in xys:
        row, col = (y - y0).astype(np.intp), (x - x0).astype(np.intp)
        if len(row) and np.bincount(row * width + col).max() > 1:
            raise ValueError("two dies at one x/y on a wafer: resolve retests before screening")
        out.append((row, col))
    return out, (height, width)


def _test_columns(wafer: pd.DataFrame) -> list[str]:
    return [c for c in wafer.columns if is_test_feature(str(c))]


def _values(wafer: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """[dies, tests] float64; NaN where not measured (and for inf, which has no place in a median)."""
    if not columns:
        return np.zeros((len(wafer), 0))
    values = wafer[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(values), values, np.nan)


def _quantiles_last_axis(a: np.ndarray, qs: tuple[float, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(count, [quantile q of each row]) over the last axis ignoring NaN, numpy's "linear" method.

    One sort serves every quantile (np.nanpercentile loops over the rows in Python)."""
    count = np.sum(~np.isnan(a), axis=-1)
    if a.shape[-1] == 0:
        return count, [np.full(a.shape[:-1], np.nan) for _ in qs]
    s = np.sort(a, axis=-1)  # NaN sorts last
    out = []
    for q in qs:
        pos = q * np.maximum(count - 1, 0)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
        v_lo = np.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
        v_hi = np.take_along_axis(s, hi[..., None], axis=-1)[..., 0]
        frac = pos - lo
        value = np.where(frac > 0, v_lo + (v_hi - v_lo) * frac, v_lo)
        out.append(np.where(count > 0, value, np.nan))
    return count, out


def _nanmedian8(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, median) over the first axis (length 8) of `stack`, ignoring NaN (NaN where all are).

    Overwrites `stack` (missing values become +inf, so they sort last)."""
    missing = np.isnan(stack)
    count = stack.shape[0] - missing.sum(axis=0)
    stack[missing] = np.inf
    a = list(stack)
    spare = np.empty_like(a[0])
    for i, j in _SORT8:  # compare-exchange into a spare buffer, then swap buffers: no copies
        np.minimum(a[i], a[j], out=spare)
        np.maximum(a[i], a[j], out=a[j])
        a[i], spare = spare, a[i]
    ordered = np.stack(a)
    lo = np.maximum(count - 1, 0) // 2
    hi = np.maximum(count // 2, lo)
    v_lo = np.take_along_axis(ordered, lo[None], axis=0)[0]
    v_hi = np.take_along_axis(ordered, hi[None], axis=0)[0]
    return count, np.where(count > 0, (v_lo + v_hi) / 2, np.nan)


def _robust_centre_spread(a: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust sigma (IQR / 1.35) of each row of `a` (values on the last axis, NaN missing).

    A row with a zero IQR (more than half its values equal: a discrete or quantised test) falls back
    to the standard deviation (over n, not n - 1), rather than screening every value off the median
    (sigma 0) or dropping the test. Values common on the wafer stay inside (with 10 % of the dies
    one step up, that step is z = 3.3), rare ones do not: a lone value unlike all the others, which
    are equal, has z = n / sqrt(n - 1), about sqrt(n), whatever its size, so it is caught at k = 6
    from 35 dies up. A row with no spread at all (every value equal) or fewer than `min_count`
    values gets NaN for both: it is not screened."""
    count, (q1, median, q3) = _quantiles_last_axis(a, (0.25, 0.5, 0.75))
    sigma = (q3 - q1) / IQR_PER_SIGMA
    flat = sigma == 0
    if flat.any():
        rows = a[flat]
        n = np.maximum(count[flat], 1)
        mean = np.nansum(rows, axis=-1) / n
        std = np.sqrt(np.nansum((rows - mean[..., None]) ** 2, axis=-1) / n)
        sigma[flat] = std
    usable = (count >= min_count) & (sigma > 0)
    return np.where(usable, median, np.nan), np.where(usable, sigma, np.nan)


def _max_abs(a: np.ndarray) -> np.ndarray:
    """Largest |value| of each row (last axis) ignoring NaN; NaN for a row with none."""
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], np.nan)
    filled = np.where(np.isnan(a), -np.inf, np.abs(a))
    best = filled.max(axis=-1)
    return np.where(np.isneginf(best), np.nan, best)


def _limits(tests: TestProgram | Iterable[TestDef], columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Low and high test limits per column (-inf / +inf where the test has none or is not listed)."""
    defs = tests.by_feature() if isinstance(tests, TestProgram) else {t.feature: t for t in tests}
    lo = np.array(
        [-np.inf if defs.get(c) is None or defs[c].lo_limit is None else defs[c].lo_limit for c in columns],
        dtype=np.float64,
    )
    hi = np.array(
        [np.inf if defs.get(c) is None or defs[c].hi_limit is None else defs[c].hi_limit for c in columns],
        dtype=np.float64,
    )
    return lo, hi


def _passing(wafer: pd.DataFrame) -> np.ndarray:
    return wafer["sort_pass"].to_numpy(bool)


# ---------------------------------------------------------------------------------------------
# DPAT


def _dpat_stats(
    values: np.ndarray, passing: np.ndarray, lo_limit: np.ndarray, hi_limit: np.ndarray, config: ScreenConfig
) -> tuple[np.ndarray, ...]:
    centre, sigma = _robust_centre_spread(values[passing].T, config.min_dies)
    # A PAT limit never lies outside the test limits: clip both into [lo_limit, hi_limit].
    pat_lo = np.clip(centre - config.dpat_k * sigma, lo_limit, hi_limit)
    pat_hi = np.clip(centre + config.dpat_k * sigma, lo_limit, hi_limit)
    return centre, sigma, pat_lo, pat_hi, np.sum(~np.isnan(values[passing]), axis=0)


def dpat_limits(
    wafer: pd.DataFrame, tests: TestProgram | Iterable[TestDef], config: ScreenConfig | None = None
) -> pd.DataFrame:
    """One wafer's DPAT limits, a row per test column: `n` (sort-passing dies with a reading),
    `centre` (median), `sigma` (IQR / 1.35, or the standard deviation where the IQR is zero),
    `pat_lo`, `pat_hi` (centre -+ dpat_k sigma, clipped into the test's limits). NaN where the test
    is not screened on this wafer (fewer than `min_dies` readings, or no spread)."""
    config = config or ScreenConfig()
    columns = _test_columns(wafer)
    lo_limit, hi_limit = _limits(tests, columns)
    centre, sigma, pat_lo, pat_hi, n = _dpat_stats(_values(wafer, columns), _passing(wafer), lo_limit, hi_limit, config)
    return pd.DataFrame(
        {"n": n, "centre": centre, "sigma": sigma, "pat_lo": pat_lo, "pat_hi": pat_hi},
        index=pd.Index(columns, name="feature"),
    )


def dpat(
    wafer: pd.DataFrame, tests: TestProgram | Iterable[TestDef], config: ScreenConfig | None = None
) -> pd.DataFrame:
    """Per die (same index as `wafer`): `dpat_n_fail`, the number of tests outside their PAT limits,
    and `dpat_max_z`, the largest |value - centre| / sigma over the die's tests.

    Only sort-passing dies are screened: a failing die gets 0 and NaN, as does a passing die with no
    reading on any screened test. A missing reading never counts. A reading exactly on a PAT limit
    is inside it. A die can fail a PAT limit clipped by a test limit with a z below `dpat_k`. A test
    whose IQR is zero on the wafer (a discrete test) uses its standard deviation instead; one that
    does not vary at all is not screened (see `_robust_centre_spread`)."""
    config = config or ScreenConfig()
    columns = _test_columns(wafer)
    values = _values(wafer, columns)
    passing = _passing(wafer)
    lo_limit, hi_limit = _limits(tests, columns)
    centre, sigma, pat_lo, pat_hi, _ = _dpat_stats(values, passing, lo_limit, hi_limit, config)
    screened = values[passing]
    outside = (screened < pat_lo) | (screened > pat_hi)  # NaN (missing or unscreened) compares False
    n_fail = np.zeros(len(wafer), dtype=np.int64)
    max_z = np.full(len(wafer), np.nan)
    n_fail[passing] = outside.sum(axis=1)
    max_z[passing] = _max_abs((screened - centre) / sigma)
    return pd.DataFrame({"dpat_n_fail": n_fail, "dpat_max_z": max_z}, index=wafer.index)


# ---------------------------------------------------------------------------------------------
# NNR


def nnr_residuals(wafer: pd.DataFrame, config: ScreenConfig | None = None) -> pd.DataFrame:
    """Scaled nearest-neighbour residuals, [dies, test columns] (same index as `wafer`).

    Per test: a sort-passing die's value minus the median of the values of its sort-passing
    neighbours among the 8 adjacent positions that have a reading (a failing die's readings are of
    a defective part, and its failing test is outside the limits by definition); none where fewer
    than `nnr_min_neighbours` have one, or the die has no reading. The residuals are then centred
    and scaled over the wafer, (r - median) / (IQR / 1.35), with the same zero-IQR fallback and
    `min_dies` floor as DPAT. NaN where there is no scaled residual (failing dies included)."""
    config = config or ScreenConfig()
    columns = _test_columns(wafer)
    values = _values(wafer, columns)
    passing = _passing(wafer)
    scaled = np.full(values.shape, np.nan)
    if passing.any() and columns:
        [(row, col)], (height, width) = _grid([wafer])
        # One row per grid cell, NaN where no passing die: [cells, tests].
        cells = np.full((height * width, len(columns)), np.nan)
        flat = row * width + col
        cells[flat[passing]] = values[passing]
        # [8 neighbours, passing dies, tests] in one gather (np.take beats 2-D fancy indexing).
        offsets = np.array([dy * width + dx for dy, dx in _RING1])
        count, median = _nanmedian8(np.take(cells, offsets[:, None] + flat[passing][None, :], axis=0))
        residual = np.where(count >= config.nnr_min_neighbours, values[passing] - median, np.nan)
        centre, sigma = _robust_centre_spread(residual.T, config.min_dies)
        scaled[passing] = (residual - centre) / sigma
    return pd.DataFrame(scaled, index=wafer.index, columns=columns)


def nnr(wafer: pd.DataFrame, config: ScreenConfig | None = None) -> pd.DataFrame:
    """Per die: `nnr_max`, the largest |scaled residual| over its tests (see `nnr_residuals`);
    NaN for a die with none."""
    scaled = nnr_residuals(wafer, config).to_numpy()
    return pd.DataFrame({"nnr_max": _max_abs(scaled)}, index=wafer.index)


# ---------------------------------------------------------------------------------------------
# GDBN


def gdbn(wafer: pd.DataFrame, config: ScreenConfig | None = None) -> pd.DataFrame:
    """Per die: `gdbn_bad3`, sort-failing dies among the 8 adjacent positions; `gdbn_weighted5`,
    gdbn_inner_weight x that + gdbn_outer_weight x the failing dies on the ring of 16 around them;
    `gdbn_fire`, a sort-passing die with gdbn_bad3 >= gdbn3_threshold or gdbn_weighted5 >=
    gdbn5_threshold. A position off the wafer or without a die counts as neither pass nor fail."""
    config = config or ScreenConfig()
    passing = _passing(wafer)
    [(row, col)], shape = _grid([wafer])
    fails = np.zeros(shape, dtype=np.int64)
    fails[row, col] = ~passing
    bad3 = sum((fails[row + dy, col + dx] for dy, dx in _RING1), np.zeros(len(wafer), np.int64))
    bad_ring2 = sum((fails[row + dy, col + dx] for dy, dx in _RING2), np.zeros(len(wafer), np.int64))
    weighted = config.gdbn_inner_weight * bad3 + config.gdbn_outer_weight * bad_ring2.astype(np.float64)
    fire = passing & ((bad3 >= config.gdbn3_threshold) | (weighted >= config.gdbn5_threshold))
    return pd.DataFrame({"gdbn_bad3": bad3, "gdbn_weighted5": weighted, "gdbn_fire": fire}, index=wafer.index)


# ---------------------------------------------------------------------------------------------
# ZPAT


def zpat(wafers: list[pd.DataFrame], config: ScreenConfig | None = None) -> list[pd.DataFrame]:
    """Per die of each wafer of one lot: `zpat_fail_rate` and `zpat_fire`.

    The wafers are stacked by x/y. A die's rate is the share of the lot's *other* wafers with a die
    at its x/y whose die there failed sort: its own result is left out, so a failing die does not
    raise its own rate (and the feature carries no trace of the die's own sort verdict). NaN where
    no other wafer has a die there. `zpat_fire`: a sort-passing die whose rate is at least
    `zpat_threshold`, over at least `zpat_min_wafers` other wafers."""
    config = config or ScreenConfig()
    cells, shape = _grid(wafers)
    present = np.zeros(shape, dtype=np.int64)
    fails = np.zeros(shape, dtype=np.int64)
    for wafer, (row, col) in zip(wafers, cells, strict=True):
        present[row, col] += 1
        fails[row, col] += ~_passing(wafer)
    out = []
    for wafer, (row, col) in zip(wafers, cells, strict=True):
        passing = _passing(wafer)
        others = present[row, col] - 1
        other_fails = fails[row, col] - ~passing
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(others > 0, other_fails / np.maximum(others, 1), np.nan)
        fire = passing & (others >= config.zpat_min_wafers) & (rate >= config.zpat_threshold)
        out.append(pd.DataFrame({"zpat_fail_rate": rate, "zpat_fire": fire}, index=wafer.index))
    return out


# ---------------------------------------------------------------------------------------------
# Entry points


def screen_wafer(
    wafer: pd.DataFrame, tests: TestProgram | Iterable[TestDef], config: ScreenConfig | None = None
) -> pd.DataFrame:
    """`wafer` with the DPAT, NNR and GDBN columns added (`WAFER_COLUMNS`; replaced if present).

    `tests` gives the limits (a test column the program does not list is screened without limits);
    every die of the wafer must be there, sort fails included, since GDBN counts them."""
    config = config or ScreenConfig()
    added = pd.concat([dpat(wafer, tests, config), nnr(wafer, config), gdbn(wafer, config)], axis=1)
    return pd.concat([wafer.drop(columns=[c for c in WAFER_COLUMNS if c in wafer]), added], axis=1)


def screen_lot(wafers: list[pd.DataFrame], config: ScreenConfig | None = None) -> list[pd.DataFrame]:
    """Each wafer of one lot with `zpat_fail_rate` and `zpat_fire` added (replaced if present)."""
    config = config or ScreenConfig()
    return [
        pd.concat([wafer.drop(columns=[c for c in LOT_COLUMNS if c in wafer]), added], axis=1)
        for wafer, added in zip(wafers, zpat(wafers, config), strict=True)
    ]


def fires(frame: pd.DataFrame, config: ScreenConfig | None = None) -> pd.Series:
    """Ink a die when any screen fires: dpat_n_fail >= 1, nnr_max >= nnr_k, gdbn_fire or zpat_fire.

    Uses the screens whose columns `frame` has (a wafer screened without its lot has no ZPAT), and
    is False for sort-failing dies where `sort_pass` is there (they are rejected already)."""
    config = config or ScreenConfig()
    parts = []
    if "dpat_n_fail" in frame:
        parts.append(frame["dpat_n_fail"].to_numpy() >= 1)
    if "nnr_max" in frame:
        parts.append(frame["nnr_max"].to_numpy(np.float64) >= config.nnr_k)  # NaN compares False
    for flag in ("gdbn_fire", "zpat_fire"):
        if flag in frame:
            parts.append(frame[flag].to_numpy(bool))
    if not parts:
        raise ValueError("fires: the frame has no screen columns; run screen_wafer / screen_lot first")
    fired = np.logical_or.reduce(parts)
    if "sort_pass" in frame:
        fired &= frame["sort_pass"].to_numpy(bool)
    return pd.Series(fired, index=frame.index, name="screen_fire")
