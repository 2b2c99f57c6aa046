"""STDF V4 writer and reader: every file checked against pystdf, every variation and bad input on small files.

pystdf (GPL-2) is the independent reader here, a test-only oracle: the dies and limits it sees
(decoded by the helpers below from its record fields, not by data/stdf) must match what was
generated and what data/stdf/reader.py reads. Files our writer cannot make (another tester's
program, MPRs naming their pins once, several heads, final-test parts) are packed here record by
record with `Stdf`.
"""

from __future__ import annotations

import bz2
import dataclasses
import glob
import gzip
import io
import logging
import os
import struct

import numpy as np
import pandas as pd
import pytest
from pystdf.IO import Parser

from data import fs
from data.geometry import WaferGeometry
from data.program import FileProgram, TestDef, feature_name, is_test_feature
from data.readers import READERS, InputFileError, read_parquet_wafer
from data.stdf import records as rec
from data.stdf.reader import USED_RECORDS, read_stdf, supersede
from data.stdf.writer import LATER_PTR_MODES, UNIT_SCALING, encode_wafer, write_stdf_wafer
from data.synthetic import GeneratorConfig, generate
from data.test_program import program_test_defs
from data.writers import WRITERS, write_dataset, write_parquet_wafer
from tests.stdf_builder import Stdf, cn, oracle_dies, pystdf_records, write_bytes

SMALL_GEOMETRY = WaferGeometry(diameter_mm=100.0)
DIE_KEYS = ["part_id", "x", "y", "head", "site", "hard_bin", "soft_bin", "sort_pass"]


@pytest.fixture(scope="module")
def wafer():
    """A full 300 mm wafer (623 dies) with failures in every test family."""
    return next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=1)))


@pytest.fixture(scope="module")
def tiny():
    """A 100 mm wafer: 51 dies, three failing."""
    return next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=1, geometry=SMALL_GEOMETRY)))


@pytest.fixture(scope="module")
def tiny_mpr():
    """A small wafer of the product with MPR tests (4 pins each) and two good bins."""
    config = GeneratorConfig(lots=1, wafers_per_lot=1, seed=2, product="MX3A", geometry=SMALL_GEOMETRY)
    return next(generate(config))


# --- helpers -------------------------------------------------------------------------------------------


def oracle_limits(records: list[tuple[str, dict]]) -> dict[str, tuple[float | None, float | None]]:
    """(low, high) limit of every feature from the first record of its test: LIMIT * 10**xLM_SCAL,
    None where OPT_FLAG bit 6 / 7 says there is none."""
    limits: dict[str, tuple] = {}
    for name, f in records:
        if name not in ("PTR", "MPR"):
            continue
        features = (
            [feature_name(f["TEST_NUM"])]
            if name == "PTR"
            else [feature_name(f["TEST_NUM"], p) for p in f["RTN_INDX"] or []]
        )
        for feature in features:
            opt = f["OPT_FLAG"]
            if feature not in limits and opt is not None:
                lo = None if opt & rec.OPT_NO_LO_LIMIT else f["LO_LIMIT"] * 10 ** f["LLM_SCAL"]
                hi = None if opt & rec.OPT_NO_HI_LIMIT else f["HI_LIMIT"] * 10 ** f["HLM_SCAL"]
                limits[feature] = (lo, hi)
    return limits


def features(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if is_test_feature(c)]


def by_xy(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["x", "y"]).reset_index(drop=True)


def split_records(data: bytes) -> list[tuple[int, str, bytes]]:
    """(offset, name, raw bytes incl. header) of each record, in the byte order of the FAR."""
    endian = rec.CPU_TYPE_ENDIAN[data[4]]
    out, off = [], 0
    while off < len(data):
        (length,) = struct.unpack_from(endian + "H", data, off)
        out.append((off, rec.record_name(data[off + 2], data[off + 3]), data[off : off + 4 + length]))
        off += 4 + length
    return out


def read_one(path: str):
    (wafer_read,) = list(read_stdf(path))
    return wafer_read


def one_die_file(**prr) -> Stdf:
    """MIR, WIR, one die with one PTR; `prr` overrides the PRR's fields."""
    f = Stdf().mir().wir()
    f.pir().ptr(1, 0.5, f.defaults("t", rec.OPT_RESERVED))
    return f.prr(**{"x": 0, "y": 0, **prr}).wrr()


# --- the writer, checked by pystdf, read back ------------------------------------------------------------


@pytest.mark.parametrize("cpu_type", [1, 2])
def test_full_wafer_parses_with_pystdf_same_dies_bins_and_results(wafer, tmp_path, cpu_type):
    path = write_stdf_wafer(wafer, str(tmp_path), cpu_type=cpu_type)
    records = pystdf_records(path)
    assert records[0] == ("FAR", {"CPU_TYPE": cpu_type, "STDF_VER": 4})
    oracle = by_xy(oracle_dies(records))
    expected = by_xy(wafer.dies)
    names = features(expected)
    assert len(oracle) == len(expected) == sum(1 for name, _ in records if name == "PRR")
    for column in ("x", "y", "head", "site", "hard_bin", "soft_bin", "part_id"):
        assert oracle[column].tolist() == expected[column].tolist(), column
    np.testing.assert_allclose(
        oracle[names].to_numpy(np.float64), expected[names].to_numpy(np.float64), rtol=3e-7
    )  # float32 in the file's base units, back to program units
    ours = by_xy(read_one(path).dies)
    assert features(ours) == names
    np.testing.assert_array_equal(ours[names].to_numpy(), oracle[names].to_numpy(np.float32))
    pd.testing.assert_frame_equal(ours[DIE_KEYS], expected[DIE_KEYS])


