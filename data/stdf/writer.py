"""STDF V4 writer: one generated wafer -> one binary STDF file, as a multi-site wafer-sort tester writes it.

Record stream of a file:

    FAR MIR SDR WCR WIR
      per touchdown of the probe card (up to `sites` dies at once):
        PIR (each site)   PTR ... (per test, interleaved by site)   PRR (each site)
      retests, if any: more touchdowns, their PRRs flagged as superseding the earlier test
    WRR PCR HBR... SBR... MRR

What real testers do and this writer copies:
- Limits, units and scaling ride on the first PTR of each test only; later PTRs of the test set
  OPT_FLAG bits saying "use the first PTR's limits and scale" and drop the trailing fields.
- Results are stored in SI base units with a scale exponent (RES_SCAL): 85 uA is RESULT=8.5e-5,
  UNITS="A", RES_SCAL=6; a reader shows RESULT * 10**RES_SCAL.
- Stop on first fail: a die's failing test has TEST_FLG fail and the PARM_FLG bit saying which limit
  it broke; tests after it have no PTR at all; the PRR has the PART_FLG fail bit and the bins.
- Labels never go in the file: wafer sort does not know final-test outcomes (see data/writers.py).

Built on the standard library's `struct` (see docs/stdf.md for why no STDF package writes these).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

from data.stdf import records as r
from data.synthetic import WaferData
from data.test_program import FAMILY_BINS, PASS_BIN, ParametricTest

# Program units -> (STDF UNITS, RES_SCAL): the file stores RESULT in the base unit.
UNIT_SCALING: dict[str, tuple[str, int]] = {
    "V": ("V", 0),
    "mA": ("A", 3),
    "uA": ("A", 6),
    "nA": ("A", 9),
    "MHz": ("Hz", -6),
    "mW": ("W", 3),
    "mV/C": ("V/C", 3),
    "ppm/C": ("ppm/C", 0),
}

# How much a PTR after the first of its test carries (`later_ptrs`):
#   "opt_flag": TEST_TXT, ALARM_ID and an OPT_FLAG saying limits and scale are the first PTR's (default)
#   "result":   nothing after RESULT (every optional trailing field left out)
#   "full":     every field, limits repeated (what some older testers do)
LATER_PTR_MODES = ("opt_flag", "result", "full")

TESTER = ("sim-tester-01", "WAFERFLOW-SIM", "3.2.1")  # NODE_NAM, TSTR_TYP, EXEC_VER


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


def _first_ptr_tail(out: _Records, test: ParametricTest) -> bytes:
    """Everything after RESULT in the first PTR of a test: name, limits, units, scale."""
    units, scale = _scaling(test)
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
    opt = (
        r.OPT_RESERVED
        | r.OPT_RES_SCAL_INVALID
        | r.OPT_LO_LIMIT_INVALID
        | r.OPT_HI_LIMIT_INVALID
        | r.OPT_NO_LO_SPEC
        | r.OPT_NO_HI_SPEC
    )
    return cn(test.name) + cn("") + bytes([opt])


def _touchdowns(dies: pd.DataFrame, sites: int) -> list[np.ndarray]:
    """Row positions of `dies` grouped by probe-card touchdown, in stepping order, sites ascending.

    The card covers a 2x2 (4 sites) or 4x2 (8 sites) block of dies (data/synthetic.py `_site_map`);
    a site that shows up twice in a block (hand-made data) gets a touchdown of its own."""
    width = 2 if sites <= 4 else 4
    x, y = dies["x"].to_numpy(), dies["y"].to_numpy()
    bx, by = np.floor_divide(x, width), np.floor_divide(y, 2)
    order = np.lexsort((dies["site"].to_numpy(), bx, -by))  # rows from the top, left to right
    groups: list[np.ndarray] = []
    current: list[int] = []
    seen: set[int] = set()
    key = None
    for i in order:
        k = (bx[i], by[i])
        site = int(dies["site"].iat[i])
        if k != key or site in seen:
            if current:
                groups.append(np.asarray(current))
            current, seen, key = [], set(), k
        current.append(int(i))
        seen.add(site)
    if current:
        groups.append(np.asarray(current))
    return groups


def _bin_names(program: Iterable[ParametricTest]) -> tuple[dict[int, str], dict[int, str]]:
    """HBR / SBR names: hard bins by failing family, soft bins by failing test (data/synthetic.py)."""
    hard = {PASS_BIN: "PASS", **{b: f"FAIL_{family.upper()}" for family, b in FAMILY_BINS.items()}}
    soft = {PASS_BIN: "PASS"}
    index: dict[str, int] = {}
    for test in program:
        index[test.family] = index.get(test.family, 0) + 1
        soft[test.hard_bin * 100 + index[test.family]] = f"FAIL_{test.name.upper()}"
    return hard, soft


def _start_time(wafer: WaferData) -> int:
    # Deterministic (same config, same bytes): a fixed epoch, spread by lot and wafer.
    return 1_793_000_000 + zlib.crc32(wafer.lot_id.encode()) % (30 * 86_400) + wafer.wafer_num * 1_800


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
      wafer: the wafer; `wafer.dies` in the layout of data/synthetic.py (NaN = not measured).
      cpu_type: 2 little-endian (x86), 1 big-endian (Sun/Motorola).
      later_ptrs: what PTRs after the first of their test carry, one of LATER_PTR_MODES.
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
    missing = [t.feature_name for t in program if t.feature_name not in wafer.dies.columns]
    if missing:
        raise ValueError(f"wafer {wafer.wafer_id} has no columns for tests {missing}")
    start = _start_time(wafer)
    geometry = wafer.geometry

    out.add("FAR", bytes([cpu_type, r.STDF_VERSION]))
    # MIR: SETUP_T, START_T, STAT_NUM, MODE_COD (production), RTST_COD, PROT_COD, BURN_TIM, CMOD_COD,
    # then the strings LOT_ID .. TST_TEMP below; the optional strings after TST_TEMP are left out.
    mir_strings = {
        "LOT_ID": wafer.lot_id,
        "PART_TYP": wafer.product,
        "NODE_NAM": TESTER[0],
        "TSTR_TYP": TESTER[1],
        "JOB_NAM": f"{wafer.product}_SORT1",
        "JOB_REV": "1.0",
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
    out.add("SDR", bytes([1, 1, wafer.sites, *range(wafer.sites)]) + cn("sim-prober") + cn("PROBER-9"))
    out.add(
        "WCR",
        out.pack(
            "fffBchhcc",
            geometry.diameter_mm,
            geometry.die_height_mm,
            geometry.die_width_mm,
            r.WF_UNITS_MM,
            geometry.notch.encode("ascii"),
            0,
            0,
            b"R",
            b"U",
        ),
    )
    out.add("WIR", out.pack("BBI", 1, 255, start) + cn(wafer.wafer_id))
    for rec_typ, rec_sub, body in extra_records:
        out.chunks.append(struct.pack(out.endian + "HBB", len(body), rec_typ, rec_sub) + body)

    first_tails = [_first_ptr_tail(out, t) for t in program]
    later_tails = [_later_ptr_tail(out, t, later_ptrs) for t in program]
    header_ptr = struct.Struct(out.endian + "HBBIBBBBf")
    header_pir = struct.Struct(out.endian + "HBBBB")
    header_prr = struct.Struct(out.endian + "HBBBBBHHHhhI")
    pir_typ, pir_sub = r.RECORD_CODES["PIR"]
    prr_typ, prr_sub = r.RECORD_CODES["PRR"]
    ptr_typ, ptr_sub = r.RECORD_CODES["PTR"]
    written = [False] * len(program)

    def write_pass(dies: pd.DataFrame, part_flg_extra: int) -> None:
        values = dies[[t.feature_name for t in program]].to_numpy(np.float32)
        measured = ~np.isnan(values)
        scales = np.array([10.0 ** -_scaling(t)[1] for t in program])
        stored = (values.astype(np.float64) * scales).astype(np.float32)  # base units, as R4
        lo = np.array([-math.inf if t.lo_limit is None else t.lo_limit for t in program])
        hi = np.array([math.inf if t.hi_limit is None else t.hi_limit for t in program])
        below, above = values < lo, values > hi
        test_flg = np.where(below | above, r.TEST_FLG_FAIL, 0)
        parm_flg = (
            r.PARM_FLG_LO_EQUAL_PASSES
            | r.PARM_FLG_HI_EQUAL_PASSES
            | np.where(below, r.PARM_FLG_BELOW_LOW, 0)
            | np.where(above, r.PARM_FLG_ABOVE_HIGH, 0)
        )
        # Plain Python lists: the loop below packs one record per element, and numpy scalars are slow there.
        measured_l, stored_l = measured.tolist(), stored.tolist()
        test_flg_l, parm_flg_l = test_flg.tolist(), parm_flg.tolist()
        site = dies["site"].astype(int).tolist()
        x, y = dies["x"].astype(int).tolist(), dies["y"].astype(int).tolist()
        hard, soft = dies["hard_bin"].astype(int).tolist(), dies["soft_bin"].astype(int).tolist()
        part_ids = dies["part_id"].astype(str).tolist() if "part_id" in dies else [""] * len(dies)
        chunks = out.chunks
        for group in _touchdowns(dies, wafer.sites):
            for i in group:
                chunks.append(header_pir.pack(2, pir_typ, pir_sub, 1, site[i]))
            for j, test in enumerate(program):
                for i in group:
                    if not measured_l[i][j]:
                        continue
                    tail = later_tails[j] if written[j] else first_tails[j]
                    written[j] = True
                    chunks.append(
                        header_ptr.pack(
                            12 + len(tail),
                            ptr_typ,
                            ptr_sub,
                            test.number,
                            1,
                            site[i],
                            test_flg_l[i][j],
                            parm_flg_l[i][j],
                            stored_l[i][j],
                        )
                        + tail
                    )
            for i in group:
                n_tests = sum(measured_l[i])
                flags = part_flg_extra | (r.PART_FLG_FAIL if hard[i] != PASS_BIN else 0)
                tail = cn(part_ids[i])  # PART_ID; PART_TXT and PART_FIX left out
                chunks.append(
                    header_prr.pack(
                        17 + len(tail),
                        prr_typ,
                        prr_sub,
                        1,
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
    n_parts = len(wafer.dies) + n_retests
    n_good = int((final["hard_bin"] == PASS_BIN).sum())
    out.add(
        "WRR", out.pack("BBIIIIII", 1, 255, end, n_parts, n_retests, 0, n_good, r.COUNT_MISSING) + cn(wafer.wafer_id)
    )
    out.add("PCR", out.pack("BBIIIII", r.ALL_HEADS, 0, n_parts, n_retests, 0, n_good, r.COUNT_MISSING))
    hard_names, soft_names = _bin_names(program)
    # Bin summaries count each die once, by its final (last) test.
    for name, column, names in (("HBR", "hard_bin", hard_names), ("SBR", "soft_bin", soft_names)):
        for number, count in sorted(final[column].value_counts().items()):
            number = int(number)
            out.add(
                name,
                out.pack("BBHI", r.ALL_HEADS, 0, number, int(count))
                + (b"P" if number == PASS_BIN else b"F")
                + cn(names.get(number, f"BIN_{number}")),
            )
    out.add("MRR", out.pack("I", end + 60) + b" ")  # FINISH_T, DISP_COD; descriptions left out
    return b"".join(out.chunks)


def write_stdf_wafer(wafer: WaferData, directory: str, **options) -> str:
    """Write `<directory>/<wafer_id>.stdf` (little-endian unless `cpu_type=1`); return its path.

    `options` are those of `encode_wafer`; data/writers.py calls this with none."""
    path = os.path.join(directory, f"{wafer.wafer_id}.stdf")
    data = encode_wafer(wafer, **options)
    with open(path, "wb") as f:
        f.write(data)
    return path
