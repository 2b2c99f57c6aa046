"""STDF V4 reader: one wafer-sort STDF file -> whole wafers, one DataFrame of dies each.

The dies come out in the columns of the Parquet path (data/readers.py): lot_id (MIR LOT_ID),
wafer_id (WIR WAFER_ID, else WRR WAFER_ID), part_id, x, y, site, hard_bin, soft_bin, then one float32
column per parametric test: `t{TEST_NUM}_{name}`, with the test program's name when it knows the
number (data/test_program.py) and the PTR's TEST_TXT, sanitised, when it does not. Every test of the
program gets a column; a test a die has no PTR for is NaN (missing, never zero).

What real files do and how the reader takes it:
- Byte order: FAR CPU_TYPE 2 (little-endian) or 1 (big-endian).
- Optional trailing fields left out: the record length ends a record, not the field list.
- Limits and RES_SCAL on the first PTR of a test only: a PTR whose OPT_FLAG says "RES_SCAL invalid"
  (or that has no OPT_FLAG) uses its test's first scale. Values are RESULT * 10**RES_SCAL, the
  units the tester shows (uA, MHz, ...), which for the synthetic program are the program's units.
- A PTR whose TEST_FLG says the result is invalid, the test was not executed or was aborted is a
  missing value.
- Retests: a PRR whose PART_FLG says it supersedes a part with the same PART_ID or X/Y, or a die
  whose X/Y was already tested on the wafer, replaces the earlier test (last test wins); the number
  replaced is `WaferRead.superseded`.
- Record types the reader has no use for (MPR, FTR, TSR, SDR, HBR, GDR, DTR, ...) and types outside
  the specification are skipped and counted: `StdfWaferRead.skipped_records`, and a log line.

Anything it cannot read raises `InputFileError` with the file and the byte offset of the record
at fault: not STDF (first record not FAR), an unsupported CPU_TYPE or version, a record running past
the end of the file (truncated), a record too short for its required fields or whose string runs
past its end, PTR / PRR without an open PIR, no MRR at the end, and no PRR at all.

A hand-written `struct` decoder: see docs/stdf.md for the measurement behind that choice.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import struct
from collections.abc import Iterator

import numpy as np
import pandas as pd

from data.readers import InputFileError, WaferRead
from data.stdf import records as r
from data.test_program import TEST_PROGRAM, TESTS_BY_NUMBER

log = logging.getLogger(__name__)

_PTR = r.RECORD_CODES["PTR"][0] << 8 | r.RECORD_CODES["PTR"][1]
_PIR = r.RECORD_CODES["PIR"][0] << 8 | r.RECORD_CODES["PIR"][1]
_PRR = r.RECORD_CODES["PRR"][0] << 8 | r.RECORD_CODES["PRR"][1]
_MIR = r.RECORD_CODES["MIR"][0] << 8 | r.RECORD_CODES["MIR"][1]
_WIR = r.RECORD_CODES["WIR"][0] << 8 | r.RECORD_CODES["WIR"][1]
_WRR = r.RECORD_CODES["WRR"][0] << 8 | r.RECORD_CODES["WRR"][1]
_MRR = r.RECORD_CODES["MRR"][0] << 8 | r.RECORD_CODES["MRR"][1]
_FAR = r.RECORD_CODES["FAR"][0] << 8 | r.RECORD_CODES["FAR"][1]
USED_RECORDS = ("FAR", "MIR", "WIR", "PIR", "PTR", "PRR", "WRR", "MRR")

# Fixed-size leading fields (bytes) a record must have for the reader to use it.
_PTR_FIXED = 12  # TEST_NUM U4, HEAD_NUM U1, SITE_NUM U1, TEST_FLG B1, PARM_FLG B1, RESULT R4
_PRR_FIXED = 13  # HEAD_NUM, SITE_NUM, PART_FLG U1; NUM_TEST, HARD_BIN, SOFT_BIN U2; X_COORD, Y_COORD I2
_PRR_PART_ID = 17  # after TEST_T U4
_MIR_LOT_ID = 15  # SETUP_T, START_T U4; STAT_NUM, MODE_COD, RTST_COD, PROT_COD U1; BURN_TIM U2; CMOD_COD
_WIR_WAFER_ID = 6  # HEAD_NUM, SITE_GRP U1; START_T U4
_WRR_WAFER_ID = 26  # HEAD_NUM, SITE_GRP U1; FINISH_T, PART_CNT, RTST_CNT, ABRT_CNT, GOOD_CNT, FUNC_CNT U4


@dataclasses.dataclass
class StdfWaferRead(WaferRead):
    """A wafer read from an STDF file, with the file's record counts.

    The counts are per file: in a file with several wafers only the first `StdfWaferRead` carries
    them (the others have empty dicts), so summing over reads counts every record once."""

    records: dict[str, int] = dataclasses.field(default_factory=dict)  # every record type seen
    skipped_records: dict[str, int] = dataclasses.field(default_factory=dict)  # those not used


def sanitise(text: str) -> str:
    """TEST_TXT as a feature-name part: lower case, runs of other characters as one underscore."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def test_column(number: int, test_txt: str = "") -> str:
    """Column of a test: the program's `t{number}_{name}` if it knows the number, else from TEST_TXT."""
    known = TESTS_BY_NUMBER.get(number)
    if known is not None:
        return known.feature_name
    name = sanitise(test_txt)
    return f"t{number}_{name}" if name else f"t{number}"