@pytest.mark.parametrize("product", ["tiny", "tiny_mpr"])
@pytest.mark.parametrize("cpu_type,later_ptrs", [(c, m) for c in (1, 2) for m in LATER_PTR_MODES])
def test_every_variant_parses_with_pystdf_and_our_reader_alike(request, tmp_path, product, cpu_type, later_ptrs):
    generated = request.getfixturevalue(product)
    path = write_stdf_wafer(generated, str(tmp_path), cpu_type=cpu_type, later_ptrs=later_ptrs)
    records = pystdf_records(path)
    oracle = by_xy(oracle_dies(records))
    wafer_read = read_one(path)
    ours = by_xy(wafer_read.dies)
    assert len(ours) == len(oracle) == len(generated.dies)
    for column in ("x", "y", "head", "site", "hard_bin", "soft_bin", "part_id"):
        assert ours[column].tolist() == oracle[column].tolist(), column
    names = features(generated.dies)
    assert features(ours) == names
    np.testing.assert_array_equal(ours[names].to_numpy(), oracle[names].to_numpy(np.float32))
    # The program read back: every feature with pystdf's limits (first record of each test).
    limits = oracle_limits(records)
    for test in wafer_read.program.tests:
        for ours_limit, oracle_limit in zip((test.lo_limit, test.hi_limit), limits[test.feature], strict=True):
            assert ours_limit == (None if oracle_limit is None else pytest.approx(oracle_limit, rel=1e-6))


@pytest.mark.parametrize("product", ["wafer", "tiny_mpr"])
def test_the_program_read_back_is_the_generators(request, tmp_path, product):
    generated = request.getfixturevalue(product)
    wafer_read = read_one(write_stdf_wafer(generated, str(tmp_path)))
    program = wafer_read.program
    expected = program_test_defs(generated.test_program)
    assert [t.feature for t in program.tests] == [t.feature for t in expected]
    for ours, theirs in zip(program.tests, expected, strict=True):
        # Same names, display units (RES_SCAL prefix + UNITS) and limits, to the digit.
        assert (ours.name, ours.units, ours.lo_limit, ours.hi_limit, ours.pin) == (
            theirs.name,
            theirs.units,
            theirs.lo_limit,
            theirs.hi_limit,
            theirs.pin,
        )
    spec = generated.product_spec
    assert program.good_hard_bins == sorted(b for b in spec.good_hard_bins if b in set(generated.dies.hard_bin))
    assert program.revision == generated.revision
    assert program.start_time == wafer_read.start_time == generated.start_time
    geometry = generated.geometry
    assert program.wcr == {
        "diameter_mm": geometry.diameter_mm,
        "die_width_mm": geometry.die_width_mm,
        "die_height_mm": geometry.die_height_mm,
        "center_x": 0.0,
        "center_y": 0.0,
    }
    assert by_xy(wafer_read.dies)["sort_pass"].tolist() == by_xy(generated.dies)["sort_pass"].tolist()


def test_record_stream_summaries_and_wafer_geometry(tiny_mpr, tmp_path):
    records = pystdf_records(write_stdf_wafer(tiny_mpr, str(tmp_path)))
    names = [name for name, _ in records]
    assert names[:3] == ["FAR", "MIR", "SDR"] and names[-1] == "MRR"
    assert names.index("WCR") < names.index("WIR") < names.index("PIR")
    first = {name: fields for name, fields in reversed(records)}
    assert first["MIR"]["LOT_ID"] == tiny_mpr.lot_id and first["MIR"]["PART_TYP"] == tiny_mpr.product
    assert first["WIR"]["WAFER_ID"] == first["WRR"]["WAFER_ID"] == tiny_mpr.wafer_id
    wcr = first["WCR"]
    geometry = tiny_mpr.geometry
    assert (wcr["WAFR_SIZ"], wcr["DIE_WID"], wcr["WF_UNITS"]) == (
        pytest.approx(geometry.diameter_mm),
        pytest.approx(geometry.die_width_mm),
        rec.WF_UNITS_MM,
    )
    n_pass = int(tiny_mpr.dies.sort_pass.sum())
    wrr = first["WRR"]
    assert (wrr["PART_CNT"], wrr["GOOD_CNT"], wrr["RTST_CNT"]) == (len(tiny_mpr.dies), n_pass, 0)
    spec = tiny_mpr.product_spec
    for name, column, good in (("HBR", "hard_bin", spec.good_hard_bins), ("SBR", "soft_bin", spec.good_soft_bins)):
        prefix = name[0]
        bins = {f[f"{prefix}BIN_NUM"]: (f[f"{prefix}BIN_CNT"], f[f"{prefix}BIN_PF"]) for n, f in records if n == name}
        assert {b: c for b, (c, _) in bins.items()} == tiny_mpr.dies[column].value_counts().to_dict()
        assert all((pf == "P") == (b in good) for b, (_, pf) in bins.items())


