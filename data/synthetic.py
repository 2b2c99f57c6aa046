"""Seeded, deterministic generator of wafer-sort data with final-test labels.

The model of the fab, in the order the generator applies it:

1. Latent process variation. Every die has four latent factors (see `test_program.LATENT_FACTORS`),
   the sum of a lot effect, a wafer effect, a radial centre-to-edge profile per wafer, and die noise.
2. Parametric tests respond linearly (or log-normally) to those factors, plus a small per-site
   offset (multi-site probe cards are never perfectly matched), a "bad site" on some lots, and
   measurement noise.
3. Spatial defect signatures (centre, edge-ring, edge-local, scratch, donut, random, near-full) on a
   share of wafers raise a per-die defect density; a die hit by a defect shows gross leakage.
4. Wafer sort runs the test program in order and stops on the first failing test, as production
   test flows do: the die gets that test's family hard bin and a soft bin naming the test; later
   tests are not measured (missing, not zero). Passing dies get bin 1.
5. The label: dies that pass sort go on to final test, where some still fail. Their failure
   probability (recorded, so later work can measure the best achievable AUC) rises with
   near-limit parametrics, a fast-and-leaky interaction, hidden defect damage that shows up as
   failing neighbours, a poor wafer, the wafer edge, and a hidden per-die term nobody can observe.

`generate(config)` yields one `WaferData` per wafer; writers (`data/writers.py`) turn those into
files. Everything depends only on `config` (the seed included), never on the order of generation.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator

import numpy as np
import pandas as pd

from data.geometry import DEFAULT_GEOMETRY, WaferGeometry
from data.test_program import LATENT_FACTORS, N_LATENT, PASS_BIN, TEST_PROGRAM, ParametricTest
from data.wafer_features import add_wafer_context

DEFECT_PATTERNS = ("center", "edge_ring", "edge_local", "scratch", "donut", "random", "near_full")
LABEL_COLUMNS = ("ft_fail", "ft_fail_prob")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Same config (seed included) gives byte-identical data."""

    lots: int = 10
    wafers_per_lot: int = 5
    seed: int = 42
    sites: int = 4  # multi-site count: 4 or 8
    defect_wafer_share: float = 0.35
    bad_site_lot_share: float = 0.25
    # Intercept of the final-test failure logit; the default gives a 2-5% fail rate.
    ft_logit_intercept: float = -4.9
    geometry: WaferGeometry = DEFAULT_GEOMETRY
    product: str = "WF7N"

    def __post_init__(self) -> None:
        if self.sites not in (4, 8):
            raise ValueError(f"sites must be 4 or 8, got {self.sites}")
        if self.lots < 1 or self.wafers_per_lot < 1:
            raise ValueError("lots and wafers_per_lot must be at least 1")


@dataclasses.dataclass
class WaferData:
    """One tested wafer: what a tester writes (dies) and what final test later learns (labels)."""

    lot_id: str
    wafer_id: str
    wafer_num: int
    sites: int
    defect_pattern: str  # "none" or one of DEFECT_PATTERNS; ground truth, not a feature
    bad_site: int  # -1 if none; ground truth
    dies: pd.DataFrame  # lot_id, wafer_id, part_id, x, y, site, hard_bin, soft_bin, tests...
    labels: pd.DataFrame  # lot_id, wafer_id, part_id, x, y, ft_fail, ft_fail_prob (sort-pass only)
    geometry: WaferGeometry
    product: str
    test_program: tuple[ParametricTest, ...] = TEST_PROGRAM


def lot_ids(config: GeneratorConfig) -> list[str]:
    """Lot names as a fab's MES would print them, e.g. `WFQ304.1`; lot i is named the same
    whatever the number of lots (131 is coprime to 900, so the numbers never repeat)."""
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    names = []
    for i in range(config.lots):
        letter = letters[np.random.default_rng([config.seed, 1, i]).integers(len(letters))]
        names.append(f"{config.product[:2]}{letter}{100 + (config.seed * 7919 + i * 131) % 900}.1")
    return names