class _Decoder:
    """One pass over the bytes of a file; keeps what the dies DataFrame needs."""

    def __init__(self, path: str, data: bytes):
        self.path, self.data = path, data

    def fail(self, offset: int, reason: str) -> InputFileError:
        return InputFileError(self.path, reason, offset)

    def cn(self, pos: int, end: int, offset: int, what: str) -> tuple[str, int]:
        """Cn at `pos` in a record ending at `end`: ("", pos) if the field is left out."""
        if pos >= end:
            return "", pos
        stop = pos + 1 + self.data[pos]
        if stop > end:
            raise self.fail(offset, f"corrupt record: {what} runs past the end of its record")
        return self.data[pos + 1 : stop].decode("latin-1"), stop

    def decode(self) -> tuple[pd.DataFrame, list[str], dict[str, int]]:
        """Dies (every PRR, retests included, in file order, with `_wafer` index and `_part_flg`
        columns), the wafer ids by index, and the count of each record type."""
        data, n = self.data, len(self.data)
        if n < 6 or data[2:4] != bytes(r.RECORD_CODES["FAR"]):
            raise self.fail(0, "not an STDF file: the first record is not a FAR (File Attributes Record)")
        cpu_type, version = data[4], data[5]
        if cpu_type not in r.CPU_TYPE_ENDIAN:
            raise self.fail(4, f"unsupported FAR CPU_TYPE {cpu_type}: only 1 (big-endian) and 2 (little-endian)")
        if version != r.STDF_VERSION:
            raise self.fail(5, f"STDF version {version}; only version 4 is supported")
        endian = r.CPU_TYPE_ENDIAN[cpu_type]
        header = struct.Struct(endian + "HBB").unpack_from
        ptr_fixed = struct.Struct(endian + "IBBBBf").unpack_from
        prr_fixed = struct.Struct(endian + "BBBHHHhh").unpack_from
        no_result = r.TEST_FLG_NO_RESULT

        # Per PTR: part serial, test number, value. Per test: first scale and text.
        ptr_part: list[int] = []
        ptr_num: list[int] = []
        ptr_val: list[float] = []
        multiplier: dict[int, float] = {}
        test_txt: dict[int, str] = {}
        # Per PRR: part serial, wafer index, fields.
        prr_rows: list[tuple] = []
        open_parts: dict[int, int] = {}  # head << 8 | site -> part serial
        part_wafer: list[int] = []
        wafer_ids: list[str] = []
        wafer = -1  # index of the open wafer (WIR seen, WRR not yet), -1 if none
        lot_id: str | None = None
        counts: collections.Counter = collections.Counter()
        n_ptr = 0
        mrr_at = -1

        off = 0
        while off < n:
            if off + 4 > n:
                raise self.fail(off, f"truncated file: {n - off} bytes left where a 4-byte record header starts")
            length, typ, sub = header(data, off)
            body = off + 4
            end = body + length
            if end > n:
                raise self.fail(
                    off,
                    f"truncated file: {record_label(typ, sub)} record declares {length} bytes "
                    f"but only {n - body} remain",
                )
            if mrr_at >= 0:
                raise self.fail(off, f"corrupt file: {record_label(typ, sub)} record after the MRR (the last record)")
            key = typ << 8 | sub
            if key == _PTR:
                n_ptr += 1
                if length < _PTR_FIXED:
                    raise self.fail(off, f"corrupt PTR: {length} bytes, fewer than its {_PTR_FIXED} required")
                number, head, site, test_flg, _, result = ptr_fixed(data, body)
                part = open_parts.get(head << 8 | site)
                if part is None:
                    raise self.fail(off, f"corrupt file: PTR for head {head} site {site} with no open part (no PIR)")
                scale = multiplier.get(number)
                if scale is None:
                    scale = self._first_ptr(number, body, end, off, multiplier, test_txt)
                elif length > _PTR_FIXED:
                    # Skip TEST_TXT and ALARM_ID without decoding; a valid RES_SCAL of its own wins.
                    pos = body + _PTR_FIXED + 1 + data[body + _PTR_FIXED]
                    if pos < end:
                        pos += 1 + data[pos]
                    if pos > end:
                        raise self.fail(off, "corrupt record: PTR TEST_TXT or ALARM_ID runs past the end of its record")
                    if pos + 1 < end and not data[pos] & r.OPT_RES_SCAL_INVALID:
                        scale = 10.0 ** ((data[pos + 1] ^ 0x80) - 0x80)  # RES_SCAL is I1
                if not test_flg & no_result:
                    ptr_part.append(part)
                    ptr_num.append(number)
                    ptr_val.append(result * scale)
                off = end
                continue
            if key == _PIR:
                if length < 2:
                    raise self.fail(off, "corrupt PIR: shorter than HEAD_NUM and SITE_NUM")
                site_key = data[body] << 8 | data[body + 1]
                if site_key in open_parts:
                    raise self.fail(
                        off,
                        f"corrupt file: PIR for head {data[body]} site {data[body + 1]} whose previous part has no PRR",
                    )
                if lot_id is None:
                    raise self.fail(off, "corrupt file: a part (PIR) before the MIR")
                if wafer < 0:  # no WIR: a wafer named by its WRR, if any
                    wafer_ids.append("")
                    wafer = len(wafer_ids) - 1
                open_parts[site_key] = len(part_wafer)
                part_wafer.append(wafer)
            elif key == _PRR:
                if length < _PRR_FIXED:
                    raise self.fail(off, f"corrupt PRR: {length} bytes, fewer than its {_PRR_FIXED} required")
                head, site, part_flg, _, hard_bin, soft_bin, x, y = prr_fixed(data, body)
                part = open_parts.pop(head << 8 | site, None)
                if part is None:
                    raise self.fail(off, f"corrupt file: PRR for head {head} site {site} with no open part (no PIR)")
                part_id, _ = self.cn(body + _PRR_PART_ID, end, off, "PRR PART_ID")
                prr_rows.append((part, part_wafer[part], part_id, x, y, site, hard_bin, soft_bin, part_flg))
            elif key == _MIR:
                lot_id, _ = self.cn(body + _MIR_LOT_ID, end, off, "MIR LOT_ID")
            elif key == _WIR:
                wafer_id, _ = self.cn(body + _WIR_WAFER_ID, end, off, "WIR WAFER_ID")
                wafer_ids.append(wafer_id)
                wafer = len(wafer_ids) - 1
            elif key == _WRR:
                wafer_id, _ = self.cn(body + _WRR_WAFER_ID, end, off, "WRR WAFER_ID")
                if wafer >= 0:
                    wafer_ids[wafer] = wafer_ids[wafer] or wafer_id
                wafer = -1
            elif key == _MRR:
                mrr_at = off
            elif key == _FAR and off:
                raise self.fail(off, "corrupt file: a second FAR")
            counts[(typ, sub)] += 1
            off = end

        if mrr_at < 0:
            raise self.fail(n, "truncated file: it ends without an MRR (Master Results Record)")
        if open_parts:
            raise self.fail(mrr_at, f"corrupt file: {len(open_parts)} part(s) with a PIR but no PRR")
        if not prr_rows:
            raise self.fail(mrr_at, "no PRR records: the file holds no tested dies")
        unnamed = {wafer_ids[w] for w in part_wafer if not wafer_ids[w]}
        if unnamed:
            raise self.fail(mrr_at, "dies outside any wafer: no WIR or WRR WAFER_ID names them")

        names = {record_label(typ, sub): c for (typ, sub), c in counts.items()}
        if n_ptr:
            names["PTR"] = n_ptr
        dies = self._frame(prr_rows, ptr_part, ptr_num, ptr_val, test_txt, len(part_wafer))
        dies.insert(0, "lot_id", lot_id)
        return dies, wafer_ids, names

    def _first_ptr(
        self, number: int, body: int, end: int, offset: int, multiplier: dict[int, float], test_txt: dict[int, str]
    ) -> float:
        """The first PTR of a test sets its defaults: 10**RES_SCAL (1 if absent or invalid) and name."""
        data = self.data
        text, pos = self.cn(body + _PTR_FIXED, end, offset, "PTR TEST_TXT")
        _, pos = self.cn(pos, end, offset, "PTR ALARM_ID")
        scale = 1.0
        if pos + 1 < end and not data[pos] & r.OPT_RES_SCAL_INVALID:
            scale = 10.0 ** ((data[pos + 1] ^ 0x80) - 0x80)  # RES_SCAL is I1
        multiplier[number] = scale
        test_txt[number] = text
        return scale

    @staticmethod
    def _frame(prr_rows, ptr_part, ptr_num, ptr_val, test_txt, n_parts) -> pd.DataFrame:
        numbers = np.asarray(ptr_num, dtype=np.int64)
        unique, column_of_ptr = np.unique(numbers, return_inverse=True)
        known = [t.number for t in TEST_PROGRAM]
        unknown = sorted(set(unique.tolist()) - set(known))
        columns = known + unknown
        position = {num: i for i, num in enumerate(columns)}
        column_of_ptr = np.asarray([position[num] for num in unique.tolist()], dtype=np.int64)[column_of_ptr]
        values = np.full((n_parts, len(columns)), np.nan, dtype=np.float32)
        # A test measured twice on one part: the later PTR wins (fancy assignment keeps the last).
        values[np.asarray(ptr_part, dtype=np.int64), column_of_ptr] = np.asarray(ptr_val, dtype=np.float64)
        part, wafer, part_id, x, y, site, hard_bin, soft_bin, part_flg = (list(c) for c in zip(*prr_rows, strict=True))
        ids = pd.DataFrame(
            {
                "_wafer": np.asarray(wafer, dtype=np.int64),
                "part_id": part_id,
                "x": np.asarray(x, dtype=np.int32),
                "y": np.asarray(y, dtype=np.int32),
                "site": np.asarray(site, dtype=np.int32),
                "hard_bin": np.asarray(hard_bin, dtype=np.int32),
                "soft_bin": np.asarray(soft_bin, dtype=np.int32),
                "_part_flg": np.asarray(part_flg, dtype=np.int32),
            }
        )
        names = [test_column(num, test_txt.get(num, "")) for num in columns]
        tests = pd.DataFrame(values[np.asarray(part, dtype=np.int64)], columns=names)
        return pd.concat([ids, tests], axis=1)