@pytest.mark.parametrize("sites", [4, 8])
def test_multi_site_touchdowns_interleave_pir_ptr_prr(wafer, tmp_path, sites):
    if sites != wafer.sites:
        wafer = next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=1, product="MX3A")))
    path = write_stdf_wafer(wafer, str(tmp_path))
    records = pystdf_records(path)
    assert len(oracle_dies(records)) == len(read_one(path).dies) == len(wafer.dies)
    touchdown: list[tuple[str, dict]] = []
    touchdowns = []
    for name, fields in records:
        if name in ("PIR", "PTR", "MPR", "PRR"):
            if name == "PIR" and touchdown and touchdown[-1][0] == "PRR":
                touchdowns.append(touchdown)
                touchdown = []
            touchdown.append((name, fields))
    touchdowns.append(touchdown)
    assert max(sum(n == "PIR" for n, _ in t) for t in touchdowns) == wafer.sites == sites
    program_order = {t.number: i for i, t in enumerate(wafer.test_program)}
    for t in touchdowns:
        kinds = [n for n, _ in t]
        k = kinds.count("PIR")
        assert kinds[:k] == ["PIR"] * k and kinds[-k:] == ["PRR"] * k and kinds.count("PRR") == k
        site_order = [f["SITE_NUM"] for _, f in t[:k]]
        assert site_order == sorted(site_order) == [f["SITE_NUM"] for _, f in t[-k:]]
        # Test by test, and within one test site by site: the sites interleave.
        order = [(program_order[f["TEST_NUM"]], f["SITE_NUM"]) for n, f in t if n in ("PTR", "MPR")]
        assert order == sorted(order)
        if k > 1:
            assert len({s for _, s in order[:k]}) > 1


def test_limits_units_and_scale_only_on_the_first_record_of_each_test(tiny_mpr, tmp_path):
    records = pystdf_records(write_stdf_wafer(tiny_mpr, str(tmp_path)))
    tests = {t.number: t for t in tiny_mpr.test_program}
    seen: set[int] = set()
    for name, f in records:
        if name not in ("PTR", "MPR"):
            continue
        test = tests[f["TEST_NUM"]]
        units, scale = UNIT_SCALING.get(test.units, (test.units, 0))
        if f["TEST_NUM"] not in seen:
            seen.add(f["TEST_NUM"])
            assert not f["OPT_FLAG"] & (rec.OPT_RES_SCAL_INVALID | rec.OPT_LO_LIMIT_INVALID | rec.OPT_HI_LIMIT_INVALID)
            assert (f["UNITS"], f["RES_SCAL"], f["LLM_SCAL"], f["HLM_SCAL"]) == (units, scale, scale, scale)
            assert bool(f["OPT_FLAG"] & rec.OPT_NO_LO_LIMIT) == (test.lo_limit is None)
            assert bool(f["OPT_FLAG"] & rec.OPT_NO_HI_LIMIT) == (test.hi_limit is None)
        else:
            defaults = rec.OPT_RES_SCAL_INVALID | rec.OPT_LO_LIMIT_INVALID | rec.OPT_HI_LIMIT_INVALID
            assert f["OPT_FLAG"] & defaults == defaults
            assert f["TEST_TXT"] == test.name and f["UNITS"] is None  # left out
    assert seen == set(tests)


def test_fail_flags_and_stop_on_fail(wafer, tmp_path):
    records = pystdf_records(write_stdf_wafer(wafer, str(tmp_path)))
    dies = wafer.dies.set_index(["x", "y"])
    program = wafer.test_program
    position = {t.number: i for i, t in enumerate(program)}
    ptrs: dict[int, list[dict]] = {}
    n_failed = 0
    for name, f in records:
        if name == "PIR":
            ptrs[f["SITE_NUM"]] = []
        elif name == "PTR":
            ptrs[f["SITE_NUM"]].append(f)
        elif name == "PRR":
            tests = ptrs.pop(f["SITE_NUM"])
            die = dies.loc[(f["X_COORD"], f["Y_COORD"])]
            assert bool(f["PART_FLG"] & rec.PART_FLG_FAIL) == (not die.sort_pass)
            assert f["NUM_TEST"] == len(tests) == int(die[features(wafer.dies)].notna().sum())
            failing = [t for t in tests if t["TEST_FLG"] & rec.TEST_FLG_FAIL]
            assert all(t["TEST_FLG"] == 0 for t in tests if t not in failing)
            if failing:
                (last,) = failing
                assert last is tests[-1]  # stop on fail: nothing after the failing test
                test = program[position[last["TEST_NUM"]]]
                value = die[feature_name(test.number)]
                high = test.hi_limit is not None and value > test.hi_limit
                assert bool(last["PARM_FLG"] & rec.PARM_FLG_ABOVE_HIGH) == high
                assert bool(last["PARM_FLG"] & rec.PARM_FLG_BELOW_LOW) == (not high)
                n_failed += 1
    assert n_failed


def test_same_wafer_gives_the_same_bytes(tiny):
    assert encode_wafer(tiny) == encode_wafer(tiny)
    assert encode_wafer(tiny, cpu_type=1) != encode_wafer(tiny, cpu_type=2)


