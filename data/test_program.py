"""The synthetic products' test programs: every parametric test, its family, units, limits and pins.

A real tester runs a test program; its PTR records carry test number, name, units and limits, its
MPR records the same for a test that measures several pins at once (one result per pin). This module
holds those programs for the synthetic products (`data/products.py` names the products): the
generator measures against them and the writers copy them into the files. Nothing downstream of the
ingest reads this module: the ingest learns the program from the files (`data/program.py`).

Each test is a linear response to four latent process factors (speed, threshold voltage, oxide,
metal resistance) plus measurement noise; leakage-like tests respond log-normally. Limits sit
`LIMIT_SIGMAS` population standard deviations from nominal, one- or two-sided as testers set them.
A multi-pin test gives every pin the same response plus a small fixed pin offset and its own noise,
and one set of limits for all pins (the STDF MPR allows only one).

Binning is part of a program too: a failing die gets its first failing test's family hard bin and a
soft bin naming the test (`fail_bins`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from data.program import TestDef, feature_name

# Latent process factors every test responds to, in this order.
LATENT_FACTORS = ("speed", "vt", "oxide", "resistance")
N_LATENT = len(LATENT_FACTORS)

# Population variance of one latent factor: lot + wafer + radial + die terms in the generator.
LATENT_VARIANCE = 1.0
LIMIT_SIGMAS = 3.7


@dataclasses.dataclass(frozen=True)
class ParametricTest:
    """One parametric test of a program: a PTR (no pins) or an MPR (one result per pin)."""

    __test__ = False  # not a pytest test class

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
    pins: tuple[int, ...] = ()  # MPR: the pins' RTN_INDX values; empty for a PTR
    pin_offsets: tuple[float, ...] = ()  # MPR: fixed offset of each pin, in population sigmas
    defect_sensitive: bool = False  # a defect-killed die shows gross leakage here (the defect screen)

    @property
    def is_mpr(self) -> bool:
        return bool(self.pins)

    @property
    def features(self) -> tuple[str, ...]:
        """Column / feature names: `t{number}` for a PTR, `t{number}_p{pin}` per pin of an MPR."""
        if not self.pins:
            return (feature_name(self.number),)
        return tuple(feature_name(self.number, pin) for pin in self.pins)

    @property
    def feature_name(self) -> str:
        """The one column of a PTR test (an MPR test has one per pin: `features`)."""
        if self.pins:
            raise ValueError(f"test {self.number} is a multi-pin test: use `features`")
        return feature_name(self.number)

    def test_defs(self) -> list[TestDef]:
        """The test as `data.program` describes any tester's test: one `TestDef` per feature."""
        pins: tuple[int | None, ...] = self.pins or (None,)
        return [
            TestDef(
                number=self.number,
                name=self.name,
                units=self.units,
                lo_limit=self.lo_limit,
                hi_limit=self.hi_limit,
                pin=pin,
                log_scale=self.log_normal,
            )
            for pin in pins
        ]

    def respond(self, latent: np.ndarray, noise: np.ndarray, pin_offset: float = 0.0) -> np.ndarray:
        """Measured value for latent factors `latent` [n, 4], standard-normal `noise` [n] and a pin's
        fixed offset (population sigmas)."""
        u = latent @ np.asarray(self.loadings) + self.noise * noise + pin_offset * self.response_sd()
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

    def value_at_sigma(self, sigmas: float) -> float:
        """The value `sigmas` population standard deviations from nominal (a limit, a grade cut)."""
        span = sigmas * self.response_sd()
        return self.nominal * math.exp(self.scale * span) if self.log_normal else self.nominal + self.scale * span


def program_features(program: tuple[ParametricTest, ...]) -> tuple[str, ...]:
    """Every feature of a program in program order (an MPR test's pins in pin order)."""
    return tuple(f for test in program for f in test.features)


def program_test_defs(program: tuple[ParametricTest, ...]) -> list[TestDef]:
    """A program as `data.program.TestDef`s, one per feature, in program order."""
    return [d for test in program for d in test.test_defs()]


