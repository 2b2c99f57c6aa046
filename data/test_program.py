"""The wafer-sort test program: every parametric test, its family, units and limits.

A real tester runs a test program; its PTR records carry test number, name, units and limits.
This module is that program for the synthetic product, and the single place where test numbers,
names and limits are defined. The generator measures against it, the STDF writer copies it into
PTR records, and `models/features.py` derives the model's parametric feature names from it.

Each test is a linear response to four latent process factors (speed, threshold voltage, oxide,
metal resistance) plus measurement noise; leakage-like tests respond log-normally. Limits sit
`LIMIT_SIGMAS` population standard deviations from nominal, one- or two-sided as testers set them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# Latent process factors every test responds to, in this order.
LATENT_FACTORS = ("speed", "vt", "oxide", "resistance")
N_LATENT = len(LATENT_FACTORS)

# Population variance of one latent factor: lot + wafer + radial + die terms in the generator.
LATENT_VARIANCE = 1.0
LIMIT_SIGMAS = 3.7

# Hard bin per failing family; bin 1 is pass.
PASS_BIN = 1
FAMILY_BINS = {"vdd": 2, "idd": 3, "freq": 4, "power": 5, "tempco": 6}


@dataclasses.dataclass(frozen=True)
class ParametricTest:
    """One parametric test of the program, as a PTR describes it."""

    number: int
    name: str
    family: str
    units: str
    nominal: float
    scale: float  # response of the value to one unit of latent loading
    loadings: tuple[float, ...]
    noise: float  # measurement noise, in the same units as the loadings
    log_normal: bool
    lo_limit: float | None
    hi_limit: float | None

    @property
    def feature_name(self) -> str:
        """Column / tf.Example feature name: test number and name, e.g. `t1000_vddmin_400mhz`."""
        return f"t{self.number}_{self.name}"

    @property
    def hard_bin(self) -> int:
        return FAMILY_BINS[self.family]

    def respond(self, latent: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Measured value for latent factors `latent` [n, 4] and standard-normal `noise` [n]."""
        u = latent @ np.asarray(self.loadings) + self.noise * noise
        if self.log_normal:
            return self.nominal * np.exp(self.scale * u)
        return self.nominal + self.scale * u

    def response_sd(self) -> float:
        """Population standard deviation of the linear response u (before log-normal)."""
        return math.sqrt(LATENT_VARIANCE * float(np.sum(np.square(self.loadings))) + self.noise**2)

    def in_limits(self, values: np.ndarray) -> np.ndarray:
        ok = np.ones(values.shape, dtype=bool)
        if self.lo_limit is not None:
            ok &= values >= self.lo_limit
        if self.hi_limit is not None:
            ok &= values <= self.hi_limit
        return ok

    def margin_sigmas(self, values: np.ndarray) -> np.ndarray:
        """Distance of each value to its nearest limit, in population sigmas (<0 outside)."""
        if self.log_normal:
            u = np.log(np.maximum(values, 1e-30) / self.nominal) / self.scale
            lo = None if self.lo_limit is None else math.log(self.lo_limit / self.nominal) / self.scale
            hi = None if self.hi_limit is None else math.log(self.hi_limit / self.nominal) / self.scale
        else:
            u = (values - self.nominal) / self.scale
            lo = None if self.lo_limit is None else (self.lo_limit - self.nominal) / self.scale
            hi = None if self.hi_limit is None else (self.hi_limit - self.nominal) / self.scale
        sd = self.response_sd()
        margin = np.full(values.shape, np.inf)
        if lo is not None:
            margin = np.minimum(margin, (u - lo) / sd)
        if hi is not None:
            margin = np.minimum(margin, (hi - u) / sd)
        return margin