def test_write_dataset_stdf_then_every_reader_path_agrees(tmp_path):
    config = GeneratorConfig(lots=1, wafers_per_lot=2, seed=3, geometry=SMALL_GEOMETRY)
    manifest = write_dataset(config, str(tmp_path), "stdf")
    assert WRITERS["stdf"][1] == "stdf"
    files = sorted(glob.glob(str(tmp_path / "wafers" / "*" / "*.stdf")))
    assert [os.path.relpath(f, tmp_path) for f in files] == sorted(w["file"] for w in manifest["wafers"])
    reads = [w for f in files for w in READERS["stdf"](f)]
    assert sum(len(w.dies) for w in reads) == manifest["dies"]
    labels = pd.concat([pd.read_parquet(f) for f in glob.glob(str(tmp_path / "labels" / "*.parquet"))])
    assert len(labels) == manifest["sort_pass"]
    dies = pd.concat([w.dies for w in reads])
    passed = dies[dies.sort_pass]
    assert set(zip(labels.wafer_id, labels.x, labels.y, strict=True)) == set(
        zip(passed.wafer_id, passed.x, passed.y, strict=True)
    )
    # The STDF reader gives the columns, dtypes and values of the Parquet path.
    generated = next(generate(config))
    (from_parquet,) = list(read_parquet_wafer(write_parquet_wafer(generated, str(tmp_path))))
    from_stdf = next(w for w in reads if w.wafer_id == generated.wafer_id)
    assert list(from_stdf.dies.columns) == list(from_parquet.dies.columns)
    assert from_stdf.dies.dtypes.tolist() == from_parquet.dies.dtypes.tolist()
    a, b = by_xy(from_stdf.dies), by_xy(from_parquet.dies)
    names = features(a)
    pd.testing.assert_frame_equal(a.drop(columns=names), b.drop(columns=names))
    np.testing.assert_allclose(a[names], b[names], rtol=3e-7)
    # And the same program: the Parquet file's from its metadata, the STDF file's from its records.
    ours, theirs = from_stdf.program, from_parquet.program
    assert (ours.tests, ours.revision, ours.start_time, ours.wcr) == (
        theirs.tests,
        theirs.revision,
        theirs.start_time,
        theirs.wcr,
    )


# --- reader variations on generated files ------------------------------------------------------------------


@pytest.mark.parametrize("flag_supersede", [True, False])
def test_retested_dies_last_test_wins_and_is_counted(tiny, tmp_path, flag_supersede):
    names = features(tiny.dies)
    failing = tiny.dies[~tiny.dies.sort_pass]
    retests = pd.concat([failing, tiny.dies[tiny.dies.sort_pass].iloc[:2]]).copy()
    # The retest passes every die with fresh values.
    retests[names] = tiny.dies[names].median().to_numpy(np.float32)
    good = tiny.product_spec.pass_bin
    retests[["hard_bin", "soft_bin", "sort_pass"]] = [good, good, True]
    path = write_stdf_wafer(tiny, str(tmp_path), retests=retests, flag_supersede=flag_supersede)
    records = pystdf_records(path)
    flags = [f["PART_FLG"] for n, f in records if n == "PRR"]
    assert len(flags) == len(tiny.dies) + len(retests)
    assert all(bool(f & rec.PART_FLG_SUPERSEDES_XY) == flag_supersede for f in flags[len(tiny.dies) :])
    wafer_read = read_one(path)
    assert wafer_read.superseded == len(retests)
    assert len(wafer_read.dies) == len(tiny.dies)
    assert wafer_read.dies.sort_pass.all() and (wafer_read.dies.hard_bin == good).all()
    retested = wafer_read.dies.merge(retests[["x", "y"]], on=["x", "y"])
    np.testing.assert_allclose(
        retested[names].to_numpy(),
        np.broadcast_to(retests[names].iloc[0].to_numpy(np.float32), (len(retests), len(names))),
        rtol=3e-7,
    )
    assert len(by_xy(oracle_dies(records))) == len(wafer_read.dies)


def test_supersede_by_part_id_flag():
    dies = pd.DataFrame(
        {
            "x": [0, 1, rec.COORD_MISSING, 5],
            "y": [0, 0, rec.COORD_MISSING, 5],
            "part_id": ["a", "b", "a", "c"],
            "_part_flg": [0, 0, rec.PART_FLG_SUPERSEDES_ID, 0],
        }
    )
    assert supersede(dies).tolist() == [False, True, True, True]


def test_unused_and_unknown_records_are_skipped_and_counted(tiny_mpr, tmp_path):
    extra = [
        (50, 30, bytes([5]) + b"hello"),  # DTR, a datalog text
        (15, 20, b"\x00" * 8),  # FTR (functional test) the reader does not use
        (180, 1, b"\x01\x02\x03"),  # outside the specification
    ]
    path = write_bytes(tmp_path, "w.stdf", encode_wafer(tiny_mpr, extra_records=extra))
    wafer_read = read_one(path)
    plain = write_stdf_wafer(tiny_mpr, str(tmp_path))
    unused = pd.Series([n for n, _ in pystdf_records(plain) if n not in USED_RECORDS]).value_counts().to_dict()
    assert unused and wafer_read.skipped_records == {**unused, "DTR": 1, "FTR": 1, "REC_180_1": 1}
    assert wafer_read.records["PRR"] == len(tiny_mpr.dies) and wafer_read.records["PIR"] == len(tiny_mpr.dies)
    assert wafer_read.records["MPR"] and wafer_read.records["HBR"] and wafer_read.records["WCR"] == 1
    pd.testing.assert_frame_equal(wafer_read.dies, read_one(plain).dies)


