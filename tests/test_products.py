"""The product registry: two products that differ in everything a tester's files carry, and their STDF files.

The STDF files are checked with pystdf (GPL-2, a test-only oracle, as in tests/test_stdf.py): the
dies, multi-pin results, bins and program fields it decodes must be what the generator made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.geometry import WaferGeometry
from data.products import DEFAULT_PRODUCT, PRODUCTS
from data.program import feature_name
from data.stdf import records as rec
from data.stdf.writer import LATER_PTR_MODES, encode_wafer
from data.synthetic import GeneratorConfig, generate
from data.test_program import program_features
from tests.stdf_builder import oracle_dies, pystdf_records

WF7N, MX3A = PRODUCTS["WF7N"], PRODUCTS["MX3A"]


@pytest.fixture(scope="module")
def mx3a_wafer():
    """A full MX3A wafer (805 dies) with a donut defect: leakage fails on the MPR tests, and grade B."""
    return next(generate(GeneratorConfig(product="MX3A", lots=1, wafers_per_lot=1, seed=5, program_revision="2.3")))


@pytest.fixture(scope="module")
def small_mx3a_wafer():
    """A 100 mm MX3A wafer (about 180 dies), for the writer's variants."""
    geometry = WaferGeometry(diameter_mm=100.0, die_width_mm=6.5, die_height_mm=5.2)
    return next(generate(GeneratorConfig(product="MX3A", lots=1, wafers_per_lot=1, seed=5, geometry=geometry)))


# --- helpers -------------------------------------------------------------------------------------------


def by_xy(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["x", "y"]).reset_index(drop=True)


# --- the registry --------------------------------------------------------------------------------------


def test_registry_has_two_products_that_differ_in_what_the_files_carry():
    assert DEFAULT_PRODUCT == "WF7N" and {"WF7N", "MX3A"} <= set(PRODUCTS)
    assert len(WF7N.program) == 52 and 30 <= len(MX3A.program) <= 36
    assert not {t.number for t in WF7N.program} & {t.number for t in MX3A.program}
    assert not {t.name for t in WF7N.program} & {t.name for t in MX3A.program}
    assert (WF7N.geometry.diameter_mm, WF7N.geometry.die_width_mm, WF7N.geometry.die_height_mm) == (300, 11, 9)
    assert MX3A.geometry.diameter_mm == 200 and 700 <= len(MX3A.geometry.die_grid()) <= 900
    assert len(WF7N.geometry.die_grid()) != len(MX3A.geometry.die_grid())
    assert (WF7N.sites, WF7N.touchdown, MX3A.sites, MX3A.touchdown) == (4, (2, 2), 8, (4, 2))
    assert (WF7N.good_hard_bins, MX3A.good_hard_bins) == ((1,), (1, 2))
    assert (WF7N.good_soft_bins, MX3A.good_soft_bins) == ((1,), (1, 2))


def test_mx3a_program_mixes_limit_sides_units_and_multi_pin_tests():
    numbers = [t.number for t in MX3A.program]
    assert min(numbers) == 100 and numbers == sorted(numbers)
    sides = {d.sides for d in MX3A.test_defs()}
    assert sides == {"both", "lo", "hi"}
    mprs = [t for t in MX3A.program if t.is_mpr]
    assert mprs and all(t.pins == (1, 2, 3, 4) for t in mprs)
    assert {t.units for t in MX3A.program} - {t.units for t in WF7N.program}  # units WF7N never uses
    assert set(MX3A.family_bins) != set(WF7N.family_bins)
    assert min(MX3A.family_bins.values()) >= 10  # fail bins far from the good ones
    assert MX3A.grade is not None and MX3A.grade.test_number in numbers


