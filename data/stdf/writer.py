"""STDF V4 writer: one generated wafer -> one binary STDF file, as a multi-site wafer-sort tester writes it.

Record stream of a file:

    FAR MIR SDR PMR... WCR WIR
      per touchdown of the probe card (up to `sites` dies at once):
        PIR (each site)   PTR / MPR ... (per test, interleaved by site)   PRR (each site)
      retests, if any: more touchdowns, their PRRs flagged as superseding the earlier test
    WRR PCR HBR... SBR... MRR

What real testers do and this writer copies:
- The program is the product's (data/products.py): MIR PART_TYP is the product, JOB_NAM
  `<product>_SORT1`, JOB_REV the program revision; every test's TEST_TXT is its name.
- A single-result test is a PTR; a test that measures several pins at once is an MPR with one
  result per pin (RTN_RSLT), the pins' indexes in RTN_INDX (defined by a PMR each) and a 4-bit
  state per pin (RTN_STAT: 0 in limits, 5 failed low, 6 failed high).
- Limits, units and scaling ride on the first PTR / MPR of each test only; later records of the test
  set OPT_FLAG bits saying "use the first record's limits and scale" and drop what they can.
- Results are stored in SI base units with a scale exponent (RES_SCAL): 85 uA is RESULT=8.5e-5,
  UNITS="A", RES_SCAL=6; a reader shows RESULT * 10**RES_SCAL.
- Stop on first fail: a die's failing test has TEST_FLG fail and the PARM_FLG bit saying which limit
  it broke; tests after it have no record at all; the PRR has the PART_FLG fail bit (exactly when
  its hard bin is not one of the product's good bins) and the bins.
- Good bins are the product's: HBR HBIN_PF / SBR SBIN_PF 'P' for them, 'F' for every other bin.
- WCR gives the wafer and die size in mm and the centre die (0, 0); WIR the wafer's start time.
- Labels never go in the file: wafer sort does not know final-test outcomes (see data/writers.py).

Built on the standard library's `struct` (see docs/stdf.md for why no STDF package writes these).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable

import numpy as np
import pandas as pd

from data.stdf import records as r
from data.synthetic import HEAD, WaferData
from data.test_program import ParametricTest, program_features

# Program units -> (STDF UNITS, RES_SCAL): the file stores RESULT in the base unit. Units not listed
# (%, LSB, ppm/C) are stored as they are, RES_SCAL 0.
UNIT_SCALING: dict[str, tuple[str, int]] = {
    "V": ("V", 0),
    "mV": ("V", 3),
    "mA": ("A", 3),
    "uA": ("A", 6),
    "nA": ("A", 9),
    "MHz": ("Hz", -6),
    "kHz": ("Hz", -3),
    "mW": ("W", 3),
    "ns": ("s", 9),
    "ps": ("s", 12),
    "mV/C": ("V/C", 3),
    "ppm/C": ("ppm/C", 0),
}

# How much a PTR / MPR after the first of its test carries (`later_ptrs`):
#   "opt_flag": TEST_TXT, ALARM_ID and an OPT_FLAG saying limits and scale are the first record's;
#               an MPR also its RTN_INDX (and the fixed fields before it, flagged invalid) (default)
#   "result":   nothing after RESULT / RTN_RSLT (every optional trailing field left out)
#   "full":     every field, limits repeated (what some older testers do)
LATER_PTR_MODES = ("opt_flag", "result", "full")

TESTER = ("sim-tester-01", "WAFERFLOW-SIM", "3.2.1")  # NODE_NAM, TSTR_TYP, EXEC_VER

# MPR OPT_FLAG bit 1: START_IN and INCR_IN are invalid (no input sweep; the PTR's reserved bit).
MPR_OPT_NO_INPUT = 0x02
# MPR RTN_STAT states (the FTR's codes): in limits, failed low, failed high.
RTN_STAT_PASS, RTN_STAT_FAIL_LOW, RTN_STAT_FAIL_HIGH = 0, 5, 6


def cn(text: str) -> bytes:
    """STDF Cn: a length byte and up to 255 ASCII characters."""
    raw = text.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"STDF Cn field longer than 255 characters: {text[:40]}...")
    return bytes([len(raw)]) + raw


class _Records:
    """Collects encoded records in one byte order."""

    def __init__(self, endian: str):
        self.endian = endian
        self.chunks: list[bytes] = []
        self._header = struct.Struct(endian + "HBB")

    def add(self, name: str, body: bytes) -> None:
        if len(body) > 0xFFFF:
            raise ValueError(f"{name} record of {len(body)} bytes exceeds the STDF limit of 65535")
        typ, sub = r.RECORD_CODES[name]
        self.chunks.append(self._header.pack(len(body), typ, sub) + body)

    def pack(self, fmt: str, *values) -> bytes:
        return struct.pack(self.endian + fmt, *values)


def _scaling(test: ParametricTest) -> tuple[str, int]:
    return UNIT_SCALING.get(test.units, (test.units, 0))


def _limits(test: ParametricTest) -> tuple[int, int, float, float]:
    """(OPT_FLAG, scale, LO_LIMIT, HI_LIMIT) of a test's first record: limits in the stored units,
    a missing one flagged (OPT_FLAG bit 6 / 7) and written as 0."""
    _, scale = _scaling(test)
    opt = r.OPT_RESERVED | r.OPT_NO_LO_SPEC | r.OPT_NO_HI_SPEC
    lo = hi = 0.0
    if test.lo_limit is None:
        opt |= r.OPT_NO_LO_LIMIT
    else:
        lo = test.lo_limit * 10.0**-scale
    if test.hi_limit is None:
        opt |= r.OPT_NO_HI_LIMIT
    else:
        hi = test.hi_limit * 10.0**-scale
    return opt, scale, lo, hi


# OPT_FLAG of a later record in "opt_flag" mode: scale and limits are the first record's.
_LATER_OPT = (
    r.OPT_RESERVED
    | r.OPT_RES_SCAL_INVALID
    | r.OPT_LO_LIMIT_INVALID
    | r.OPT_HI_LIMIT_INVALID
    | r.OPT_NO_LO_SPEC
    | r.OPT_NO_HI_SPEC
)


def _first_ptr_tail(out: _Records, test: ParametricTest) -> bytes:
    """Everything after RESULT in the first PTR of a test: name, limits, units, scale."""
    units, _ = _scaling(test)
    opt, scale, lo, hi = _limits(test)
    return (
        cn(test.name)  # TEST_TXT
        + cn("")  # ALARM_ID
        + out.pack("Bbbbff", opt, scale, scale, scale, lo, hi)  # OPT_FLAG, RES/LLM/HLM_SCAL, LO/HI_LIMIT
        + cn(units)  # UNITS
        + cn("%9.4f")  # C_RESFMT
        + cn("%9.4f")  # C_LLMFMT
        + cn("%9.4f")  # C_HLMFMT
        + out.pack("ff", 0.0, 0.0)  # LO_SPEC, HI_SPEC (none: OPT_FLAG bits 2, 3)
    )


def _later_ptr_tail(out: _Records, test: ParametricTest, mode: str) -> bytes:
    if mode == "result":
        return b""
    if mode == "full":
        return _first_ptr_tail(out, test)
    return cn(test.name) + cn("") + bytes([_LATER_OPT])


def _first_mpr_tail(out: _Records, test: ParametricTest) -> bytes:
    """Everything after RTN_RSLT in the first MPR of a test: name, limits, pins, units, scale."""
    units, _ = _scaling(test)
    opt, scale, lo, hi = _limits(test)
    return (
        cn(test.name)  # TEST_TXT
        + cn("")  # ALARM_ID
        # OPT_FLAG, RES/LLM/HLM_SCAL, LO/HI_LIMIT, START_IN, INCR_IN (no input sweep: OPT_FLAG bit 1)
        + out.pack("Bbbbffff", opt | MPR_OPT_NO_INPUT, scale, scale, scale, lo, hi, 0.0, 0.0)
        + out.pack(f"{len(test.pins)}H", *test.pins)  # RTN_INDX: the pins, one per result
        + cn(units)  # UNITS
        + cn("")  # UNITS_IN
        + cn("%9.4f")  # C_RESFMT
        + cn("%9.4f")  # C_LLMFMT
        + cn("%9.4f")  # C_HLMFMT
        + out.pack("ff", 0.0, 0.0)  # LO_SPEC, HI_SPEC (none: OPT_FLAG bits 2, 3)
    )


def _later_mpr_tail(out: _Records, test: ParametricTest, mode: str) -> bytes:
    if mode == "result":
        return b""
    if mode == "full":
        return _first_mpr_tail(out, test)
    # Every MPR names its pins: RTN_INDX follows the scale, limit and input fields, which are
    # written as 0 and flagged "use the first record's" (scale, limits) or invalid (input).
    return (
        cn(test.name)
        + cn("")
        + out.pack("Bbbbffff", _LATER_OPT | MPR_OPT_NO_INPUT, 0, 0, 0, 0.0, 0.0, 0.0, 0.0)
        + out.pack(f"{len(test.pins)}H", *test.pins)
    )


def _pmr_records(out: _Records, program: Iterable[ParametricTest]) -> None:
    """One PMR per pin an MPR of the program measures, before any MPR uses its index.

    The synthetic tester numbers pins logically, one index per pin for every site, so RTN_INDX is
    the same pin on every site; HEAD_NUM and SITE_NUM are left out (the specification's default)."""
    pins = sorted({pin for test in program for pin in test.pins})
    for pin in pins:
        out.add("PMR", out.pack("HH", pin, 0) + cn(f"CH{pin}") + cn(f"PAD{pin}") + cn(f"IO{pin}"))


def _touchdowns(dies: pd.DataFrame, touchdown: tuple[int, int]) -> list[np.ndarray]:
    """Row positions of `dies` grouped by probe-card touchdown, in stepping order, sites ascending.

    The card covers a `touchdown` (x, y) block of dies (`Product.site_map`); a site that shows up
    twice in a block (hand-made data) gets a touchdown of its own."""
    width, height = touchdown
    x, y = dies["x"].to_numpy(), dies["y"].to_numpy()
    sites = dies["site"].to_numpy()
    bx, by = np.floor_divide(x, width), np.floor_divide(y, height)
    order = np.lexsort((sites, bx, -by))  # rows from the top, left to right
    groups: list[np.ndarray] = []
    current: list[int] = []
    seen: set[int] = set()
    key = None
    for i in order:
        k = (bx[i], by[i])
        site = int(sites[i])
        if k != key or site in seen:
            if current:
                groups.append(np.asarray(current))
            current, seen, key = [], set(), k
        current.append(int(i))
        seen.add(site)
    if current:
        groups.append(np.asarray(current))
    return groups


def _rtn_stat(below: np.ndarray, above: np.ndarray) -> list[bytes]:
    """MPR RTN_STAT of every die: [dies, pins] flags -> 4 bits per pin, the first in the low nibble."""
    states = np.where(below, RTN_STAT_FAIL_LOW, np.where(above, RTN_STAT_FAIL_HIGH, RTN_STAT_PASS)).astype(np.uint8)
    if states.shape[1] % 2:
        states = np.pad(states, ((0, 0), (0, 1)))
    packed = states[:, 0::2] | (states[:, 1::2] << 4)
    return [row.tobytes() for row in packed]


def _file_head(out: _Records, wafer: WaferData, cpu_type: int) -> None:
    """FAR MIR SDR PMR... WCR WIR: who tested what, on which wafer geometry."""
    start = wafer.start_time
    geometry = wafer.geometry
    out.add("FAR", bytes([cpu_type, r.STDF_VERSION]))
    # MIR: SETUP_T, START_T, STAT_NUM, MODE_COD (production), RTST_COD, PROT_COD, BURN_TIM, CMOD_COD,
    # then the strings LOT_ID .. TST_TEMP below; the optional strings after TST_TEMP are left out.
    revision = wafer.revision
    mir_strings = {
        "LOT_ID": wafer.lot_id,
        "PART_TYP": revision["PART_TYP"],
        "NODE_NAM": TESTER[0],
        "TSTR_TYP": TESTER[1],
        "JOB_NAM": revision["JOB_NAM"],
        "JOB_REV": revision["JOB_REV"],
        "SBLOT_ID": "",
        "OPER_NAM": "sim",
        "EXEC_TYP": "waferflow",
        "EXEC_VER": TESTER[2],
        "TEST_COD": "WS1",
        "TST_TEMP": "25",
    }
    out.add(
        "MIR",
        out.pack("IIBcccHc", start - 600, start, 1, b"P", b" ", b" ", 0xFFFF, b" ")
        + b"".join(cn(v) for v in mir_strings.values()),
    )
    out.add("SDR", bytes([HEAD, 1, wafer.sites, *range(wafer.sites)]) + cn("sim-prober") + cn("PROBER-9"))
    _pmr_records(out, wafer.test_program)
    out.add(
        "WCR",
        out.pack(
            "fffBchhcc",
            geometry.diameter_mm,  # WAFR_SIZ
            geometry.die_height_mm,  # DIE_HT
            geometry.die_width_mm,  # DIE_WID
            r.WF_UNITS_MM,  # WF_UNITS
            geometry.notch.encode("ascii"),  # WF_FLAT
            0,  # CENTER_X, CENTER_Y: die (0, 0) is the centre die
            0,
            b"R",  # POS_X, POS_Y: x grows right, y up
            b"U",
        ),
    )
    out.add("WIR", out.pack("BBI", HEAD, 255, start) + cn(wafer.wafer_id))


def _file_tail(out: _Records, wafer: WaferData, final: pd.DataFrame, n_parts: int, n_retests: int, end: int) -> None:
    """WRR PCR HBR... SBR... MRR: counts and bin summaries of the dies' final (last) tests."""
    spec = wafer.product_spec
    good_hard, good_soft = set(spec.good_hard_bins), set(spec.good_soft_bins)
    n_good = int(final["hard_bin"].isin(good_hard).sum())
    out.add(
        "WRR", out.pack("BBIIIIII", HEAD, 255, end, n_parts, n_retests, 0, n_good, r.COUNT_MISSING) + cn(wafer.wafer_id)
    )
    out.add("PCR", out.pack("BBIIIII", r.ALL_HEADS, 0, n_parts, n_retests, 0, n_good, r.COUNT_MISSING))
    # A maps-only wafer has no tests of its own; its soft bins still name the product's.
    hard_names, soft_names = spec.bin_names(wafer.test_program or None)
    # Bin summaries count each die once, by its final (last) test; 'P' exactly for the good bins.
    for name, column, names, good in (
        ("HBR", "hard_bin", hard_names, good_hard),
        ("SBR", "soft_bin", soft_names, good_soft),
    ):
        for number, count in sorted(final[column].value_counts().items()):
            number = int(number)
            out.add(
                name,
                out.pack("BBHI", r.ALL_HEADS, 0, number, int(count))
                + (b"P" if number in good else b"F")
                + cn(names.get(number, f"BIN_{number}")),
            )
    out.add("MRR", out.pack("I", end + 60) + b" ")  # FINISH_T, DISP_COD; descriptions left out


def encode_bin_map(wafer: WaferData, cpu_type: int = 2) -> bytes:
    """The STDF V4 bytes of a wafer with bins only (the maps-only generator): the records a bin map
    needs, FAR MIR SDR WCR WIR, a PIR / PRR pair per die (X/Y, bins, PART_FLG), WRR PCR HBR SBR MRR.

    No test records, so the PIR / PRR pairs are fixed-size and are packed as one numpy record array
    rather than record by record: this is what makes the maps-only mode fast."""
    if cpu_type not in r.CPU_TYPE_ENDIAN:
        raise ValueError(f"cpu_type must be 1 (big-endian) or 2 (little-endian), got {cpu_type}")
    out = _Records(r.CPU_TYPE_ENDIAN[cpu_type])
    _file_head(out, wafer, cpu_type)
    dies = wafer.dies
    e = out.endian
    # PIR: REC_LEN, REC_TYP, REC_SUB, HEAD_NUM, SITE_NUM; PRR the same header, then PART_FLG, NUM_TEST,
    # HARD_BIN, SOFT_BIN, X_COORD, Y_COORD, TEST_T (PART_ID and after left out: dies named by X/Y).
    pair = np.dtype(
        [
            ("pir_len", e + "u2"), ("pir_typ", "u1"), ("pir_sub", "u1"), ("pir_head", "u1"), ("pir_site", "u1"),
            ("prr_len", e + "u2"), ("prr_typ", "u1"), ("prr_sub", "u1"), ("head", "u1"), ("site", "u1"),
            ("part_flg", "u1"), ("num_test", e + "u2"), ("hard_bin", e + "u2"), ("soft_bin", e + "u2"),
            ("x", e + "i2"), ("y", e + "i2"), ("test_t", e + "u4"),
        ]
    )  # fmt: skip
    records = np.zeros(len(dies), dtype=pair)
    site = dies["site"].to_numpy()
    records["pir_len"], records["prr_len"] = 2, 17
    records["pir_typ"], records["pir_sub"] = r.RECORD_CODES["PIR"]
    records["prr_typ"], records["prr_sub"] = r.RECORD_CODES["PRR"]
    records["pir_head"] = records["head"] = HEAD
    records["pir_site"] = records["site"] = site
    hard = dies["hard_bin"].to_numpy()
    records["part_flg"] = np.where(np.isin(hard, wafer.product_spec.good_hard_bins), 0, r.PART_FLG_FAIL)
    records["hard_bin"], records["soft_bin"] = hard, dies["soft_bin"].to_numpy()
    records["x"], records["y"] = dies["x"].to_numpy(), dies["y"].to_numpy()
    records["test_t"] = 40
    out.chunks.append(records.tobytes())
    end = wafer.start_time + 4 * len(dies)
    _file_tail(out, wafer, dies, len(dies), 0, end)
    return b"".join(out.chunks)


def encode_wafer(
    wafer: WaferData,
    cpu_type: int = 2,
    later_ptrs: str = "opt_flag",
    retests: pd.DataFrame | None = None,
    flag_supersede: bool = True,
    extra_records: Iterable[tuple[int, int, bytes]] = (),
) -> bytes:
    """The STDF V4 bytes of one wafer.

    Args:
      wafer: the wafer; `wafer.dies` in the layout of data/synthetic.py (NaN = not measured), one
        column per feature of `wafer.test_program`; bins, probe card and revision from the product.
      cpu_type: 2 little-endian (x86), 1 big-endian (Sun/Motorola).
      later_ptrs: what PTRs / MPRs after the first of their test carry, one of LATER_PTR_MODES.
      retests: dies probed again after the wafer (same columns as `wafer.dies`), written as extra
        touchdowns after the first pass; their results supersede the first test of the same x/y.
      flag_supersede: set PART_FLG "supersedes same X/Y" on retests (False: a tester that does not).
      extra_records: (REC_TYP, REC_SUB, body) written after WIR, as raw records a reader may not know.
    """
    if cpu_type not in r.CPU_TYPE_ENDIAN:
        raise ValueError(f"cpu_type must be 1 (big-endian) or 2 (little-endian), got {cpu_type}")
    if later_ptrs not in LATER_PTR_MODES:
        raise ValueError(f"later_ptrs must be one of {LATER_PTR_MODES}, got {later_ptrs!r}")
    out = _Records(r.CPU_TYPE_ENDIAN[cpu_type])
    program = wafer.test_program
    spec = wafer.product_spec
    features = list(program_features(program))
    missing = [f for f in features if f not in wafer.dies.columns]
    if missing:
        raise ValueError(f"wafer {wafer.wafer_id} has no columns for tests {missing}")
    good_hard = set(spec.good_hard_bins)
    start = wafer.start_time
    _file_head(out, wafer, cpu_type)
    for rec_typ, rec_sub, body in extra_records:
        out.chunks.append(struct.pack(out.endian + "HBB", len(body), rec_typ, rec_sub) + body)

    # Per test: is it an MPR, its columns, and the tails of its first and later records.
    is_mpr = [test.is_mpr for test in program]
    first_tails = [_first_mpr_tail(out, t) if t.is_mpr else _first_ptr_tail(out, t) for t in program]
    later_tails = [
        _later_mpr_tail(out, t, later_ptrs) if t.is_mpr else _later_ptr_tail(out, t, later_ptrs) for t in program
    ]
    spans = np.cumsum([0] + [len(t.features) for t in program])
    header_ptr = struct.Struct(out.endian + "HBBIBBBBf")
    # MPR fixed part: REC_LEN .. RSLT_CNT, RTN_STAT (one byte per two pins), RTN_RSLT (R4 per pin).
    header_mpr = {
        j: struct.Struct(out.endian + f"HBBIBBBBHH{(len(t.pins) + 1) // 2}s{len(t.pins)}f")
        for j, t in enumerate(program)
        if t.is_mpr
    }
    header_pir = struct.Struct(out.endian + "HBBBB")
    header_prr = struct.Struct(out.endian + "HBBBBBHHHhhI")
    pir_typ, pir_sub = r.RECORD_CODES["PIR"]
    prr_typ, prr_sub = r.RECORD_CODES["PRR"]
    ptr_typ, ptr_sub = r.RECORD_CODES["PTR"]
    mpr_typ, mpr_sub = r.RECORD_CODES["MPR"]
    written = [False] * len(program)

    def write_pass(dies: pd.DataFrame, part_flg_extra: int) -> None:
        values = dies[features].to_numpy(np.float32)
        scales = np.array([10.0 ** -_scaling(t)[1] for t in program for _ in t.features])
        stored = (values.astype(np.float64) * scales).astype(np.float32)  # base units, as R4
        lo = np.array([-math.inf if t.lo_limit is None else t.lo_limit for t in program for _ in t.features])
        hi = np.array([math.inf if t.hi_limit is None else t.hi_limit for t in program for _ in t.features])
        below, above = values < lo, values > hi
        # Per test, from its columns (an MPR: any of its pins): measured, below low, above high.
        firsts = spans[:-1]
        measured = np.logical_or.reduceat(~np.isnan(values), firsts, axis=1)
        any_below = np.logical_or.reduceat(below, firsts, axis=1)
        any_above = np.logical_or.reduceat(above, firsts, axis=1)
        test_flg = np.where(any_below | any_above, r.TEST_FLG_FAIL, 0)
        parm_flg = (
            r.PARM_FLG_LO_EQUAL_PASSES
            | r.PARM_FLG_HI_EQUAL_PASSES
            | np.where(any_below, r.PARM_FLG_BELOW_LOW, 0)
            | np.where(any_above, r.PARM_FLG_ABOVE_HIGH, 0)
        )
        # Plain Python lists: the loop below packs one record per element, and numpy scalars are slow there.
        measured_l, test_flg_l, parm_flg_l = measured.tolist(), test_flg.tolist(), parm_flg.tolist()
        # PTR: the one stored value; MPR: (RTN_STAT bytes, results) per die.
        results: list[list] = []
        for j, test in enumerate(program):
            a, b = spans[j], spans[j + 1]
            if test.is_mpr:
                results.append(list(zip(_rtn_stat(below[:, a:b], above[:, a:b]), stored[:, a:b].tolist(), strict=True)))
            else:
                results.append(stored[:, a].tolist())
        site = dies["site"].astype(int).tolist()
        x, y = dies["x"].astype(int).tolist(), dies["y"].astype(int).tolist()
        hard, soft = dies["hard_bin"].astype(int).tolist(), dies["soft_bin"].astype(int).tolist()
        part_ids = dies["part_id"].astype(str).tolist() if "part_id" in dies else [""] * len(dies)
        n_tests_l = measured.sum(axis=1).tolist()
        chunks = out.chunks
        for group in _touchdowns(dies, spec.touchdown):
            for i in group:
                chunks.append(header_pir.pack(2, pir_typ, pir_sub, HEAD, site[i]))
            for j, test in enumerate(program):
                result_j = results[j]
                for i in group:
                    if not measured_l[i][j]:
                        continue
                    tail = later_tails[j] if written[j] else first_tails[j]
                    written[j] = True
                    if is_mpr[j]:
                        stat, pins = result_j[i]
                        header = header_mpr[j]
                        chunks.append(
                            header.pack(
                                header.size - 4 + len(tail),
                                mpr_typ,
                                mpr_sub,
                                test.number,
                                HEAD,
                                site[i],
                                test_flg_l[i][j],
                                parm_flg_l[i][j],
                                len(pins),  # RTN_ICNT
                                len(pins),  # RSLT_CNT
                                stat,
                                *pins,
                            )
                            + tail
                        )
                        continue
                    chunks.append(
                        header_ptr.pack(
                            12 + len(tail),
                            ptr_typ,
                            ptr_sub,
                            test.number,
                            HEAD,
                            site[i],
                            test_flg_l[i][j],
                            parm_flg_l[i][j],
                            result_j[i],
                        )
                        + tail
                    )
            for i in group:
                n_tests = n_tests_l[i]
                flags = part_flg_extra | (r.PART_FLG_FAIL if hard[i] not in good_hard else 0)
                tail = cn(part_ids[i])  # PART_ID; PART_TXT and PART_FIX left out
                chunks.append(
                    header_prr.pack(
                        17 + len(tail),
                        prr_typ,
                        prr_sub,
                        HEAD,
                        site[i],
                        flags,
                        n_tests,
                        hard[i],
                        soft[i],
                        x[i],
                        y[i],
                        40 + 3 * n_tests,
                    )
                    + tail
                )

    write_pass(wafer.dies, 0)
    final = wafer.dies
    n_retests = 0
    if retests is not None and len(retests):
        write_pass(retests, r.PART_FLG_SUPERSEDES_XY if flag_supersede else 0)
        n_retests = len(retests)
        final = pd.concat([wafer.dies, retests], ignore_index=True).drop_duplicates(["x", "y"], keep="last")

    end = start + 4 * len(wafer.dies) + 4 * n_retests
    _file_tail(out, wafer, final, len(wafer.dies) + n_retests, n_retests, end)
    return b"".join(out.chunks)


def write_stdf_wafer(wafer: WaferData, directory: str, **options) -> str:
    """Write `<directory>/<wafer_id>.stdf` (little-endian unless `cpu_type=1`); return its path.

    `options` are those of `encode_wafer` (or `encode_bin_map`); data/writers.py calls this with none."""
    path = os.path.join(directory, f"{wafer.wafer_id}.stdf")
    # A wafer with no test program (the maps-only generator) is a bin map.
    data = encode_wafer(wafer, **options) if wafer.test_program else encode_bin_map(wafer, **options)
    with open(path, "wb") as f:
        f.write(data)
    return path