def test_a_test_a_die_skipped_is_nan_not_zero(tiny, tmp_path):
    names = features(tiny.dies)
    dies = tiny.dies.copy()
    passing = dies.index[dies.sort_pass]
    dies.loc[passing[0], names[7]] = np.nan
    wafer_read = read_one(write_stdf_wafer(dataclasses.replace(tiny, dies=dies), str(tmp_path), cpu_type=1))
    got = wafer_read.dies.set_index("part_id").loc[dies.part_id[passing[0]]]
    assert np.isnan(got[names[7]]) and not got[names[:7] + names[8:]].isna().any()


def test_several_wafers_in_one_file(tiny, tmp_path):
    other = list(generate(GeneratorConfig(lots=1, wafers_per_lot=2, seed=1, geometry=SMALL_GEOMETRY)))[1]
    a, b = split_records(encode_wafer(tiny)), split_records(encode_wafer(other))
    wrr_a = next(i for i, (_, n, _) in enumerate(a) if n == "WRR")
    wir_b = next(i for i, (_, n, _) in enumerate(b) if n == "WIR")
    data = b"".join(raw for _, _, raw in a[: wrr_a + 1] + b[wir_b:])
    reads = list(read_stdf(write_bytes(tmp_path, "lot.stdf", data)))
    assert [r.wafer_id for r in reads] == [tiny.wafer_id, other.wafer_id]
    assert [len(r.dies) for r in reads] == [len(tiny.dies), len(other.dies)]
    assert reads[0].records["WIR"] == 2 and reads[1].records == {}
    assert isinstance(reads[0].program, FileProgram) and reads[0].program is reads[1].program


# --- another tester's files, packed by hand ----------------------------------------------------------------


def test_a_foreign_program_is_learned_from_the_file(tmp_path, caplog):
    f = Stdf(cpu_type=1).mir().wir()
    opt = rec.OPT_RESERVED
    later = cn("Vth @ Id=1uA") + cn("") + bytes([opt | 0x31])  # "use the first PTR's scale and limits"
    f.pir()
    f.ptr(7, 1.5e-6, f.defaults("Vth @ Id=1uA", opt, scale=6, lo=1.0e-6, hi=2.5e-6, units="A"))  # two-sided
    f.ptr(31337, 2e-9, f.defaults("IDDQ (leak)", opt | rec.OPT_NO_LO_LIMIT, scale=9, hi=5e-9, units="A"))
    f.ptr(900001, 0.6, f.defaults("Vref", opt | rec.OPT_NO_LO_LIMIT | rec.OPT_NO_HI_LIMIT, scale=3, units="V"))
    f.ptr(12, 1.5e9, cn("Fmax"))  # no OPT_FLAG: says nothing about limits or scale
    f.prr(0, 0)
    f.pir().ptr(7, 1.8e-6, later).ptr(31337, 3e-9)  # left out after RESULT: the first's defaults
    f.ptr(12, 1.2e9, f.defaults("Fmax", opt | rec.OPT_NO_LO_LIMIT, scale=-6, hi=2.0e9, units="Hz"))
    f.prr(1, 0)  # no result for 900001
    f.pir().ptr(7, 1.1e-6, f.defaults("Vth renamed", opt, scale=6, lo=1.2e-6, hi=2.5e-6, units="A"))  # an edit
    f.ptr(900001, 0.7, test_flg=rec.TEST_FLG_NOT_EXECUTED).prr(2, 0).wrr()
    path = f.write(tmp_path, "foreign.stdf")
    with caplog.at_level(logging.WARNING):
        wafer_read = read_one(path)
    assert wafer_read.program.tests == [
        TestDef(7, "Vth @ Id=1uA", "uA", 1.0, 2.5),
        TestDef(31337, "IDDQ (leak)", "nA", None, 5.0),
        TestDef(900001, "Vref", "mV", None, None),
        TestDef(12, "Fmax", "MHz", None, 2000.0),
    ]
    assert "PTR 7" in caplog.text and "the first is kept" in caplog.text
    dies = wafer_read.dies
    assert list(dies.columns[10:]) == ["t7", "t31337", "t900001", "t12"]
    assert all(dies[c].dtype == np.float32 for c in dies.columns[10:])
    np.testing.assert_allclose(dies.t7, [1.5, 1.8, 1.1], rtol=1e-6)
    np.testing.assert_allclose(dies.t31337, [2.0, 3.0, np.nan], rtol=1e-6)
    np.testing.assert_allclose(dies.t900001, [600.0, np.nan, np.nan], rtol=1e-6)
    np.testing.assert_allclose(dies.t12, [1500.0, 1200.0, np.nan], rtol=1e-6)
    # pystdf reads the same limits from the same records.
    limits = oracle_limits(pystdf_records(path))
    assert limits["t7"] == (pytest.approx(1.0), pytest.approx(2.5)) and limits["t31337"] == (None, pytest.approx(5.0))