def record_label(typ: int, sub: int) -> str:
    return r.record_name(typ, sub)


def supersede(dies: pd.DataFrame) -> np.ndarray:
    """Which dies a later test replaces: the PART_FLG supersede bits, or the same X/Y tested again.

    Returns a boolean mask of the dies to keep (the last test of each die)."""
    keep = np.ones(len(dies), dtype=bool)
    by_xy: dict[tuple[int, int], int] = {}
    by_id: dict[str, int] = {}
    rows = zip(
        dies["x"].tolist(), dies["y"].tolist(), dies["part_id"].tolist(), dies["_part_flg"].tolist(), strict=True
    )
    for i, (x, y, part_id, flags) in enumerate(rows):
        earlier = None
        if flags & r.PART_FLG_SUPERSEDES_ID and part_id in by_id:
            earlier = by_id[part_id]
        elif x != r.COORD_MISSING and y != r.COORD_MISSING and (x, y) in by_xy:
            earlier = by_xy[(x, y)]  # PART_FLG_SUPERSEDES_XY set or not: the same die, tested again
        if earlier is not None and keep[earlier]:
            keep[earlier] = False
        if x != r.COORD_MISSING and y != r.COORD_MISSING:
            by_xy[(x, y)] = i
        if part_id:
            by_id[part_id] = i
    return keep