def fail_bins(program: tuple[ParametricTest, ...], family_bins: dict[str, int]) -> list[tuple[int, int]]:
    """(hard bin, soft bin) of a die whose first failing test is each test of `program`.

    Hard bin: the test's family bin. Soft bin: the family bin times 100 plus the test's position in
    its family (1-based), so a soft bin names the test and its hundreds name the hard bin.
    """
    seen: dict[str, int] = {}
    bins = []
    for test in program:
        seen[test.family] = seen.get(test.family, 0) + 1
        bins.append((family_bins[test.family], family_bins[test.family] * 100 + seen[test.family]))
    return bins


class TestFamily(NamedTuple):
    """A row of a program table: one family of similar tests, one test per parameter."""

    __test__ = False

    family: str
    template: str  # test name, `{}` the parameter
    params: tuple
    units: str
    nominal: float
    scale: float
    base_loadings: tuple[float, float, float, float]
    log_normal: bool
    sides: str  # "both", "lo" (only a low limit) or "hi" (only a high limit)
    pins: tuple[int, ...] = ()  # MPR pins (RTN_INDX); empty: a PTR
    defect_sensitive: bool = False


def build_program(
    families: tuple[TestFamily, ...], first_numbers: dict[str, int], step: int, seed: int
) -> tuple[ParametricTest, ...]:
    """A program from a family table: numbers from each family's first number in steps of `step`,
    loadings the family's base plus a small per-test perturbation, limits `LIMIT_SIGMAS` out.

    `seed` is fixed per product, not the dataset seed: the test program is part of the product, the
    same for every dataset, like a real test program between releases."""
    rng = np.random.default_rng(seed)
    next_number = dict(first_numbers)
    tests = []
    for fam in families:
        for param in fam.params:
            loadings = np.asarray(fam.base_loadings) + rng.normal(0.0, 0.08, N_LATENT)
            test = ParametricTest(
                number=next_number[fam.family],
                name=fam.template.format(param),
                family=fam.family,
                units=fam.units,
                nominal=fam.nominal,
                scale=fam.scale,
                loadings=tuple(float(v) for v in loadings),
                noise=0.35,
                log_normal=fam.log_normal,
                lo_limit=None,
                hi_limit=None,
                pins=fam.pins,
                defect_sensitive=fam.defect_sensitive,
            )
            if fam.pins:
                # Pins differ a little (trace length, pad structure): a fixed offset per pin.
                offsets = tuple(float(v) for v in rng.normal(0.0, 0.15, len(fam.pins)))
                test = dataclasses.replace(test, pin_offsets=offsets)
            next_number[fam.family] += step
            lo = test.value_at_sigma(-LIMIT_SIGMAS) if fam.sides in ("both", "lo") else None
            hi = test.value_at_sigma(LIMIT_SIGMAS) if fam.sides in ("both", "hi") else None
            tests.append(dataclasses.replace(test, lo_limit=_round(lo), hi_limit=_round(hi)))
    return tuple(tests)


def _round(limit: float | None) -> float | None:
    # Limits as a test engineer would write them: 4 significant digits.
    return None if limit is None else float(f"{limit:.4g}")


# --- WF7N: a 300 mm SoC, 52 PTR tests in five families ------------------------------------------------

WF7N_FAMILY_BINS = {"vdd": 2, "idd": 3, "freq": 4, "power": 5, "tempco": 6}