def test_limits_are_read_in_the_units_of_the_results(tmp_path):
    # RESULT and LO_LIMIT are both stored in A; RES_SCAL 6 shows results in uA, LLM_SCAL 3 would show
    # the limit in mA. The feature's limit is in uA, the unit its values are in: 1.0, not 0.001.
    f = Stdf().mir().wir().pir()
    tail = cn("Ioff") + cn("") + f.pack("Bbbbff", rec.OPT_RESERVED | rec.OPT_NO_HI_LIMIT, 6, 3, 3, 1e-6, 0.0) + cn("A")
    wafer_read = read_one(f.ptr(3, 1.5e-6, tail).prr(0, 0).wrr().write(tmp_path))
    assert wafer_read.program.tests == [TestDef(3, "Ioff", "uA", 1.0, None)]
    assert wafer_read.dies.t3.tolist() == [pytest.approx(1.5)]


def test_a_defaults_only_record_outside_any_part(tmp_path):
    f = Stdf().mir().wir()
    opt = rec.OPT_RESERVED
    # STDF V3 conversions: the first PTR of a test carries only defaults, outside any PIR / PRR.
    f.ptr(55, 0.0, f.defaults("Idle", opt | rec.OPT_NO_LO_LIMIT, scale=3, hi=0.004, units="A"), test_flg=0x10)
    path = f.die(3, 4, {55: 0.002}).wrr().write(tmp_path)
    wafer_read = read_one(path)
    assert wafer_read.program.tests == [TestDef(55, "Idle", "mA", None, 4.0)]
    assert wafer_read.dies.t55.tolist() == [pytest.approx(2.0)]


def test_mpr_pins_named_on_the_first_record_only(tmp_path):
    f = Stdf().mir().wir()
    f.pir().mpr(120, [0.5, 0.6, 0.7], pins=(3, 5, 9), text="VOH", opt=0x02, lo=0.4, hi=0.9, units="V").prr(0, 0)
    f.pir().mpr(120, [0.51, 0.61, 0.71]).prr(1, 0)  # RTN_ICNT 0: the first record's pins
    f.pir().mpr(120, [0.52, 0.62]).prr(2, 0)  # fewer results: the first pins
    path = f.wrr().write(tmp_path)
    wafer_read = read_one(path)
    assert wafer_read.program.tests == [TestDef(120, "VOH", "V", 0.4, 0.9, pin=p) for p in (3, 5, 9)]
    dies = wafer_read.dies
    assert list(dies.columns[10:]) == ["t120_p3", "t120_p5", "t120_p9"]
    np.testing.assert_allclose(dies.t120_p5, [0.6, 0.61, 0.62], rtol=1e-6)
    np.testing.assert_allclose(dies.t120_p9, [0.7, 0.71, np.nan], rtol=1e-6)
    mprs = [r for name, r in pystdf_records(path) if name == "MPR"]
    assert [m["RTN_ICNT"] for m in mprs] == [3, 0, 0] and list(mprs[0]["RTN_INDX"]) == [3, 5, 9]
    oracle = by_xy(oracle_dies(pystdf_records(path)))
    np.testing.assert_array_equal(oracle[features(dies)].to_numpy(np.float32), dies[features(dies)].to_numpy())


def test_hbr_pass_flags_decide_sort_pass_with_a_good_bin_that_is_not_1(tmp_path):
    f = Stdf().mir().wir().pir().ptr(1, 0.5, Stdf().defaults("t", rec.OPT_RESERVED)).prr(0, 0, hard=7, soft=70)
    f.die(1, 0, {1: 0.6}, hard=1, part_flg=rec.PART_FLG_FAIL | rec.PART_FLG_PF_INVALID)  # the HBR decides
    f.die(2, 0, {1: 0.7}, hard=3)  # PART_FLG says pass, HBR says F
    f.wrr().bin("HBR", 7, "P").bin("HBR", 1, "F").bin("HBR", 3, "F").bin("SBR", 70, "P").bin("SBR", 1, "F")
    wafer_read = read_one(f.write(tmp_path))
    assert wafer_read.dies.sort_pass.tolist() == [True, False, False]
    assert (wafer_read.program.good_hard_bins, wafer_read.program.good_soft_bins) == ([7], [70])


def test_part_flg_decides_sort_pass_without_hbr_flags(tmp_path):
    f = Stdf().mir().wir().pir().ptr(1, 0.5, Stdf().defaults("t", rec.OPT_RESERVED)).prr(0, 0, hard=9)
    f.die(1, 0, {1: 0.6}, hard=1, part_flg=rec.PART_FLG_FAIL).wrr()
    f.bin("HBR", 9, " ")  # a space: the tester did not say
    wafer_read = read_one(f.write(tmp_path))
    assert wafer_read.dies.sort_pass.tolist() == [True, False]
    assert wafer_read.program.good_hard_bins is None and wafer_read.program.good_soft_bins is None


def test_part_flg_pass_fail_invalid_cannot_be_classified(tmp_path):
    data = one_die_file(part_flg=rec.PART_FLG_PF_INVALID).bytes()
    error = expect_error(write_bytes(tmp_path, "pf_invalid.stdf", data), "pass/fail is invalid")
    assert error.offset == next(off for off, name, _ in split_records(data) if name == "PRR")


