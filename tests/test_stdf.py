"""STDF V4 writer and reader: every file checked against pystdf, every variation and bad input on small files.

pystdf (GPL-2) is the independent reader here, a test-only oracle: the dies it sees (decoded by the
helpers below from its record fields, not by data/stdf) must match what was generated and what
data/stdf/reader.py reads.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import struct

import numpy as np
import pandas as pd
import pytest
from pystdf.IO import Parser

from data.geometry import WaferGeometry
from data.readers import READERS, InputFileError, read_parquet_wafer
from data.stdf import records as rec
from data.stdf.reader import read_stdf, supersede
from data.stdf.writer import LATER_PTR_MODES, UNIT_SCALING, encode_wafer, write_stdf_wafer
from data.synthetic import GeneratorConfig, generate
from data.test_program import PASS_BIN, TEST_PROGRAM, TESTS_BY_NUMBER, ParametricTest
from data.writers import WRITERS, write_dataset, write_parquet_wafer

SMALL_GEOMETRY = WaferGeometry(diameter_mm=100.0)


@pytest.fixture(scope="module")
def wafer():
    """A full 300 mm wafer (623 dies) with failures in every test family."""
    return next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=1)))


@pytest.fixture(scope="module")
def tiny():
    """A 100 mm wafer: 51 dies, three failing."""
    return next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=1, geometry=SMALL_GEOMETRY)))


# --- helpers -------------------------------------------------------------------------------------------


def pystdf_records(path: str) -> list[tuple[str, dict]]:
    """Every record of a file as pystdf decodes it: (name, {field: value}); left-out fields are None."""
    records: list[tuple[str, dict]] = []

    class Sink:
        def after_send(self, source, data):
            record_type, fields = data
            records.append((type(record_type).__name__.upper(), dict(zip(record_type.fieldNames, fields, strict=True))))

    with open(path, "rb") as f:
        parser = Parser(inp=f)
        parser.addSink(Sink())
        parser.parse()
    return records


def oracle_dies(records: list[tuple[str, dict]]) -> pd.DataFrame:
    """Dies from pystdf's records, last test of each x/y winning; values RESULT * 10**RES_SCAL."""
    scale: dict[int, int] = {}
    open_parts: dict[tuple, dict] = {}
    dies: dict[tuple, dict] = {}
    for name, f in records:
        if name == "PIR":
            open_parts[(f["HEAD_NUM"], f["SITE_NUM"])] = {}
        elif name == "PTR":
            opt = f["OPT_FLAG"]
            own = f["RES_SCAL"] if opt is not None and not opt & 1 and f["RES_SCAL"] is not None else None
            scale.setdefault(f["TEST_NUM"], 0 if own is None else own)
            exponent = scale[f["TEST_NUM"]] if own is None else own
            open_parts[(f["HEAD_NUM"], f["SITE_NUM"])][f["TEST_NUM"]] = np.float32(f["RESULT"] * 10**exponent)
        elif name == "PRR":
            tests = open_parts.pop((f["HEAD_NUM"], f["SITE_NUM"]))
            dies[(f["X_COORD"], f["Y_COORD"])] = {
                "x": f["X_COORD"],
                "y": f["Y_COORD"],
                "site": f["SITE_NUM"],
                "hard_bin": f["HARD_BIN"],
                "soft_bin": f["SOFT_BIN"],
                "part_id": f["PART_ID"],
                **{TESTS_BY_NUMBER[n].feature_name: v for n, v in tests.items()},
            }
    return pd.DataFrame(list(dies.values()))


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


def write_bytes(tmp_path, name: str, data: bytes) -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def read_one(path: str):
    (wafer_read,) = list(read_stdf(path))
    return wafer_read


TEST_COLUMNS = [t.feature_name for t in TEST_PROGRAM]


# --- writer, checked by pystdf ---------------------------------------------------------------------------