def test_mpr_tests_are_one_column_per_pin(mx3a_wafer):
    dies = mx3a_wafer.dies
    assert {"t100_p1", "t100_p2", "t100_p3", "t100_p4", "t120_p3"} <= set(dies.columns)
    assert "t100" not in dies.columns
    for test in (t for t in MX3A.program if t.is_mpr):
        pins = dies[list(test.features)].to_numpy()
        # Measured together (all pins or none), yet each pin its own value.
        assert (np.isnan(pins).all(axis=1) | ~np.isnan(pins).any(axis=1)).all()
        measured = pins[~np.isnan(pins).any(axis=1)]
        assert (measured[:, 0] != measured[:, 1]).mean() > 0.99


def test_grade_b_dies_pass_sort_and_go_to_final_test(mx3a_wafer):
    dies, grade = mx3a_wafer.dies, MX3A.grade
    slow = dies[dies.hard_bin == grade.hard_bin]
    assert len(slow) > 20 and slow.sort_pass.all() and (slow.soft_bin == grade.soft_bin).all()
    speed = feature_name(grade.test_number)
    assert (slow[speed] < grade.min_value).all()
    assert (dies.loc[dies.hard_bin == MX3A.pass_bin, speed] >= grade.min_value).all()
    assert set(slow.part_id) <= set(mx3a_wafer.labels.part_id)
    assert set(mx3a_wafer.labels.part_id) == set(dies.part_id[dies.sort_pass])


# --- STDF files, read back by pystdf -------------------------------------------------------------------


@pytest.mark.parametrize("product", ["WF7N", "MX3A"])
def test_stdf_program_fields_bins_and_part_flags(product, mx3a_wafer):
    if product == "MX3A":
        wafer = mx3a_wafer
    else:
        wafer = next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=1)))  # every WF7N fail bin
    spec = PRODUCTS[product]
    records = pystdf_records(encode_wafer(wafer))
    first = {name: fields for name, fields in reversed(records)}
    mir = first["MIR"]
    assert (mir["PART_TYP"], mir["JOB_NAM"], mir["JOB_REV"]) == (product, f"{product}_SORT1", wafer.program_revision)
    assert mir["START_T"] == first["WIR"]["START_T"] == wafer.start_time and mir["SETUP_T"] < mir["START_T"]
    wcr = first["WCR"]
    assert (wcr["WAFR_SIZ"], wcr["WF_UNITS"], wcr["CENTER_X"], wcr["CENTER_Y"]) == (
        spec.geometry.diameter_mm,
        rec.WF_UNITS_MM,
        0,
        0,
    )
    assert np.float32(wcr["DIE_WID"]) == np.float32(spec.geometry.die_width_mm)
    assert np.float32(wcr["DIE_HT"]) == np.float32(spec.geometry.die_height_mm)
    assert (wcr["POS_X"], wcr["POS_Y"]) == ("R", "U")
    assert first["SDR"]["SITE_CNT"] == spec.sites

    dies = wafer.dies
    for name, column, good in (("HBR", "hard_bin", spec.good_hard_bins), ("SBR", "soft_bin", spec.good_soft_bins)):
        p = name[0]
        bins = {f[f"{p}BIN_NUM"]: (f[f"{p}BIN_CNT"], f[f"{p}BIN_PF"]) for n, f in records if n == name}
        assert {b: c for b, (c, _) in bins.items()} == dies[column].value_counts().to_dict()
        assert {b for b, (_, pf) in bins.items() if pf == "P"} == set(good) & set(bins)
        assert {pf for _, pf in bins.values()} == {"P", "F"}
    assert first["WRR"]["GOOD_CNT"] == int(dies.sort_pass.sum())

    oracle = by_xy(oracle_dies(records))
    expected = by_xy(dies)
    for column in ("x", "y", "head", "site", "hard_bin", "soft_bin", "part_id"):
        assert oracle[column].tolist() == expected[column].tolist(), column
    fail_bit = (oracle.part_flg & rec.PART_FLG_FAIL) != 0
    assert (fail_bit == ~expected.sort_pass).all()  # the fail bit exactly off the good bins