def test_two_heads_with_the_same_site_numbers_are_kept_apart(tmp_path):
    first = Stdf().defaults("t", rec.OPT_RESERVED)
    f = Stdf().mir().wir(head=1)  # one wafer, probed by two heads at once
    f.pir(head=1).pir(head=2).ptr(1, 1.0, first, head=1).ptr(1, 2.0, head=2)
    f.prr(5, 0, hard=2, head=2).prr(4, 0, hard=1, head=1).wrr(head=1)
    dies = read_one(f.write(tmp_path)).dies
    assert dies[["x", "head", "site", "hard_bin"]].values.tolist() == [[5, 2, 0, 2], [4, 1, 0, 1]]
    assert dies.t1.tolist() == [2.0, 1.0]
    # Two wafers, one on each head, tested side by side.
    f = Stdf().mir().wir("WA", head=1).wir("WB", head=2)
    f.pir(head=1).pir(head=2).ptr(1, 1.0, first, head=1).ptr(1, 2.0, head=2).prr(0, 0, head=1).prr(0, 0, head=2)
    reads = list(read_stdf(f.wrr("WB", head=2).wrr("WA", head=1).write(tmp_path, "two.stdf")))
    assert [(r.wafer_id, r.dies["head"].tolist(), r.dies.t1.tolist()) for r in reads] == [
        ("WA", [1], [1.0]),
        ("WB", [2], [2.0]),
    ]


def test_a_part_without_die_coordinates_is_not_wafer_sort(tmp_path):
    data = one_die_file(x=rec.COORD_MISSING, y=rec.COORD_MISSING).bytes()
    error = expect_error(write_bytes(tmp_path, "final_test.stdf", data), r"X/Y = -32768\): a final-test file")
    assert error.offset == next(off for off, name, _ in split_records(data) if name == "PRR")


def test_wcr_sizes_in_inches_mils_or_unknown_units(tmp_path):
    def wcr(*args, **kwargs) -> dict | None:
        f = Stdf().mir()
        if args:
            f.wcr(*args, **kwargs)
        f.wir().pir().ptr(1, 0.5, f.defaults("t", rec.OPT_RESERVED)).prr(0, 0).wrr()
        return read_one(f.write(tmp_path)).program.wcr

    assert wcr(8.0, 0.25, 0.2, rec.WF_UNITS_INCH, center=(3, -2)) == {
        "diameter_mm": 203.2,
        "die_width_mm": 5.08,
        "die_height_mm": 6.35,
        "center_x": 3.0,
        "center_y": -2.0,
    }
    mils = wcr(0.0, 400.0, 200.0, rec.WF_UNITS_MIL)
    assert mils["die_width_mm"] == 5.08 and mils["die_height_mm"] == 10.16 and mils["diameter_mm"] is None
    unknown = wcr(8.0, 0.25, 0.2, 0, center=(rec.COORD_MISSING, 1))
    assert unknown == dict.fromkeys(["diameter_mm", "die_width_mm", "die_height_mm", "center_x"]) | {"center_y": 1.0}
    assert wcr() is None


def test_revision_and_start_time(tmp_path):
    f = Stdf().mir(part_typ="ACME77", job="acme_ws", rev="C3", start=1_700_000_123).wir(start=5)
    program = read_one(f.pir().ptr(1, 0.5, f.defaults("t", 2)).prr(0, 0).wrr().write(tmp_path)).program
    assert program.revision == {"PART_TYP": "ACME77", "JOB_NAM": "acme_ws", "JOB_REV": "C3"}
    assert program.start_time == 1_700_000_123
    f = Stdf().mir(start=0).wir(start=1_700_000_999)  # MIR START_T unknown: the WIR's
    assert read_one(f.pir().ptr(1, 0.5).prr(0, 0).wrr().write(tmp_path)).program.start_time == 1_700_000_999


# --- compressed files and other filesystems ----------------------------------------------------------------


def test_compressed_files_read_like_the_plain_file(tiny_mpr, tmp_path):
    data = encode_wafer(tiny_mpr)
    plain = read_one(write_bytes(tmp_path, "W.stdf", data))
    for name, compress in (("W.stdf.gz", gzip.compress), ("W.stdf.bz2", bz2.compress)):
        packed = read_one(write_bytes(tmp_path, name, compress(data)))
        pd.testing.assert_frame_equal(packed.dies, plain.dies)
        assert packed.program == plain.program and packed.records == plain.records


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("bad.stdf.gz", b"\x1f\x8b\x08\x00 not really gzip", "corrupt gzip archive"),
        ("cut.stdf.gz", gzip.compress(b"x" * 1000)[:20], "corrupt gzip archive"),
        ("bad.stdf.bz2", b"BZh9 not bzip2 at all", "corrupt bzip2 archive"),
    ],
)
def test_a_corrupt_archive_names_the_file(tmp_path, name, data, reason):
    path = write_bytes(tmp_path, name, data)
    with pytest.raises(InputFileError, match=reason) as info:
        list(READERS["stdf"](path))
    assert info.value.path == path and path in str(info.value)


def test_a_ram_filesystem_path_reads_through_the_filesystem_layer(tiny, tmp_path):
    data = encode_wafer(tiny)
    local = read_one(write_bytes(tmp_path, "W.stdf", data))
    for path, content in (("ram://lot/W.stdf", data), ("ram://lot/W.stdf.gz", gzip.compress(data))):
        fs.write_bytes(path, content)
        assert fs.exists(path) and fs.glob("ram://lot/W.stdf*")
        remote = read_one(path)
        assert remote.source == path
        pd.testing.assert_frame_equal(remote.dies, local.dies)
    with pytest.raises(InputFileError, match="ram://lot/missing.stdf: cannot open"):
        list(READERS["stdf"]("ram://lot/missing.stdf"))