@pytest.mark.parametrize("cpu_type", [1, 2])
def test_full_wafer_parses_with_pystdf_same_dies_bins_and_results(wafer, tmp_path, cpu_type):
    path = write_stdf_wafer(wafer, str(tmp_path), cpu_type=cpu_type)
    records = pystdf_records(path)
    assert records[0] == ("FAR", {"CPU_TYPE": cpu_type, "STDF_VER": 4})
    oracle = by_xy(oracle_dies(records))
    expected = by_xy(wafer.dies)
    assert len(oracle) == len(expected) == sum(1 for name, _ in records if name == "PRR")
    for column in ("x", "y", "site", "hard_bin", "soft_bin", "part_id"):
        assert oracle[column].tolist() == expected[column].tolist(), column
    np.testing.assert_allclose(
        oracle[TEST_COLUMNS].to_numpy(np.float64), expected[TEST_COLUMNS].to_numpy(np.float64), rtol=3e-7
    )  # float32 in the file's base units, back to program units
    ours = by_xy(read_one(path).dies)
    np.testing.assert_array_equal(ours[TEST_COLUMNS].to_numpy(), oracle[TEST_COLUMNS].to_numpy(np.float32))


@pytest.mark.parametrize("cpu_type,later_ptrs", [(c, m) for c in (1, 2) for m in LATER_PTR_MODES])
def test_every_variant_parses_with_pystdf_and_our_reader_alike(tiny, tmp_path, cpu_type, later_ptrs):
    path = write_stdf_wafer(tiny, str(tmp_path), cpu_type=cpu_type, later_ptrs=later_ptrs)
    oracle = by_xy(oracle_dies(pystdf_records(path)))
    ours = by_xy(read_one(path).dies)
    assert len(ours) == len(oracle) == len(tiny.dies)
    for column in ("x", "y", "site", "hard_bin", "soft_bin", "part_id"):
        assert ours[column].tolist() == oracle[column].tolist(), column
    np.testing.assert_array_equal(ours[TEST_COLUMNS].to_numpy(), oracle[TEST_COLUMNS].to_numpy(np.float32))


def test_record_stream_summaries_and_wafer_geometry(wafer, tmp_path):
    records = pystdf_records(write_stdf_wafer(wafer, str(tmp_path)))
    names = [name for name, _ in records]
    assert names[:5] == ["FAR", "MIR", "SDR", "WCR", "WIR"] and names[-1] == "MRR"
    first = {name: fields for name, fields in reversed(records)}
    assert first["MIR"]["LOT_ID"] == wafer.lot_id and first["MIR"]["PART_TYP"] == wafer.product
    assert first["WIR"]["WAFER_ID"] == first["WRR"]["WAFER_ID"] == wafer.wafer_id
    wcr = first["WCR"]
    geometry = wafer.geometry
    assert (wcr["WAFR_SIZ"], wcr["DIE_HT"], wcr["DIE_WID"], wcr["WF_UNITS"]) == (
        geometry.diameter_mm,
        geometry.die_height_mm,
        geometry.die_width_mm,
        rec.WF_UNITS_MM,
    )
    assert (wcr["WF_FLAT"], wcr["CENTER_X"], wcr["CENTER_Y"], wcr["POS_X"], wcr["POS_Y"]) == ("D", 0, 0, "R", "U")
    n_pass = int((wafer.dies.hard_bin == PASS_BIN).sum())
    wrr = first["WRR"]
    assert (wrr["PART_CNT"], wrr["GOOD_CNT"], wrr["RTST_CNT"]) == (len(wafer.dies), n_pass, 0)
    for name, column in (("HBR", "hard_bin"), ("SBR", "soft_bin")):
        prefix = name[0]
        bins = {
            f[f"{prefix}BIN_NUM"]: (f[f"{prefix}BIN_CNT"], f[f"{prefix}BIN_PF"], f[f"{prefix}BIN_NAM"])
            for n, f in records
            if n == name
        }
        assert {b: c for b, (c, _, _) in bins.items()} == wafer.dies[column].value_counts().to_dict()
        assert all((pf == "P") == (b == PASS_BIN) for b, (_, pf, _) in bins.items())
        assert bins[PASS_BIN][2] == "PASS"
    failing_soft = int(wafer.dies.loc[wafer.dies.hard_bin == 3, "soft_bin"].iloc[0])
    soft_names = {f["SBIN_NUM"]: f["SBIN_NAM"] for n, f in records if n == "SBR"}
    assert soft_names[failing_soft].startswith("FAIL_") and soft_names[failing_soft].lower()[5:] in {
        t.name for t in TEST_PROGRAM if t.family == "idd"
    }


