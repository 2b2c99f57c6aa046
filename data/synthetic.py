"""Seeded, deterministic generator of wafer-sort data with final-test labels, for any registered product.

The model of the fab, in the order the generator applies it:

1. Latent process variation. Every die has four latent factors (see `test_program.LATENT_FACTORS`),
   the sum of a lot effect, a wafer effect, a radial centre-to-edge profile per wafer, and die noise.
2. Parametric tests of the product's program (`data/products.py`) respond linearly (or
   log-normally) to those factors, plus a small per-site offset (multi-site probe cards are never
   perfectly matched), a "bad site" on some lots, and measurement noise. A multi-pin test (STDF
   MPR) gives one value per pin, each its own column.
3. Spatial defect signatures (centre, edge-ring, edge-local, scratch, donut, random, near-full) on a
   share of wafers raise a per-die defect density; a die hit by a defect shows gross leakage on the
   program's defect-sensitive tests.
4. Wafer sort runs the test program in order and stops on the first failing test, as production
   test flows do: the die gets that test's family hard bin and a soft bin naming the test; later
   tests are not measured (missing, not zero). Passing dies get the pass bin, or the product's
   speed-grade bin if it has one and the die is slow; both are good bins (`sort_pass`).
5. The label: dies that pass sort (any good bin) go on to final test, where some still fail. Their
   failure probability (recorded, so later work can measure the best achievable AUC) rises with
   near-limit parametrics, a fast-and-leaky interaction, hidden defect damage that shows up as
   failing neighbours, a poor wafer, the wafer edge, and a hidden per-die term nobody can observe.

`generate(config)` yields one `WaferData` per wafer; writers (`data/writers.py`) turn those into
files. Everything depends only on `config` (the seed included), never on the order of generation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Iterator

import numpy as np
import pandas as pd

from data.geometry import WaferGeometry
from data.patterns import GENERATOR_CLASSES
from data.products import DEFAULT_PRODUCT, Product, get_product
from data.program import FileProgram
from data.test_program import LATENT_FACTORS, N_LATENT, ParametricTest, fail_bins, program_features
from data.wafer_features import add_wafer_context

DEFECT_PATTERNS = ("center", "edge_ring", "edge_local", "scratch", "donut", "random", "near_full")
# The pattern mode's signatures: the die-level set and WM-811K's "Loc" (a cluster away from the edge).
MAP_PATTERNS = (*DEFECT_PATTERNS, "local")
# How often each pattern is drawn on a defect wafer, by pattern mode (`GeneratorConfig.pattern_weights`):
#   wm811k:  WM-811K's labelled counts (Wu et al. 2015): edge-ring 9,680 ... near-full 149, so rare
#            classes stay rare, as in a fab's data;
#   uniform: every class alike (a balanced training set).
PATTERN_WEIGHTS = {
    "wm811k": {
        "center": 4294,
        "edge_ring": 9680,
        "edge_local": 5189,
        "scratch": 1193,
        "donut": 555,
        "random": 866,
        "near_full": 149,
        "local": 3593,
    },
    "uniform": dict.fromkeys(MAP_PATTERNS, 1),
}
# MixedWM38's two-pattern mixtures: which second pattern a wafer's first can carry. Near-full and
# random cover the whole wafer and are never mixed; centre + donut and edge-ring + edge-local do not
# occur there either.
MIXABLE = {
    "center": ("edge_local", "edge_ring", "local", "scratch"),
    "donut": ("edge_local", "edge_ring", "local", "scratch"),
    "edge_local": ("center", "donut", "local", "scratch"),
    "edge_ring": ("center", "donut", "local", "scratch"),
    "local": ("center", "donut", "edge_local", "edge_ring", "scratch"),
    "scratch": ("center", "donut", "edge_local", "edge_ring", "local"),
}
# What a tester writes for every die, before the test columns (`data.program.feature_name`).
DIE_COLUMNS = ("lot_id", "wafer_id", "part_id", "x", "y", "head", "site", "hard_bin", "soft_bin", "sort_pass")
# The labels sidecar: the join keys, then ground truth (never in a tester's file).
LABEL_KEYS = ("lot_id", "wafer_id", "part_id", "x", "y")
LABEL_COLUMNS = ("ft_fail", "ft_fail_prob", "ft_fail_prob_observable")
HEAD = 1  # the synthetic testers have one test head
# Standard deviation of the hidden per-die term of the final-test logit.
FT_HIDDEN_SD = 0.6


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Same config (seed included) gives byte-identical data.

    `sites`, `ft_logit_intercept` and `geometry` default (None) to the product's; the resolved
    values are `product_spec.sites`, `logit_intercept` and `wafer_geometry`.
    """

    lots: int = 10
    wafers_per_lot: int = 5
    seed: int = 42
    product: str = DEFAULT_PRODUCT  # a key of data.products.PRODUCTS
    sites: int | None = None  # the product's probe card; given, it must match
    defect_wafer_share: float = 0.35
    bad_site_lot_share: float = 0.25
    # Intercept of the final-test failure logit; the product's default gives a 2-5% fail rate.
    ft_logit_intercept: float | None = None
    geometry: WaferGeometry | None = None  # another wafer / die size (small test wafers)
    program_revision: str = "1.0"  # MIR JOB_REV
    # Data arriving in spans (a day's or a batch's lots): span k's lots are new lots, tested 30 days
    # after span k-1's. `drift_per_span` moves every lot's threshold voltage (the "vt" latent factor)
    # by that many population sigmas per span: a slow process drift (an implant or oxide drifting)
    # that moves the tests loaded on it, which the drift check should see.
    span: int = 0
    drift_per_span: float = 0.0
    # Wafer-map patterns (the pattern pipeline, data/patterns.py). Off, the draws are exactly the
    # die-level generator's of before (seeded tests and benchmarks depend on them). On: the WM-811K
    # classes (with "local"), class frequencies `pattern_weights`, and a second, different pattern on
    # a `mixed_share` of the defect wafers (MixedWM38's pairs), from a stream of their own.
    patterns: bool = False
    pattern_weights: str = "wm811k"  # a key of PATTERN_WEIGHTS
    mixed_share: float = 0.2
    # Maps only: bins from the defects and a baseline fail rate, no parametric tests, no final-test
    # labels; thousands of wafers a minute (needs `patterns`).
    maps_only: bool = False

    def __post_init__(self) -> None:
        spec = get_product(self.product)
        if self.pattern_weights not in PATTERN_WEIGHTS:
            raise ValueError(f"pattern_weights must be one of {sorted(PATTERN_WEIGHTS)}, got {self.pattern_weights!r}")
        if self.maps_only and not self.patterns:
            raise ValueError("maps_only needs patterns: a maps-only dataset is for the pattern pipeline")
        for name in ("defect_wafer_share", "mixed_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.span < 0:
            raise ValueError(f"span must be 0 or more, got {self.span}")
        if self.sites is not None and self.sites != spec.sites:
            raise ValueError(f"sites: product {self.product} is probed {spec.sites} sites at a time, got {self.sites}")
        if self.lots < 1 or self.wafers_per_lot < 1:
            raise ValueError("lots and wafers_per_lot must be at least 1")

    @property
    def product_spec(self) -> Product:
        return get_product(self.product)

    @property
    def wafer_geometry(self) -> WaferGeometry:
        return self.geometry if self.geometry is not None else self.product_spec.geometry

    @property
    def logit_intercept(self) -> float:
        return self.ft_logit_intercept if self.ft_logit_intercept is not None else self.product_spec.ft_logit_intercept


@dataclasses.dataclass
class WaferData:
    """One tested wafer: what a tester writes (dies) and what final test later learns (labels)."""

    lot_id: str
    wafer_id: str
    wafer_num: int
    defect_pattern: str  # "none", one of MAP_PATTERNS, or two joined by "+"; ground truth, not a feature
    bad_site: int  # -1 if none; ground truth
    dies: pd.DataFrame  # DIE_COLUMNS, then one float32 column per feature of `test_program`
    labels: pd.DataFrame  # LABEL_KEYS + LABEL_COLUMNS, sort-passing dies only
    geometry: WaferGeometry
    product: str  # MIR PART_TYP
    product_spec: Product  # bins, probe card, bin names
    test_program: tuple[ParametricTest, ...]  # the tests the dies carry (the product's program)
    program_revision: str = "1.0"  # MIR JOB_REV
    span: int = 0  # which span (batch of lots) it was generated in

    @property
    def pattern_classes(self) -> tuple[str, ...]:
        """The wafer's patterns as data/patterns.py classes (WM-811K names); () for no pattern."""
        names = () if self.defect_pattern == "none" else self.defect_pattern.split("+")
        return tuple(sorted(GENERATOR_CLASSES[name] for name in names))

    @property
    def sites(self) -> int:
        return self.product_spec.sites

    @property
    def start_time(self) -> int:
        """When the wafer's test started (MIR / WIR START_T), seconds since 1970.

        Deterministic (same config, same bytes): a fixed epoch, spread by lot and wafer; each
        span 30 days after the one before."""
        spread = zlib.crc32(self.lot_id.encode()) % (30 * 86_400) + self.wafer_num * 1_800
        return 1_793_000_000 + self.span * 30 * 86_400 + spread

    @property
    def revision(self) -> dict[str, str]:
        """MIR PART_TYP, JOB_NAM, JOB_REV: which program ran."""
        return {"PART_TYP": self.product, "JOB_NAM": f"{self.product}_SORT1", "JOB_REV": self.program_revision}

    def file_program(self) -> FileProgram:
        """What this wafer's file says about its program (`data.program.FileProgram`), as every
        writer records it: tests, good bins, revision, start time and WCR geometry in mm."""
        # A tester's file does not say which tests are log-scaled: the ingest decides (log_scale False).
        tests = [dataclasses.replace(d, log_scale=False) for t in self.test_program for d in t.test_defs()]
        return FileProgram(
            tests=tests,
            good_hard_bins=list(self.product_spec.good_hard_bins),
            good_soft_bins=list(self.product_spec.good_soft_bins),
            revision=self.revision,
            start_time=self.start_time,
            wcr={
                "diameter_mm": self.geometry.diameter_mm,
                "die_width_mm": self.geometry.die_width_mm,
                "die_height_mm": self.geometry.die_height_mm,
                "center_x": 0,  # die (0, 0) sits on the wafer centre (data/geometry.py)
                "center_y": 0,
            },
        )


def lot_ids(config: GeneratorConfig) -> list[str]:
    """Lot names as a fab's MES would print them, e.g. `WFQ304.1` (the product's prefix first); lot
    i is named the same whatever the number of lots (131 is coprime to 900, so numbers never repeat).
    Span k's lots continue the numbering after k spans of `lots` lots, so spans never share a lot."""
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    prefix = config.product_spec.lot_prefix
    names = []
    first = config.span * config.lots
    for i in range(first, first + config.lots):
        letter = letters[np.random.default_rng([config.seed, 1, i]).integers(len(letters))]
        names.append(f"{prefix}{letter}{100 + (config.seed * 7919 + i * 131) % 900}.1")
    return names


def _stable_seed(config: GeneratorConfig, *parts: object) -> list[int]:
    # Per-lot / per-wafer streams, so lot k is the same whatever the number of lots.
    digest = hashlib.sha256(repr((config.seed, *parts)).encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def _defect_density(pattern: str, rx: np.ndarray, ry: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kill probability per die for one spatial signature; rx, ry are positions / usable radius."""
    r = np.hypot(rx, ry)
    n = len(r)
    if pattern == "center":
        d = 0.9 * np.exp(-((r / rng.uniform(0.18, 0.3)) ** 2))
    elif pattern == "edge_ring":
        d = 0.85 * np.clip((r - rng.uniform(0.82, 0.9)) / 0.1, 0, 1)
    elif pattern == "edge_local":
        angle = rng.uniform(0, 2 * np.pi)
        cx, cy = 0.92 * np.cos(angle), 0.92 * np.sin(angle)
        d = 0.9 * np.exp(-(((rx - cx) ** 2 + (ry - cy) ** 2) / rng.uniform(0.02, 0.05)))
    elif pattern == "scratch":
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.4, 0.4)
        dist = np.abs(-np.sin(angle) * rx + np.cos(angle) * ry - offset)
        along = np.cos(angle) * rx + np.sin(angle) * ry
        start = rng.uniform(-0.8, 0.0)
        length = rng.uniform(0.6, 1.2)
        d = 0.85 * np.exp(-((dist / 0.035) ** 2)) * ((along > start) & (along < start + length))
    elif pattern == "donut":
        r0 = rng.uniform(0.4, 0.6)
        d = 0.8 * np.exp(-(((r - r0) / 0.08) ** 2))
    elif pattern == "random":
        d = np.full(n, rng.uniform(0.03, 0.08))
        for _ in range(rng.integers(3, 8)):
            cx, cy = rng.uniform(-0.7, 0.7, 2)
            d += 0.7 * np.exp(-(((rx - cx) ** 2 + (ry - cy) ** 2) / 0.004))
    elif pattern == "near_full":
        d = np.clip(rng.uniform(0.55, 0.8) + 0.1 * rng.normal(size=n), 0, 0.95)
    elif pattern == "local":
        # One compact, slightly elongated cluster between the centre and the edge band.
        angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.65)
        cx, cy = radius * np.cos(angle), radius * np.sin(angle)
        tilt = rng.uniform(0, np.pi)
        u = np.cos(tilt) * (rx - cx) + np.sin(tilt) * (ry - cy)
        v = -np.sin(tilt) * (rx - cx) + np.cos(tilt) * (ry - cy)
        width = rng.uniform(0.1, 0.16)
        d = 0.9 * np.exp(-((u / (width * rng.uniform(1.0, 1.8))) ** 2 + (v / width) ** 2))
    else:
        raise ValueError(f"unknown defect pattern {pattern!r}")
    return np.clip(d, 0.0, 0.97)


def draw_patterns(
    config: GeneratorConfig, lot_id: str, wafer_num: int, rx: np.ndarray, ry: np.ndarray
) -> tuple[tuple[str, ...], np.ndarray]:
    """The pattern mode's signatures of one wafer and their kill probability per die.

    From a random stream of the wafer's own, so the full and the maps-only modes of one config draw
    the same patterns. A mixed wafer's dies are killed by either pattern: 1 - (1 - d1)(1 - d2)."""
    rng = np.random.default_rng(_stable_seed(config, lot_id, wafer_num, "patterns"))
    if rng.random() >= config.defect_wafer_share:
        return (), np.zeros(len(rx))
    weights = PATTERN_WEIGHTS[config.pattern_weights]
    names = list(weights)
    p = np.array([weights[name] for name in names], dtype=float)
    first = str(rng.choice(names, p=p / p.sum()))
    patterns = [first]
    if first in MIXABLE and rng.random() < config.mixed_share:
        patterns.append(str(rng.choice(MIXABLE[first])))
    survive = np.ones(len(rx))
    for pattern in patterns:
        survive *= 1.0 - _defect_density(pattern, rx, ry, rng)
    return tuple(patterns), 1.0 - survive


def _expected_sigmoid(logit: np.ndarray, sd: float) -> np.ndarray:
    """E[sigmoid(logit + e)] for e ~ N(0, sd^2), by Gauss-Hermite quadrature: the probability of a
    die once the hidden term is averaged out (calibrated, unlike sigmoid(logit))."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    z = logit[:, None] + sd * nodes[None, :]
    return (1.0 / (1.0 + np.exp(-z))) @ (weights / weights.sum())


def _sort(
    program: tuple[ParametricTest, ...], values: np.ndarray, spec: Product
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wafer sort in program order, stopping on the first fail: (hard_bin, soft_bin, failed_at).

    `values` is [dies, features] in `program_features(program)` order; an MPR test fails when any
    pin is out of its limits. Tests after a die's failing one are set to NaN in `values` (in place:
    not measured). `failed_at` is the index of the failing test in `program`, -1 for a good die."""
    n = len(values)
    hard_bin = np.full(n, spec.pass_bin, dtype=np.int32)
    soft_bin = np.full(n, spec.pass_bin, dtype=np.int32)
    failed_at = np.full(n, -1)
    starts = np.cumsum([0] + [len(t.features) for t in program])  # each test's first column, then the end
    for j, (test, (hard, soft)) in enumerate(zip(program, fail_bins(program, spec.family_bins), strict=True)):
        new_fail = (failed_at < 0) & ~test.in_limits(values[:, starts[j] : starts[j + 1]]).all(axis=1)
        failed_at[new_fail] = j
        hard_bin[new_fail] = hard
        soft_bin[new_fail] = soft
    # Not measured: every column from the one after the failing test's last on.
    stop = np.where(failed_at >= 0, starts[failed_at + 1], starts[-1])
    values[np.arange(starts[-1])[None, :] >= stop[:, None]] = np.nan
    if spec.grade is not None:
        # A good but slow die: the speed grade's bin (still good; it goes to final test).
        grade_col = starts[[t.number for t in program].index(spec.grade.test_number)]
        slow = (failed_at < 0) & (values[:, grade_col] < spec.grade.min_value)
        hard_bin[slow] = spec.grade.hard_bin
        soft_bin[slow] = spec.grade.soft_bin
    return hard_bin, soft_bin, failed_at


def _wafer(
    config: GeneratorConfig,
    lot_id: str,
    wafer_num: int,
    lot_effect: np.ndarray,
    site_offsets: np.ndarray,
    site_noise: np.ndarray,
    bad_site: int,
) -> WaferData:
    rng = np.random.default_rng(_stable_seed(config, lot_id, wafer_num))
    spec = config.product_spec
    program = spec.program
    features = program_features(program)
    geom = config.wafer_geometry
    grid = geom.die_grid()
    x, y = grid[:, 0], grid[:, 1]
    n = len(x)
    rx = x * geom.die_width_mm / geom.usable_radius_mm
    ry = y * geom.die_height_mm / geom.usable_radius_mm
    r2 = rx**2 + ry**2

    # 1. Latent process variation: lot + wafer + radial profile + die noise (unit total variance).
    wafer_effect = rng.normal(0.0, 0.35, N_LATENT)
    radial = rng.normal(0.0, 0.55, N_LATENT)
    latent = (
        lot_effect[None, :]
        + wafer_effect[None, :]
        + (r2[:, None] - 0.5) * radial[None, :]
        + rng.normal(0.0, 0.72, (n, N_LATENT))
    )

    # 3. Spatial defect signature.
    pattern = "none"
    density = np.zeros(n)
    if config.patterns:
        drawn, density = draw_patterns(config, lot_id, wafer_num, rx, ry)
        pattern = "+".join(drawn) or "none"
    elif rng.random() < config.defect_wafer_share:
        pattern = str(rng.choice(DEFECT_PATTERNS, p=[0.16, 0.18, 0.16, 0.14, 0.12, 0.16, 0.08]))
        density = _defect_density(pattern, rx, ry, rng)
    killed = rng.random(n) < density

    # 2. Parametric measurements, per site (and per pin: each pin is its own probe-card channel).
    site = spec.site_map(x, y)
    values = np.empty((n, len(features)))
    column = 0
    for test in program:
        for pin_offset in test.pin_offsets or (0.0,):
            # Site offsets are in population sigmas; express them in units of the measurement noise.
            noise = rng.normal(size=n) * site_noise[site] + site_offsets[site, column] * test.response_sd() / test.noise
            v = test.respond(latent, noise, pin_offset)
            if test.defect_sensitive:
                # A defect shorts the die: gross leakage, caught by this screen.
                v = np.where(killed, v * rng.uniform(30, 300, n), v)
            values[:, column] = v
            column += 1

    # 4. Wafer sort: program order, stop on first fail; a slow good die gets the speed grade.
    hard_bin, soft_bin, _ = _sort(program, values, spec)
    sort_pass = np.isin(hard_bin, spec.good_hard_bins)

    wafer_id = f"{lot_id}-W{wafer_num:02d}"
    dies = pd.DataFrame(
        {
            "lot_id": lot_id,
            "wafer_id": wafer_id,
            "part_id": [f"{wafer_id}-{i:04d}" for i in range(n)],
            "x": x.astype(np.int32),
            "y": y.astype(np.int32),
            "head": np.full(n, HEAD, dtype=np.int32),
            "site": site,
            "hard_bin": hard_bin,
            "soft_bin": soft_bin,
            "sort_pass": sort_pass,
        }
    )
    tests = pd.DataFrame(values.astype(np.float32), columns=list(features))
    dies = pd.concat([dies, tests], axis=1)

    # 5. Final-test label for the dies that passed sort (any good bin).
    context = add_wafer_context(dies)  # failing neighbours and wafer yield, by `sort_pass`
    # A test's margin is its worst pin's (one pin near a limit is one weak pin, whatever the others).
    margins = np.full((n, len(program)), np.inf)
    column = 0
    for j, test in enumerate(program):
        width = len(test.features)
        m = test.margin_sigmas(values[:, column : column + width]).min(axis=1)
        margins[:, j] = np.where(np.isnan(m), np.inf, m)
        column += width
    near_limit = np.exp(-np.clip(margins, 0, None) / 0.45).sum(axis=1)
    speed, vt = latent[:, LATENT_FACTORS.index("speed")], latent[:, LATENT_FACTORS.index("vt")]
    fast_leaky = np.maximum(speed, 0) * np.maximum(-vt, 0)
    # Hidden damage: the defect density around the die, of which failing neighbours are a noisy view.
    observable_logit = (
        config.logit_intercept
        + 1.8 * np.minimum(near_limit, 3.0)
        + 0.9 * fast_leaky
        + 3.0 * density
        + 0.18 * context["n_fail_neighbors"].to_numpy()
        + 2.0 * (1.0 - context["wafer_yield"].to_numpy())
        + 1.2 * r2**3
    )
    logit = observable_logit + rng.normal(0.0, FT_HIDDEN_SD, n)
    prob = 1.0 / (1.0 + np.exp(-logit))
    ft_fail = (rng.random(n) < prob).astype(np.int64)
    labels = dies.loc[sort_pass, list(LABEL_KEYS)].copy()
    labels["ft_fail"] = ft_fail[sort_pass]
    labels["ft_fail_prob"] = prob[sort_pass].astype(np.float32)
    labels["ft_fail_prob_observable"] = _expected_sigmoid(observable_logit[sort_pass], FT_HIDDEN_SD).astype(np.float32)

    return WaferData(
        lot_id=lot_id,
        wafer_id=wafer_id,
        wafer_num=wafer_num,
        defect_pattern=pattern,
        bad_site=bad_site,
        dies=dies,
        labels=labels.reset_index(drop=True),
        geometry=geom,
        product=spec.name,
        product_spec=spec,
        test_program=program,
        program_revision=config.program_revision,
        span=config.span,
    )


# Maps only: the share of a wafer's dies that fail sort without any spatial signature (parametric
# yield loss), drawn per wafer, as the die-level generator's wafers show.
BASELINE_FAIL_RATE = (0.01, 0.05)


def _map_wafer(config: GeneratorConfig, lot_id: str, wafer_num: int) -> WaferData:
    """One wafer of the maps-only mode: bins from its patterns and a baseline fail rate, no tests.

    A die killed by a pattern gets the hard bin of the product's first defect-sensitive test's family
    (the leakage screen that catches it in the full mode); a baseline fail one of the product's fail
    bins at random."""
    spec = config.product_spec
    geom = config.wafer_geometry
    grid = geom.die_grid()
    x, y = grid[:, 0], grid[:, 1]
    n = len(x)
    rx = x * geom.die_width_mm / geom.usable_radius_mm
    ry = y * geom.die_height_mm / geom.usable_radius_mm
    drawn, density = draw_patterns(config, lot_id, wafer_num, rx, ry)
    rng = np.random.default_rng(_stable_seed(config, lot_id, wafer_num, "maps"))
    killed = rng.random(n) < density
    baseline = rng.random(n) < rng.uniform(*BASELINE_FAIL_RATE)
    program = spec.program
    bins = fail_bins(program, spec.family_bins)
    defect_bin = next(b for t, b in zip(program, bins, strict=True) if t.defect_sensitive)
    other = np.array(sorted(set(bins)))
    picked = other[rng.integers(len(other), size=n)]
    hard_bin = np.full(n, spec.pass_bin, dtype=np.int32)
    soft_bin = np.full(n, spec.pass_bin, dtype=np.int32)
    hard_bin[baseline], soft_bin[baseline] = picked[baseline, 0], picked[baseline, 1]
    hard_bin[killed], soft_bin[killed] = defect_bin
    wafer_id = f"{lot_id}-W{wafer_num:02d}"
    dies = pd.DataFrame(
        {
            "lot_id": lot_id,
            "wafer_id": wafer_id,
            "part_id": "",  # no part ids: the files name dies by position (X/Y)
            "x": x.astype(np.int32),
            "y": y.astype(np.int32),
            "head": np.full(n, HEAD, dtype=np.int32),
            "site": spec.site_map(x, y),
            "hard_bin": hard_bin,
            "soft_bin": soft_bin,
            "sort_pass": np.isin(hard_bin, spec.good_hard_bins),
        }
    )
    return WaferData(
        lot_id=lot_id,
        wafer_id=wafer_id,
        wafer_num=wafer_num,
        defect_pattern="+".join(drawn) or "none",
        bad_site=-1,
        dies=dies,
        labels=pd.DataFrame(columns=[*LABEL_KEYS, *LABEL_COLUMNS]),
        geometry=geom,
        product=spec.name,
        product_spec=spec,
        test_program=(),
        program_revision=config.program_revision,
        span=config.span,
    )


def generate(config: GeneratorConfig) -> Iterator[WaferData]:
    """Yield every wafer of the dataset, lot by lot."""
    if config.maps_only:
        for lot_id in lot_ids(config):
            for wafer_num in range(1, config.wafers_per_lot + 1):
                yield _map_wafer(config, lot_id, wafer_num)
        return
    spec = config.product_spec
    n_features = len(program_features(spec.program))
    for lot_id in lot_ids(config):
        rng = np.random.default_rng(_stable_seed(config, lot_id))
        lot_effect = rng.normal(0.0, 0.4, N_LATENT)
        lot_effect[LATENT_FACTORS.index("vt")] += config.drift_per_span * config.span
        site_offsets = rng.normal(0.0, 0.1, (spec.sites, n_features))
        site_noise = np.ones(spec.sites)
        bad_site = -1
        if rng.random() < config.bad_site_lot_share:
            # A worn or contaminated probe needle: biased and noisier readings on one site.
            bad_site = int(rng.integers(spec.sites))
            site_offsets[bad_site] += rng.normal(0.9, 0.3, n_features)
            site_noise[bad_site] = 1.8
        for wafer_num in range(1, config.wafers_per_lot + 1):
            yield _wafer(config, lot_id, wafer_num, lot_effect, site_offsets, site_noise, bad_site)