# --- bad input ----------------------------------------------------------------------------------------------


def expect_error(path: str, match: str) -> InputFileError:
    with pytest.raises(InputFileError, match=match) as info:
        list(READERS["stdf"](path))
    assert info.value.path == path and os.path.basename(path) in str(info.value)
    assert info.value.offset is not None and f"byte offset {info.value.offset}" in str(info.value)
    return info.value


def test_not_stdf(tmp_path):
    error = expect_error(write_bytes(tmp_path, "notes.stdf", b"PAR1 this is not a tester file"), "not an STDF file")
    assert error.offset == 0
    expect_error(write_bytes(tmp_path, "empty.stdf", b""), "first record is not a FAR")


def test_unsupported_cpu_type_and_version(tiny, tmp_path):
    data = bytearray(encode_wafer(tiny))
    data[4] = 0  # CPU_TYPE 0: DEC PDP-11 / VAX byte order
    assert expect_error(write_bytes(tmp_path, "vax.stdf", bytes(data)), "CPU_TYPE 0").offset == 4
    data[4], data[5] = 2, 3
    assert expect_error(write_bytes(tmp_path, "v3.stdf", bytes(data)), "version 3").offset == 5


@pytest.mark.parametrize("cpu_type", [1, 2])
def test_truncated_mid_record_names_the_record_offset(tiny, tmp_path, cpu_type):
    data = encode_wafer(tiny, cpu_type=cpu_type)
    cut = len(data) // 2
    start = max(off for off, _, _ in split_records(data) if off <= cut)
    cut = start + 7  # inside the record, past its header
    error = expect_error(write_bytes(tmp_path, "cut.stdf", data[:cut]), "truncated file")
    assert error.offset == start


def test_truncated_at_a_record_boundary_has_no_mrr(tiny, tmp_path):
    data = encode_wafer(tiny)
    last = split_records(data)[-1]
    assert last[1] == "MRR"
    error = expect_error(write_bytes(tmp_path, "no_mrr.stdf", data[: last[0]]), "without an MRR")
    assert error.offset == last[0]


def test_corrupt_string_length_runs_past_the_record(tiny, tmp_path):
    data = bytearray(encode_wafer(tiny))
    offset, _, _ = next(r for r in split_records(bytes(data)) if r[1] == "PTR")
    data[offset + 4 + 12] = 250  # TEST_TXT length byte far beyond the record
    error = expect_error(write_bytes(tmp_path, "bad_ptr.stdf", bytes(data)), "corrupt record: PTR TEST_TXT")
    assert error.offset == offset


def test_corrupt_mpr_results_run_past_the_record(tmp_path):
    f = Stdf().mir().wir().pir()
    f.add("MPR", f.pack("IBBBBHH", 120, 1, 0, 0, 0, 0, 5), f.pack("2f", 0.5, 0.6))  # says 5 results, has 2
    data = f.prr(0, 0).wrr().bytes()
    error = expect_error(write_bytes(tmp_path, "bad_mpr.stdf", data), "corrupt MPR: RTN_STAT and RTN_RSLT")
    assert error.offset == next(off for off, name, _ in split_records(data) if name == "MPR")


def test_corrupt_short_prr_and_orphan_ptr(tiny, tmp_path):
    records = split_records(encode_wafer(tiny))
    i = next(i for i, r in enumerate(records) if r[1] == "PRR")
    short = struct.pack("<HBB", 5, 5, 20) + records[i][2][4:9]
    data = b"".join(r[2] for r in records[:i]) + short + b"".join(r[2] for r in records[i + 1 :])
    assert expect_error(write_bytes(tmp_path, "short.stdf", data), "corrupt PRR").offset == records[i][0]
    j = next(i for i, r in enumerate(records) if r[1] == "PIR")
    data = b"".join(r[2] for k, r in enumerate(records) if k != j)
    error = expect_error(write_bytes(tmp_path, "orphan.stdf", data), "no open part")
    ptr_offset = next(off for off, name, _ in split_records(data) if name == "PTR")
    assert error.offset == ptr_offset


def test_file_without_prrs(tiny, tmp_path):
    records = split_records(encode_wafer(tiny))
    data = b"".join(raw for _, name, raw in records if name not in ("PIR", "PTR", "MPR", "PRR"))
    expect_error(write_bytes(tmp_path, "empty_wafer.stdf", data), "no PRR records")


def test_pystdf_oracle_is_independent_of_our_codec():
    # A guard against a vacuous oracle: pystdf really decodes big-endian bytes built by hand here.
    body = struct.pack(">IBBBBf", 1000, 1, 0, 0, 0, 0.5) + bytes([3]) + b"vdd"
    data = struct.pack(">HBB", 2, 0, 10) + bytes([1, 4]) + struct.pack(">HBB", len(body), 15, 10) + body
    records = []

    class Sink:
        def after_send(self, source, item):
            records.append(dict(zip(item[0].fieldNames, item[1], strict=True)))

    parser = Parser(inp=io.BytesIO(data))
    parser.addSink(Sink())
    parser.parse()
    assert records[1]["TEST_NUM"] == 1000 and records[1]["RESULT"] == 0.5 and records[1]["OPT_FLAG"] is None