# (family, name template, parameters, units, nominal, scale, base loadings, log_normal, sides)
# sides: "both", "lo" (only a low limit) or "hi" (only a high limit).
_FAMILIES = (
    ("vdd", "vddmin_{}mhz", (400, 600, 800, 1000, 1200, 1400), "V", 0.62, 0.018,
     (-0.6, 0.6, 0.1, 0.3), False, "hi"),
    ("vdd", "vddmax_{}", ("func", "scan", "bist"), "V", 1.05, 0.015,
     (0.2, -0.3, -0.6, 0.0), False, "lo"),
    ("vdd", "vret_{}", ("sram0", "sram1", "rf"), "V", 0.48, 0.012,
     (-0.2, 0.7, 0.0, 0.0), False, "hi"),
    ("idd", "iddq_vec{}", (1, 2, 3, 4), "uA", 85.0, 0.22,
     (0.6, -0.7, 0.1, 0.0), True, "hi"),
    ("idd", "isb_{}", ("core", "io"), "uA", 12.0, 0.2,
     (0.5, -0.7, 0.2, 0.0), True, "hi"),
    ("idd", "idd_dyn_{}mhz", (600, 1000, 1400), "mA", 310.0, 9.0,
     (0.7, -0.3, 0.2, 0.1), False, "both"),
    ("idd", "igate_{}", ("n", "p", "io"), "nA", 4.0, 0.25,
     (0.0, -0.1, -0.9, 0.0), True, "hi"),
    ("freq", "fmax_{}mv", (650, 750, 850, 950), "MHz", 1450.0, 38.0,
     (0.8, -0.5, 0.1, -0.3), False, "lo"),
    ("freq", "ro_{}", ("nvt", "lvt", "hvt", "sram"), "MHz", 520.0, 14.0,
     (0.8, -0.6, 0.0, -0.1), False, "both"),
    ("freq", "pll_lock_{}", ("lo", "hi"), "MHz", 2000.0, 22.0,
     (0.5, -0.2, 0.0, -0.4), False, "both"),
    ("power", "pdyn_{}", ("idle", "typ", "max", "burst"), "mW", 420.0, 11.0,
     (0.6, -0.3, 0.2, 0.4), False, "hi"),
    ("power", "pstatic_{}", ("25c", "85c", "105c"), "mW", 18.0, 0.18,
     (0.6, -0.7, 0.1, 0.0), True, "hi"),
    ("power", "pret_{}", ("sram0", "sram1", "rf"), "mW", 2.2, 0.15,
     (0.4, -0.6, 0.0, 0.0), True, "hi"),
    ("tempco", "bg_tc_{}", ("a", "b"), "ppm/C", 12.0, 2.5,
     (0.0, 0.2, 0.7, 0.2), False, "both"),
    ("tempco", "vref_drift_{}", ("lo", "hi"), "ppm/C", 25.0, 3.5,
     (0.1, 0.3, 0.6, 0.0), False, "both"),
    ("tempco", "ro_tc_{}", ("nvt", "lvt"), "ppm/C", -850.0, 30.0,
     (0.4, 0.4, 0.2, 0.0), False, "both"),
    ("tempco", "ts_slope_{}", ("0", "1"), "mV/C", -1.9, 0.04,
     (0.0, 0.3, 0.5, 0.2), False, "both"),
)

_FAMILY_BASE_NUMBER = {"vdd": 1000, "idd": 2000, "freq": 3000, "power": 4000, "tempco": 5000}


def _build_program() -> tuple[ParametricTest, ...]:
    # A fixed generator (not the dataset seed): the test program is part of the product, the same
    # for every dataset, like a real test program between releases.
    rng = np.random.default_rng(20261121)
    next_number = dict(_FAMILY_BASE_NUMBER)
    tests = []
    for family, template, params, units, nominal, scale, base, log_normal, sides in _FAMILIES:
        for param in params:
            loadings = np.asarray(base) + rng.normal(0.0, 0.08, N_LATENT)
            test = ParametricTest(
                number=next_number[family],
                name=template.format(param),
                family=family,
                units=units,
                nominal=nominal,
                scale=scale,
                loadings=tuple(float(v) for v in loadings),
                noise=0.35,
                log_normal=log_normal,
                lo_limit=None,
                hi_limit=None,
            )
            next_number[family] += 10
            span = LIMIT_SIGMAS * test.response_sd()
            lo = hi = None
            if log_normal:
                lo = nominal * math.exp(-scale * span) if sides in ("both", "lo") else None
                hi = nominal * math.exp(scale * span) if sides in ("both", "hi") else None
            else:
                lo = nominal - scale * span if sides in ("both", "lo") else None
                hi = nominal + scale * span if sides in ("both", "hi") else None
            tests.append(dataclasses.replace(test, lo_limit=_round(lo), hi_limit=_round(hi)))
    return tuple(tests)


def _round(limit: float | None) -> float | None:
    # Limits as a test engineer would write them: 4 significant digits.
    return None if limit is None else float(f"{limit:.4g}")


TEST_PROGRAM: tuple[ParametricTest, ...] = _build_program()
TESTS_BY_NUMBER = {t.number: t for t in TEST_PROGRAM}
PARAMETRIC_FEATURES: tuple[str, ...] = tuple(t.feature_name for t in TEST_PROGRAM)