@pytest.mark.parametrize("sites", [4, 8])
def test_multi_site_touchdowns_interleave_pir_ptr_prr(wafer, tmp_path, sites):
    if sites != wafer.sites:
        wafer = next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=1, sites=sites)))
    path = write_stdf_wafer(wafer, str(tmp_path))
    records = pystdf_records(path)
    assert len(oracle_dies(records)) == len(read_one(path).dies) == len(wafer.dies)
    touchdown: list[tuple[str, dict]] = []
    touchdowns = []
    for name, fields in records:
        if name in ("PIR", "PTR", "PRR"):
            if name == "PIR" and touchdown and touchdown[-1][0] == "PRR":
                touchdowns.append(touchdown)
                touchdown = []
            touchdown.append((name, fields))
    touchdowns.append(touchdown)
    assert max(sum(n == "PIR" for n, _ in t) for t in touchdowns) == wafer.sites
    program_order = {t.number: i for i, t in enumerate(TEST_PROGRAM)}
    for t in touchdowns:
        kinds = [n for n, _ in t]
        k = kinds.count("PIR")
        assert kinds[:k] == ["PIR"] * k and kinds[-k:] == ["PRR"] * k and kinds.count("PRR") == k
        sites = [f["SITE_NUM"] for _, f in t[:k]]
        assert sites == sorted(sites) == [f["SITE_NUM"] for _, f in t[-k:]]
        # Test by test, and within one test site by site: the sites interleave.
        order = [(program_order[f["TEST_NUM"]], f["SITE_NUM"]) for n, f in t if n == "PTR"]
        assert order == sorted(order)
        if k > 1:
            assert len({s for _, s in order[:k]}) > 1


def test_limits_units_and_scale_only_on_the_first_ptr_of_each_test(wafer, tmp_path):
    records = pystdf_records(write_stdf_wafer(wafer, str(tmp_path)))
    seen: set[int] = set()
    for name, f in records:
        if name != "PTR":
            continue
        test = TESTS_BY_NUMBER[f["TEST_NUM"]]
        units, scale = UNIT_SCALING[test.units]
        if f["TEST_NUM"] not in seen:
            seen.add(f["TEST_NUM"])
            assert not f["OPT_FLAG"] & (rec.OPT_RES_SCAL_INVALID | rec.OPT_LO_LIMIT_INVALID | rec.OPT_HI_LIMIT_INVALID)
            assert (f["UNITS"], f["RES_SCAL"], f["LLM_SCAL"], f["HLM_SCAL"]) == (units, scale, scale, scale)
            assert bool(f["OPT_FLAG"] & rec.OPT_NO_LO_LIMIT) == (test.lo_limit is None)
            assert bool(f["OPT_FLAG"] & rec.OPT_NO_HI_LIMIT) == (test.hi_limit is None)
            limits = ((test.lo_limit, "LO_LIMIT", "LLM_SCAL"), (test.hi_limit, "HI_LIMIT", "HLM_SCAL"))
            for limit, field, exponent in limits:
                if limit is not None:
                    assert f[field] * 10 ** f[exponent] == pytest.approx(limit, rel=1e-6)
        else:
            defaults = rec.OPT_RES_SCAL_INVALID | rec.OPT_LO_LIMIT_INVALID | rec.OPT_HI_LIMIT_INVALID
            assert f["OPT_FLAG"] & defaults == defaults
            assert f["TEST_TXT"] == test.name
            assert f["RES_SCAL"] is None and f["LO_LIMIT"] is None and f["UNITS"] is None  # left out
    assert seen == {t.number for t in TEST_PROGRAM}