# fmt: off
_WF7N_FAMILIES = (
    TestFamily("vdd", "vddmin_{}mhz", (400, 600, 800, 1000, 1200, 1400), "V", 0.62, 0.018,
               (-0.6, 0.6, 0.1, 0.3), False, "hi"),
    TestFamily("vdd", "vddmax_{}", ("func", "scan", "bist"), "V", 1.05, 0.015,
               (0.2, -0.3, -0.6, 0.0), False, "lo"),
    TestFamily("vdd", "vret_{}", ("sram0", "sram1", "rf"), "V", 0.48, 0.012,
               (-0.2, 0.7, 0.0, 0.0), False, "hi"),
    # A defect shorts the die: gross leakage, caught by the IDDQ screen.
    TestFamily("idd", "iddq_vec{}", (1, 2, 3, 4), "uA", 85.0, 0.22,
               (0.6, -0.7, 0.1, 0.0), True, "hi", defect_sensitive=True),
    TestFamily("idd", "isb_{}", ("core", "io"), "uA", 12.0, 0.2,
               (0.5, -0.7, 0.2, 0.0), True, "hi", defect_sensitive=True),
    TestFamily("idd", "idd_dyn_{}mhz", (600, 1000, 1400), "mA", 310.0, 9.0,
               (0.7, -0.3, 0.2, 0.1), False, "both"),
    TestFamily("idd", "igate_{}", ("n", "p", "io"), "nA", 4.0, 0.25,
               (0.0, -0.1, -0.9, 0.0), True, "hi", defect_sensitive=True),
    TestFamily("freq", "fmax_{}mv", (650, 750, 850, 950), "MHz", 1450.0, 38.0,
               (0.8, -0.5, 0.1, -0.3), False, "lo"),
    TestFamily("freq", "ro_{}", ("nvt", "lvt", "hvt", "sram"), "MHz", 520.0, 14.0,
               (0.8, -0.6, 0.0, -0.1), False, "both"),
    TestFamily("freq", "pll_lock_{}", ("lo", "hi"), "MHz", 2000.0, 22.0,
               (0.5, -0.2, 0.0, -0.4), False, "both"),
    TestFamily("power", "pdyn_{}", ("idle", "typ", "max", "burst"), "mW", 420.0, 11.0,
               (0.6, -0.3, 0.2, 0.4), False, "hi"),
    TestFamily("power", "pstatic_{}", ("25c", "85c", "105c"), "mW", 18.0, 0.18,
               (0.6, -0.7, 0.1, 0.0), True, "hi"),
    TestFamily("power", "pret_{}", ("sram0", "sram1", "rf"), "mW", 2.2, 0.15,
               (0.4, -0.6, 0.0, 0.0), True, "hi"),
    TestFamily("tempco", "bg_tc_{}", ("a", "b"), "ppm/C", 12.0, 2.5,
               (0.0, 0.2, 0.7, 0.2), False, "both"),
    TestFamily("tempco", "vref_drift_{}", ("lo", "hi"), "ppm/C", 25.0, 3.5,
               (0.1, 0.3, 0.6, 0.0), False, "both"),
    TestFamily("tempco", "ro_tc_{}", ("nvt", "lvt"), "ppm/C", -850.0, 30.0,
               (0.4, 0.4, 0.2, 0.0), False, "both"),
    TestFamily("tempco", "ts_slope_{}", ("0", "1"), "mV/C", -1.9, 0.04,
               (0.0, 0.3, 0.5, 0.2), False, "both"),
)
# fmt: on

WF7N_PROGRAM: tuple[ParametricTest, ...] = build_program(
    _WF7N_FAMILIES, {"vdd": 1000, "idd": 2000, "freq": 3000, "power": 4000, "tempco": 5000}, 10, 20261121
)

# --- MX3A: a 200 mm mixed-signal MCU, 32 tests (three of them 4-pin MPRs) in six families ----------------

MX3A_FAMILY_BINS = {"cont": 11, "leak": 12, "idd": 13, "analog": 14, "speed": 15, "vmin": 16}
MX3A_IO_PINS = (1, 2, 3, 4)