def _stable_seed(config: GeneratorConfig, *parts: object) -> list[int]:
    # Per-lot / per-wafer streams, so lot k is the same whatever the number of lots.
    digest = hashlib.sha256(repr((config.seed, *parts)).encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def _site_map(x: np.ndarray, y: np.ndarray, sites: int) -> np.ndarray:
    """Test site of each die: the probe card touches down on a 2x2 (4 sites) or 4x2 (8) block."""
    if sites == 4:
        return (np.mod(x, 2) + 2 * np.mod(y, 2)).astype(np.int32)
    return (np.mod(x, 4) + 4 * np.mod(y, 2)).astype(np.int32)


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
    else:
        raise ValueError(f"unknown defect pattern {pattern!r}")
    return np.clip(d, 0.0, 0.97)


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
    geom = config.geometry
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
    if rng.random() < config.defect_wafer_share:
        pattern = str(rng.choice(DEFECT_PATTERNS, p=[0.16, 0.18, 0.16, 0.14, 0.12, 0.16, 0.08]))
        density = _defect_density(pattern, rx, ry, rng)
    killed = rng.random(n) < density

    # 2. Parametric measurements, per site.
    site = _site_map(x, y, config.sites)
    values = np.empty((n, len(TEST_PROGRAM)))
    for j, test in enumerate(TEST_PROGRAM):
        # Site offsets are in population sigmas; express them in units of the measurement noise.
        noise = rng.normal(size=n) * site_noise[site] + site_offsets[site, j] * test.response_sd() / test.noise
        v = test.respond(latent, noise)
        if test.family == "idd" and test.log_normal:
            # A defect shorts the die: gross leakage, caught by the IDDQ screen.
            v = np.where(killed, v * rng.uniform(30, 300, n), v)
        values[:, j] = v

    # 4. Wafer sort: program order, stop on first fail.
    hard_bin = np.full(n, PASS_BIN, dtype=np.int32)
    soft_bin = np.full(n, PASS_BIN, dtype=np.int32)
    failed_at = np.full(n, -1)
    family_index: dict[str, int] = {}
    for j, test in enumerate(TEST_PROGRAM):
        idx = family_index[test.family] = family_index.get(test.family, 0) + 1
        new_fail = (failed_at < 0) & ~test.in_limits(values[:, j])
        failed_at[new_fail] = j
        hard_bin[new_fail] = test.hard_bin
        soft_bin[new_fail] = test.hard_bin * 100 + idx
    not_measured = (failed_at[:, None] >= 0) & (np.arange(len(TEST_PROGRAM))[None, :] > failed_at[:, None])
    values[not_measured] = np.nan

    wafer_id = f"{lot_id}-W{wafer_num:02d}"
    dies = pd.DataFrame(
        {
            "lot_id": lot_id,
            "wafer_id": wafer_id,
            "part_id": [f"{wafer_id}-{i:04d}" for i in range(n)],
            "x": x.astype(np.int32),
            "y": y.astype(np.int32),
            "site": site,
            "hard_bin": hard_bin,
            "soft_bin": soft_bin,
        }
    )
    tests = pd.DataFrame(values.astype(np.float32), columns=[t.feature_name for t in TEST_PROGRAM])
    dies = pd.concat([dies, tests], axis=1)

    # 5. Final-test label for the dies that passed sort.
    context = add_wafer_context(dies)
    passed = hard_bin == PASS_BIN
    margins = np.stack([t.margin_sigmas(values[:, j]) for j, t in enumerate(TEST_PROGRAM)], axis=1)
    margins = np.where(np.isnan(margins), np.inf, margins)
    near_limit = np.exp(-np.clip(margins, 0, None) / 0.45).sum(axis=1)
    speed, vt = latent[:, LATENT_FACTORS.index("speed")], latent[:, LATENT_FACTORS.index("vt")]
    fast_leaky = np.maximum(speed, 0) * np.maximum(-vt, 0)
    # Hidden damage: the defect density around the die, of which failing neighbours are a noisy view.
    logit = (
        config.ft_logit_intercept
        + 1.8 * np.minimum(near_limit, 3.0)
        + 0.9 * fast_leaky
        + 3.0 * density
        + 0.18 * context["n_fail_neighbors"].to_numpy()
        + 2.0 * (1.0 - context["wafer_yield"].to_numpy())
        + 1.2 * r2**3
        + rng.normal(0.0, 0.6, n)
    )
    prob = 1.0 / (1.0 + np.exp(-logit))
    ft_fail = (rng.random(n) < prob).astype(np.int64)
    labels = dies.loc[passed, ["lot_id", "wafer_id", "part_id", "x", "y"]].copy()
    labels["ft_fail"] = ft_fail[passed]
    labels["ft_fail_prob"] = prob[passed].astype(np.float32)

    return WaferData(
        lot_id=lot_id,
        wafer_id=wafer_id,
        wafer_num=wafer_num,
        sites=config.sites,
        defect_pattern=pattern,
        bad_site=bad_site,
        dies=dies,
        labels=labels.reset_index(drop=True),
        geometry=geom,
        product=config.product,
    )


def generate(config: GeneratorConfig) -> Iterator[WaferData]:
    """Yield every wafer of the dataset, lot by lot."""
    for lot_id in lot_ids(config):
        rng = np.random.default_rng(_stable_seed(config, lot_id))
        lot_effect = rng.normal(0.0, 0.4, N_LATENT)
        site_offsets = rng.normal(0.0, 0.1, (config.sites, len(TEST_PROGRAM)))
        site_noise = np.ones(config.sites)
        bad_site = -1
        if rng.random() < config.bad_site_lot_share:
            # A worn or contaminated probe needle: biased and noisier readings on one site.
            bad_site = int(rng.integers(config.sites))
            site_offsets[bad_site] += rng.normal(0.9, 0.3, len(TEST_PROGRAM))
            site_noise[bad_site] = 1.8
        for wafer_num in range(1, config.wafers_per_lot + 1):
            yield _wafer(config, lot_id, wafer_num, lot_effect, site_offsets, site_noise, bad_site)