def test_fail_flags_and_stop_on_fail(wafer, tmp_path):
    # Generated wafers fail high limits far more often than low ones: add a low-limit failure.
    dies = wafer.dies.copy()
    index, low_test = next((i, t) for i, t in enumerate(TEST_PROGRAM) if t.lo_limit is not None)
    row = dies.index[dies.hard_bin == PASS_BIN][0]
    dies.loc[row, low_test.feature_name] = np.float32(low_test.lo_limit * 0.95)
    dies.loc[row, TEST_COLUMNS[index + 1 :]] = np.nan
    dies.loc[row, ["hard_bin", "soft_bin"]] = [low_test.hard_bin, low_test.hard_bin * 100 + 99]
    wafer = dataclasses.replace(wafer, dies=dies)
    records = pystdf_records(write_stdf_wafer(wafer, str(tmp_path)))
    dies = wafer.dies.set_index(["x", "y"])
    program_index = {t.number: i for i, t in enumerate(TEST_PROGRAM)}
    ptrs: dict[int, list[dict]] = {}
    seen_low = seen_high = 0
    for name, f in records:
        if name == "PIR":
            ptrs[f["SITE_NUM"]] = []
        elif name == "PTR":
            ptrs[f["SITE_NUM"]].append(f)
        elif name == "PRR":
            tests = ptrs.pop(f["SITE_NUM"])
            die = dies.loc[(f["X_COORD"], f["Y_COORD"])]
            failed = die.hard_bin != PASS_BIN
            assert bool(f["PART_FLG"] & rec.PART_FLG_FAIL) == failed
            assert f["NUM_TEST"] == len(tests) == int(die[TEST_COLUMNS].notna().sum())
            for t in tests[:-1] if failed else tests:
                assert t["TEST_FLG"] == 0
                assert t["PARM_FLG"] == rec.PARM_FLG_LO_EQUAL_PASSES | rec.PARM_FLG_HI_EQUAL_PASSES
            if failed:
                last = tests[-1]
                test = TESTS_BY_NUMBER[last["TEST_NUM"]]
                assert last["TEST_FLG"] == rec.TEST_FLG_FAIL
                value = die[test.feature_name]
                high = test.hi_limit is not None and value > test.hi_limit
                assert bool(last["PARM_FLG"] & rec.PARM_FLG_ABOVE_HIGH) == high
                assert bool(last["PARM_FLG"] & rec.PARM_FLG_BELOW_LOW) == (not high)
                seen_high, seen_low = seen_high + high, seen_low + (not high)
                # Stop on fail: nothing after the failing test, and it is the die's soft bin.
                assert program_index[last["TEST_NUM"]] == max(program_index[t["TEST_NUM"]] for t in tests)
                assert die[TEST_COLUMNS[program_index[last["TEST_NUM"]] + 1 :]].isna().all()
    assert seen_high and seen_low


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
    passed = dies[dies.hard_bin == PASS_BIN]
    assert set(zip(labels.wafer_id, labels.x, labels.y, strict=True)) == set(
        zip(passed.wafer_id, passed.x, passed.y, strict=True)
    )
    # The STDF reader gives the columns, dtypes and values of the Parquet path.
    wafer = next(generate(config))
    parquet = read_parquet_wafer(write_parquet_wafer(wafer, str(tmp_path)))
    (from_parquet,) = list(parquet)
    from_stdf = next(w for w in reads if w.wafer_id == wafer.wafer_id)
    assert list(from_stdf.dies.columns) == list(from_parquet.dies.columns)
    assert from_stdf.dies.dtypes.tolist() == from_parquet.dies.dtypes.tolist()
    a, b = by_xy(from_stdf.dies), by_xy(from_parquet.dies)
    pd.testing.assert_frame_equal(a.drop(columns=TEST_COLUMNS), b.drop(columns=TEST_COLUMNS))
    np.testing.assert_allclose(a[TEST_COLUMNS], b[TEST_COLUMNS], rtol=3e-7)
    assert json.load(open(tmp_path / "manifest.json"))["format"] == "stdf"