def read_stdf(path: str) -> Iterator[StdfWaferRead]:
    """Read one STDF V4 file; yield each wafer in it (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise InputFileError(path, f"cannot open ({error})") from error
    dies, wafer_ids, counts = _Decoder(path, data).decode()
    skipped = {name: c for name, c in sorted(counts.items()) if name not in USED_RECORDS}
    if skipped:
        log.info("%s: skipped %d records the reader does not use: %s", path, sum(skipped.values()), skipped)
    reads = []
    for index, wafer_dies in dies.groupby("_wafer", sort=True):
        wafer_dies = wafer_dies.reset_index(drop=True)
        keep = supersede(wafer_dies)
        wafer_id = wafer_ids[index]
        wafer_dies = wafer_dies[keep].drop(columns=["_wafer", "_part_flg"]).reset_index(drop=True)
        wafer_dies.insert(1, "wafer_id", wafer_id)
        missing_id = wafer_dies["part_id"] == ""
        if missing_id.any():  # PRR without PART_ID: name the die by wafer and position
            wafer_dies.loc[missing_id, "part_id"] = [
                f"{wafer_id}-X{x}Y{y}" for x, y in zip(wafer_dies.x[missing_id], wafer_dies.y[missing_id], strict=True)
            ]
        first = not reads
        reads.append(
            StdfWaferRead(
                lot_id=str(wafer_dies["lot_id"].iat[0]),
                wafer_id=wafer_id,
                dies=wafer_dies,
                superseded=int((~keep).sum()),
                source=path,
                records=counts if first else {},
                skipped_records=skipped if first else {},
            )
        )
    yield from reads