# fmt: off
_MX3A_FAMILIES = (
    # Continuity: the protection-diode drop of each I/O pin, measured on all four at once.
    TestFamily("cont", "cont_{}", ("io",), "V", -0.62, 0.02, (0.0, 0.3, 0.1, 0.4), False, "both",
               pins=MX3A_IO_PINS),
    TestFamily("cont", "cont_{}", ("vdd", "gnd"), "V", 0.45, 0.015, (0.0, 0.3, 0.0, 0.5), False, "both"),
    # Input leakage per pin, high and low; defects short pins, so this is MX3A's defect screen.
    TestFamily("leak", "ileak_in_{}", ("hi", "lo"), "nA", 2.0, 0.25, (0.5, -0.7, -0.2, 0.0), True, "hi",
               pins=MX3A_IO_PINS, defect_sensitive=True),
    TestFamily("leak", "ioz_{}", ("hi", "lo"), "nA", 5.0, 0.22, (0.4, -0.7, -0.3, 0.0), True, "hi",
               defect_sensitive=True),
    TestFamily("idd", "iddq_{}", ("stby", "ret"), "uA", 40.0, 0.2, (0.6, -0.7, 0.1, 0.0), True, "hi",
               defect_sensitive=True),
    TestFamily("idd", "idd_run_{}mhz", (8, 16, 32), "mA", 4.5, 0.12, (0.7, -0.3, 0.1, 0.2), False, "both"),
    TestFamily("idd", "idd_{}", ("sleep",), "uA", 1.6, 0.18, (0.5, -0.8, 0.0, 0.0), True, "hi"),
    TestFamily("analog", "ldo_vout_{}", ("1v2", "1v8"), "V", 1.2, 0.006, (0.1, 0.3, 0.4, 0.3), False, "both"),
    TestFamily("analog", "bgr_{}", ("vref",), "V", 1.21, 0.004, (0.0, 0.4, 0.6, 0.1), False, "both"),
    TestFamily("analog", "osc_{}_trim", ("hf",), "MHz", 48.0, 0.25, (0.6, -0.3, 0.0, -0.2), False, "both"),
    TestFamily("analog", "osc_{}_trim", ("lf",), "kHz", 32.77, 0.12, (0.3, -0.2, 0.3, 0.0), False, "both"),
    TestFamily("analog", "adc_{}", ("offset",), "mV", 0.0, 0.6, (0.0, 0.4, 0.5, 0.2), False, "both"),
    TestFamily("analog", "adc_{}_err", ("gain",), "%", 0.0, 0.08, (0.1, 0.2, 0.6, 0.3), False, "both"),
    TestFamily("analog", "dac_{}", ("inl",), "LSB", 0.6, 0.12, (0.0, 0.3, 0.5, 0.1), False, "hi"),
    TestFamily("analog", "ts_{}", ("slope",), "mV/C", -1.7, 0.035, (0.0, 0.3, 0.5, 0.2), False, "both"),
    TestFamily("analog", "pll_{}", ("jitter",), "ps", 18.0, 0.12, (-0.3, 0.3, 0.2, 0.4), True, "hi"),
    TestFamily("speed", "fmax_{}", ("0v9", "1v0", "1v1"), "MHz", 96.0, 3.0, (0.8, -0.5, 0.1, -0.3), False, "lo"),
    TestFamily("speed", "tpd_{}", ("io",), "ns", 4.2, 0.12, (-0.7, 0.4, 0.0, 0.4), False, "hi"),
    TestFamily("speed", "tsu_{}_margin", ("spi",), "ps", 350.0, 25.0, (0.6, -0.4, 0.0, -0.3), False, "lo"),
    TestFamily("vmin", "vmin_{}", ("scan", "bist", "flash"), "V", 0.82, 0.015, (-0.6, 0.6, 0.1, 0.3), False, "hi"),
    TestFamily("vmin", "vmax_{}", ("core",), "V", 1.32, 0.012, (0.2, -0.3, -0.6, 0.0), False, "lo"),
)
# fmt: on

MX3A_PROGRAM: tuple[ParametricTest, ...] = build_program(
    _MX3A_FAMILIES, {"cont": 100, "leak": 120, "idd": 140, "analog": 160, "speed": 180, "vmin": 200}, 1, 20270304
)
