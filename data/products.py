"""The synthetic products: each one a test program, its binning, its wafer and its probe card.

`PRODUCTS` is the registry the generator (`GeneratorConfig.product`) and the CLI (`--product`) pick
from. Two products that differ in everything a tester's files carry, so the ingest has to learn the
program from the files rather than assume one:

| product | tests (features) | numbers | wafer, die, dies | sites | good hard bins | fail bins |
| --- | --- | --- | --- | --- | --- | --- |
| WF7N (default) | 52 PTR (52) | 1000-5070 | 300 mm, 11 x 9 mm, 623 | 4 (2x2) | 1 | 2-6 |
| MX3A | 29 PTR + 3 MPR x 4 pins (41) | 100-203 | 200 mm, 6.5 x 5.2 mm, 805 | 8 (4x2) | 1, 2 (grade B) | 11-16 |

Like the test programs, nothing downstream of the ingest reads this module.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data.geometry import DEFAULT_GEOMETRY, WaferGeometry
from data.program import TestDef
from data.test_program import (
    MX3A_FAMILY_BINS,
    MX3A_PROGRAM,
    WF7N_FAMILY_BINS,
    WF7N_PROGRAM,
    ParametricTest,
    fail_bins,
    program_test_defs,
)


@dataclasses.dataclass(frozen=True)
class SpeedGrade:
    """A second good bin: a die that passes every test but is slower than `min_value` on test
    `test_number` is sold as a lower speed grade (still good, still goes to final test)."""

    test_number: int
    min_value: float  # in the test's units; at or above it a die is grade A (the pass bin)
    hard_bin: int = 2
    soft_bin: int = 2
    name: str = "PASS_GRADE_B"


@dataclasses.dataclass(frozen=True, eq=False)
class Product:
    """One synthetic product: what it is tested with and on.

    `ft_logit_intercept` is the intercept of the hidden final-test failure model
    (data/synthetic.py), set per product so that 2-5 % of its sort-passing dies fail final test.
    """

    name: str
    program: tuple[ParametricTest, ...]
    family_bins: dict[str, int]  # hard bin of a die failing a test of the family
    geometry: WaferGeometry
    touchdown: tuple[int, int]  # dies the probe card covers at once, in x and y: sites = x * y
    lot_prefix: str  # first letters of the product's lot ids
    ft_logit_intercept: float
    pass_bin: int = 1  # hard and soft bin of a good (grade A) die
    grade: SpeedGrade | None = None

    @property
    def sites(self) -> int:
        return self.touchdown[0] * self.touchdown[1]

    @property
    def good_hard_bins(self) -> tuple[int, ...]:
        return (self.pass_bin,) + ((self.grade.hard_bin,) if self.grade else ())

    @property
    def good_soft_bins(self) -> tuple[int, ...]:
        return (self.pass_bin,) + ((self.grade.soft_bin,) if self.grade else ())

    def test_defs(self) -> list[TestDef]:
        """The program as `data.program.TestDef`s, one per feature (an MPR pin is one)."""
        return program_test_defs(self.program)

    def site_map(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Test site of each die: its position inside the touchdown block (0 .. sites - 1)."""
        width, height = self.touchdown
        return (np.mod(x, width) + width * np.mod(y, height)).astype(np.int32)

    def bin_names(self, program: tuple[ParametricTest, ...] | None = None) -> tuple[dict[int, str], dict[int, str]]:
        """HBR / SBR names: good bins by grade, hard fail bins by family, soft fail bins by test."""
        program = self.program if program is None else program
        hard = {self.pass_bin: "PASS"}
        soft = {self.pass_bin: "PASS"}
        if self.grade:
            hard[self.grade.hard_bin] = soft[self.grade.soft_bin] = self.grade.name
        hard.update({b: f"FAIL_{family.upper()}" for family, b in self.family_bins.items()})
        # A hand-made program may hold tests of a family the product has no bin for: left unnamed.
        binned = tuple(t for t in program if t.family in self.family_bins)
        for test, (_, soft_bin) in zip(binned, fail_bins(binned, self.family_bins), strict=True):
            soft[soft_bin] = f"FAIL_{test.name.upper()}"
        return hard, soft


def _speed_grade(program: tuple[ParametricTest, ...], test_number: int, sigmas: float) -> SpeedGrade:
    """Grade B below `sigmas` population sigmas under the test's nominal, rounded as a limit."""
    (test,) = [t for t in program if t.number == test_number]
    return SpeedGrade(test_number=test_number, min_value=float(f"{test.value_at_sigma(sigmas):.4g}"))


WF7N = Product(
    name="WF7N",
    program=WF7N_PROGRAM,
    family_bins=WF7N_FAMILY_BINS,
    geometry=DEFAULT_GEOMETRY,
    touchdown=(2, 2),
    lot_prefix="WF",
    ft_logit_intercept=-4.9,
)

MX3A = Product(
    name="MX3A",
    program=MX3A_PROGRAM,
    family_bins=MX3A_FAMILY_BINS,
    geometry=WaferGeometry(diameter_mm=200.0, die_width_mm=6.5, die_height_mm=5.2),
    touchdown=(4, 2),
    lot_prefix="MX",
    # Fewer tests than WF7N, so fewer near-limit terms: a higher intercept for the same 2-5 %.
    ft_logit_intercept=-4.7,
    # fmax at 1.0 V (test 181) below nominal - 0.6 sigma: about a quarter of good dies are grade B.
    grade=_speed_grade(MX3A_PROGRAM, 181, -0.6),
)

PRODUCTS: dict[str, Product] = {p.name: p for p in (WF7N, MX3A)}
DEFAULT_PRODUCT = WF7N.name


def get_product(name: str) -> Product:
    """The registered product `name`; a ValueError naming the choices otherwise."""
    try:
        return PRODUCTS[name]
    except KeyError:
        raise ValueError(f"unknown product {name!r}; choose from {sorted(PRODUCTS)}") from None