# --- reader variations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag_supersede", [True, False])
def test_retested_dies_last_test_wins_and_is_counted(tiny, tmp_path, flag_supersede):
    failing = tiny.dies[tiny.dies.hard_bin != PASS_BIN]
    retests = pd.concat([failing, tiny.dies[tiny.dies.hard_bin == PASS_BIN].iloc[:2]]).copy()
    # The retest passes every die with fresh values.
    retests[TEST_COLUMNS] = tiny.dies[TEST_COLUMNS].median().to_numpy(np.float32)
    retests[["hard_bin", "soft_bin"]] = PASS_BIN
    path = write_stdf_wafer(tiny, str(tmp_path), retests=retests, flag_supersede=flag_supersede)
    records = pystdf_records(path)
    flags = [f["PART_FLG"] for n, f in records if n == "PRR"]
    assert len(flags) == len(tiny.dies) + len(retests)
    assert all(bool(f & rec.PART_FLG_SUPERSEDES_XY) == flag_supersede for f in flags[len(tiny.dies) :])
    wafer_read = read_one(path)
    assert wafer_read.superseded == len(retests)
    assert len(wafer_read.dies) == len(tiny.dies)
    assert (wafer_read.dies.hard_bin == PASS_BIN).all()
    retested = wafer_read.dies.merge(retests[["x", "y"]], on=["x", "y"])
    np.testing.assert_allclose(
        retested[TEST_COLUMNS].to_numpy(),
        np.broadcast_to(retests[TEST_COLUMNS].iloc[0].to_numpy(np.float32), (len(retests), len(TEST_COLUMNS))),
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


def test_unused_and_unknown_records_are_skipped_and_counted(tiny, tmp_path):
    extra = [
        (50, 30, bytes([5]) + b"hello"),  # DTR, a datalog text
        (15, 20, b"\x00" * 8),  # FTR (functional test) the reader does not use
        (180, 1, b"\x01\x02\x03"),
    ]  # outside the specification
    path = write_bytes(tmp_path, "w.stdf", encode_wafer(tiny, extra_records=extra))
    wafer_read = read_one(path)
    n_hbr = tiny.dies.hard_bin.nunique()
    n_sbr = tiny.dies.soft_bin.nunique()
    assert wafer_read.skipped_records == {
        "DTR": 1,
        "FTR": 1,
        "REC_180_1": 1,
        "SDR": 1,
        "WCR": 1,
        "PCR": 1,
        "HBR": n_hbr,
        "SBR": n_sbr,
    }
    assert wafer_read.records["PRR"] == len(tiny.dies) and wafer_read.records["PIR"] == len(tiny.dies)
    plain = read_one(write_stdf_wafer(tiny, str(tmp_path)))
    pd.testing.assert_frame_equal(wafer_read.dies, plain.dies)


def test_missing_tests_are_nan_not_zero_and_unknown_tests_get_their_own_column(tiny, tmp_path):
    extra = ParametricTest(
        number=9000,
        name="Leak@ 2V",
        family="idd",
        units="nA",
        nominal=1.0,
        scale=0.1,
        loadings=(0.0,) * 4,
        noise=0.1,
        log_normal=False,
        lo_limit=None,
        hi_limit=50.0,
    )
    renamed = dataclasses.replace(TEST_PROGRAM[0], name="VDDMIN 400 (renamed)")
    program = (renamed, *TEST_PROGRAM[1:], extra)
    dies = tiny.dies.rename(columns={TEST_PROGRAM[0].feature_name: renamed.feature_name})
    dies[extra.feature_name] = np.float32(3.5)
    passing = dies.index[dies.hard_bin == PASS_BIN]
    dies.loc[passing[0], TEST_COLUMNS[7]] = np.nan  # a pass die that skipped one test
    dies.loc[passing[1], extra.feature_name] = np.nan
    wafer = dataclasses.replace(tiny, dies=dies, test_program=program)
    wafer_read = read_one(write_stdf_wafer(wafer, str(tmp_path), cpu_type=1))
    assert list(wafer_read.dies.columns[-1:]) == ["t9000_leak_2v"]
    assert TEST_PROGRAM[0].feature_name in wafer_read.dies.columns  # known number: the program's name
    got = wafer_read.dies.set_index("part_id")
    first, second = dies.part_id[passing[0]], dies.part_id[passing[1]]
    assert np.isnan(got.loc[first, TEST_COLUMNS[7]]) and not np.isnan(got.loc[first, TEST_COLUMNS[8]])
    assert np.isnan(got.loc[second, "t9000_leak_2v"])
    assert got["t9000_leak_2v"].drop(index=second).eq(np.float32(3.5)).all()


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
    data = b"".join(raw for _, name, raw in records if name not in ("PIR", "PTR", "PRR"))
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