def test_stdf_mpr_records_carry_pins_limits_and_per_pin_states(mx3a_wafer):
    records = pystdf_records(encode_wafer(mx3a_wafer))
    names = [n for n, _ in records]
    pmrs = [f for n, f in records if n == "PMR"]
    assert [f["PMR_INDX"] for f in pmrs] == [1, 2, 3, 4] and [f["LOG_NAM"] for f in pmrs] == [
        "IO1",
        "IO2",
        "IO3",
        "IO4",
    ]
    assert max(i for i, n in enumerate(names) if n == "PMR") < names.index("MPR")
    mprs = [f for n, f in records if n == "MPR"]
    mpr_tests = [t for t in MX3A.program if t.is_mpr]
    assert {f["TEST_NUM"] for f in mprs} == {t.number for t in mpr_tests}
    for test in mpr_tests:
        of_test = [f for f in mprs if f["TEST_NUM"] == test.number]
        assert all(f["RTN_INDX"] == list(test.pins) for f in of_test)  # every MPR names its pins
        assert all(f["RTN_ICNT"] == f["RSLT_CNT"] == len(test.pins) for f in of_test)
        head, later = of_test[0], of_test[1:]
        # Limits, scale and units on the first MPR of a test; later ones point back to it.
        assert head["TEST_TXT"] == test.name and head["UNITS"] in ("V", "A")
        assert not head["OPT_FLAG"] & (rec.OPT_RES_SCAL_INVALID | rec.OPT_LO_LIMIT_INVALID | rec.OPT_HI_LIMIT_INVALID)
        hi = test.hi_limit * 10.0 ** -head["HLM_SCAL"]
        assert np.float32(head["HI_LIMIT"]) == np.float32(hi)
        assert bool(head["OPT_FLAG"] & rec.OPT_NO_LO_LIMIT) == (test.lo_limit is None)
        assert all(f["OPT_FLAG"] & rec.OPT_RES_SCAL_INVALID and f["UNITS"] is None for f in later)

    # Each pin's state: 0 in limits, 6 above the high limit; TEST_FLG and PARM_FLG for the record.
    leak = next(t for t in mpr_tests if t.number == 120)
    of_leak = [f for f in mprs if f["TEST_NUM"] == 120]
    scale = 10.0 ** of_leak[0]["RES_SCAL"]
    failing = [f for f in of_leak if f["TEST_FLG"] & rec.TEST_FLG_FAIL]
    assert failing and len(failing) < len(of_leak)
    for f in of_leak:
        above = [r * scale > leak.hi_limit for r in f["RTN_RSLT"]]
        states = [s for byte in f["RTN_STAT"] for s in (byte & 0xF, byte >> 4)][: len(above)]
        assert states == [6 if a else 0 for a in above]
        assert bool(f["TEST_FLG"] & rec.TEST_FLG_FAIL) == any(above)
        assert bool(f["PARM_FLG"] & rec.PARM_FLG_ABOVE_HIGH) == any(above)


@pytest.mark.parametrize("cpu_type,later_ptrs", [(c, m) for c in (1, 2) for m in LATER_PTR_MODES])
def test_stdf_results_round_trip_per_pin_in_every_variant(small_mx3a_wafer, cpu_type, later_ptrs):
    records = pystdf_records(encode_wafer(small_mx3a_wafer, cpu_type=cpu_type, later_ptrs=later_ptrs))
    features = list(program_features(small_mx3a_wafer.test_program))
    oracle = by_xy(oracle_dies(records))
    expected = by_xy(small_mx3a_wafer.dies)
    assert len(oracle) == len(expected)
    assert set(features) <= set(oracle.columns)
    # float32 in the file's base units, back to program units; NaN where a test was never run.
    np.testing.assert_allclose(
        oracle[features].to_numpy(np.float64), expected[features].to_numpy(np.float64), rtol=3e-7
    )
    mprs = [f for n, f in records if n == "MPR"]
    if later_ptrs == "result":
        assert {f["TEST_TXT"] is None for f in mprs} == {False, True}  # only the first of each test names it
