"""STDF V4 reader: one wafer-sort STDF file -> whole wafers, one DataFrame of dies each, and the program.

The program comes from the file, never from a list of known tests: each PTR test is a feature
`t{TEST_NUM}`, each pin of an MPR test `t{TEST_NUM}_p{RTN_INDX}` (data/program.py `feature_name`),
with TEST_TXT, UNITS and limits from the records that carry them; HBR / SBR pass flags say which
bins are good, MIR the revision and start time, WCR the die grid. Every `WaferRead` of a file carries
that `FileProgram`.

The dies come out in `data.readers.REQUIRED_COLUMNS` order (lot_id from MIR, wafer_id from WIR,
else WRR, part_id, x, y, head, site, hard_bin, soft_bin, sort_pass), then one float32 column per
feature in the order the file first shows them. A die without a result for a feature is NaN.

What real files do and how the reader takes it (docs/stdf.md has the table):
- Byte order: FAR CPU_TYPE 2 (little-endian) or 1 (big-endian).
- Optional trailing fields left out: the record length ends a record, not the field list.
- Defaults on the first record of a test only: RES_SCAL, limits, units come from the first PTR / MPR
  of a test that carries them; later records saying "use the first's" (OPT_FLAG bits 0, 4, 5) or
  stopping early change nothing. RESULT is stored in base units; a feature's values are
  RESULT * 10**RES_SCAL with the test's one RES_SCAL, and its limits LO_LIMIT / HI_LIMIT scaled the
  same way, so values and limits share one unit.
- A record with only default information (TEST_FLG bit 4, not executed) may stand outside any part.
- MPR: RTN_INDX may come on the first MPR of a test only; later ones (RTN_ICNT 0) reuse its pins.
- A PTR / MPR whose TEST_FLG says invalid, not executed or aborted is a missing value.
- Retests: a PRR whose PART_FLG says it supersedes a part with the same PART_ID or X/Y, or a die
  whose X/Y was already tested on the wafer, replaces the earlier test (last test wins); the number
  replaced is `WaferRead.superseded`.
- Several test heads: parts are keyed by (HEAD_NUM, SITE_NUM); each head's parts belong to the wafer
  open on that head (WIR HEAD_NUM), or to the only open wafer.
- Compressed files (.gz, .bz2) are read as they are; any path data/fs.py can read (gs://, ...).
- Record types the reader has no use for (FTR, TSR, SDR, PCR, GDR, DTR, ...) and types outside the
  specification are skipped and counted: `StdfWaferRead.skipped_records`, and a log line.

Anything it cannot read raises `InputFileError` with the file and the byte offset of the record at
fault (docs/stdf.md lists every message). A hand-written `struct` decoder: see docs/stdf.md for the
measurement behind that choice.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import struct
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pandas as pd

from data.program import FileProgram, TestDef, feature_name
from data.readers import NO_COORDINATES, REQUIRED_COLUMNS, InputFileError, WaferRead, read_input_file
from data.stdf import records as r

log = logging.getLogger(__name__)


def _code(name: str) -> int:
    typ, sub = r.RECORD_CODES[name]
    return typ << 8 | sub


_FAR, _MIR, _MRR, _WIR, _WRR, _WCR = (_code(n) for n in ("FAR", "MIR", "MRR", "WIR", "WRR", "WCR"))
_PIR, _PRR, _PTR, _MPR, _HBR, _SBR = (_code(n) for n in ("PIR", "PRR", "PTR", "MPR", "HBR", "SBR"))
USED_RECORDS = ("FAR", "MIR", "WCR", "WIR", "PIR", "PTR", "MPR", "PRR", "WRR", "HBR", "SBR", "MRR")

# Fixed-size leading fields (bytes) a record must have for the reader to use it.
_PTR_FIXED = 12  # TEST_NUM U4, HEAD_NUM U1, SITE_NUM U1, TEST_FLG B1, PARM_FLG B1, RESULT R4
_MPR_FIXED = 8  # TEST_NUM U4, HEAD_NUM U1, SITE_NUM U1, TEST_FLG B1, PARM_FLG B1 (RTN_ICNT, RSLT_CNT may go)
_PRR_FIXED = 13  # HEAD_NUM, SITE_NUM, PART_FLG U1; NUM_TEST, HARD_BIN, SOFT_BIN U2; X_COORD, Y_COORD I2
_PRR_PART_ID = 17  # after TEST_T U4
_MIR_LOT_ID = 15  # SETUP_T, START_T U4; STAT_NUM, MODE_COD, RTST_COD, PROT_COD U1; BURN_TIM U2; CMOD_COD
_WIR_WAFER_ID = 6  # HEAD_NUM, SITE_GRP U1; START_T U4
_WRR_WAFER_ID = 26  # HEAD_NUM, SITE_GRP U1; FINISH_T, PART_CNT, RTST_CNT, ABRT_CNT, GOOD_CNT, FUNC_CNT U4
_BIN_PF = 8  # HBR / SBR: HEAD_NUM, SITE_NUM U1; BIN_NUM U2; BIN_CNT U4; then BIN_PF C1
_WCR_FIXED = 13  # WAFR_SIZ, DIE_HT, DIE_WID R4; WF_UNITS U1 (then WF_FLAT, CENTER_X, CENTER_Y, ...)

# OPT_FLAG bits of a later record that only points back at the first: nothing new to read.
_USES_FIRST = r.OPT_RES_SCAL_INVALID | r.OPT_LO_LIMIT_INVALID | r.OPT_HI_LIMIT_INVALID


@dataclasses.dataclass
class StdfWaferRead(WaferRead):
    """A wafer read from an STDF file, with the file's record counts.

    The counts are per file: in a file with several wafers only the first `StdfWaferRead` carries
    them (the others have empty dicts), so summing over reads counts every record once."""

    records: dict[str, int] = dataclasses.field(default_factory=dict)  # every record type seen
    skipped_records: dict[str, int] = dataclasses.field(default_factory=dict)  # those not used


def record_label(typ: int, sub: int) -> str:
    return r.record_name(typ, sub)


def r4_decimal(value: float) -> Decimal:
    """An R4 as the decimal it was written as: the shortest one that rounds to the same float32.

    So a limit stored as 8.5e-05 A with scale 6 reads as 85 (uA), not 84.99999..."""
    return Decimal(np.format_float_scientific(np.float32(value), unique=True))


def scaled(value: float, exponent: int) -> float | None:
    """value * 10**exponent, in decimal; None for an R4 that is not a number."""
    if not math.isfinite(value):
        return None
    return float(r4_decimal(value).scaleb(exponent))


# RES_SCAL -> SI prefix: a value shown as RESULT * 10**6 of UNITS "A" is in "uA".
SI_PREFIXES = {15: "f", 12: "p", 9: "n", 6: "u", 3: "m", 0: "", -3: "k", -6: "M", -9: "G", -12: "T"}


def display_units(units: str, exponent: int) -> str:
    """The units RESULT * 10**exponent is in: `A` at 6 is `uA`; without an SI prefix, `1e-2 A`."""
    prefix = SI_PREFIXES.get(exponent)
    if prefix is not None and (units or not exponent):
        return prefix + units
    return f"1e{-exponent} {units}".strip()


# WCR WF_UNITS -> millimetres per unit (0 and anything else: unknown), as exact decimals.
_MM_PER_UNIT = {units: Decimal(mm) for units, mm in r.MM_PER_WF_UNIT.items()}


class _Test:
    """What the file has said so far about one PTR or MPR test (its defaults)."""

    __slots__ = ("number", "kind", "name", "units", "res_scal", "limits", "pins", "columns", "tails", "changed")

    def __init__(self, number: int, kind: str):
        self.number, self.kind = number, kind
        self.name: str | None = None
        self.units: str | None = None
        self.res_scal: int | None = None
        # "lo" / "hi" -> ((LO_LIMIT as stored, LLM_SCAL) or None for "no limit", byte offset of the
        # record that said it); a side not in the dict: no record has said anything about it yet
        self.limits: dict[str, tuple[tuple[float, int] | None, int]] = {}
        self.pins: list[int] | None = None  # MPR: RTN_INDX of the first MPR that has it
        self.columns: dict[int | None, int] = {}  # pin (None for a PTR) -> column index
        self.tails: set[bytes] = set()  # each distinct OPT_FLAG..end of its records, read once
        self.changed = False  # a later record disagreed (logged once)


class _Decoder:
    """One pass over the bytes of a file; keeps what the dies DataFrame and the program need."""

    def __init__(self, path: str, data: bytes):
        self.path, self.data = path, data
        self.columns: list[tuple[_Test, int | None]] = []  # feature columns in order of first sight

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

    def column(self, test: _Test, pin: int | None) -> int:
        col = test.columns.get(pin)
        if col is None:
            col = test.columns[pin] = len(self.columns)
            self.columns.append((test, pin))
        return col

    def decode(self) -> _Decoded:
        data, n = self.data, len(self.data)
        if n < 6 or data[2:4] != bytes(r.RECORD_CODES["FAR"]):
            raise self.fail(0, "not an STDF file: the first record is not a FAR (File Attributes Record)")
        cpu_type, version = data[4], data[5]
        if cpu_type not in r.CPU_TYPE_ENDIAN:
            raise self.fail(4, f"unsupported FAR CPU_TYPE {cpu_type}: only 1 (big-endian) and 2 (little-endian)")
        if version != r.STDF_VERSION:
            raise self.fail(5, f"STDF version {version}; only version 4 is supported")
        self.endian = endian = r.CPU_TYPE_ENDIAN[cpu_type]
        header = struct.Struct(endian + "HBB").unpack_from
        ptr_fixed = struct.Struct(endian + "IBBBBf").unpack_from
        prr_fixed = struct.Struct(endian + "BBBHHHhh").unpack_from
        u2 = struct.Struct(endian + "H").unpack_from
        u4 = struct.Struct(endian + "I").unpack_from
        no_result = r.TEST_FLG_NO_RESULT
        not_executed = r.TEST_FLG_NOT_EXECUTED

        # Per result (a PTR, or one pin of an MPR): part serial, column, RESULT as stored.
        self.val_part = val_part = []
        self.val_col = val_col = []
        self.val = val = []
        ptr_tests: dict[int, _Test] = {}
        ptr_col: dict[int, int] = {}  # TEST_NUM -> column, for the hot path
        self.mpr_tests: dict[int, _Test] = {}
        # Per PRR: part serial, wafer index, fields, byte offset.
        prr_rows: list[tuple] = []
        self.open_parts = open_parts = {}  # head << 8 | site -> part serial
        part_wafer: list[int] = []
        wafer_ids: list[str] = []
        open_wafers: dict[int, int] = {}  # WIR HEAD_NUM -> index of its open wafer (WIR seen, no WRR yet)
        lot_id: str | None = None
        mir: dict = {}
        wir_start = 0
        wcr: dict | None = None
        bin_flags: dict[str, dict[int, bool]] = {"HBR": {}, "SBR": {}}  # bin -> passes (P) or not (F)
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
            if key == _PTR:  # the hot path: most records of a file are PTRs
                n_ptr += 1
                if length < _PTR_FIXED:
                    raise self.fail(off, f"corrupt PTR: {length} bytes, fewer than its {_PTR_FIXED} required")
                number, head, site, test_flg, _, result = ptr_fixed(data, body)
                part = open_parts.get(head << 8 | site)
                if part is None and not test_flg & not_executed:
                    raise self.fail(off, f"corrupt file: PTR for head {head} site {site} with no open part (no PIR)")
                col = ptr_col.get(number)
                if col is None:
                    test = ptr_tests[number] = _Test(number, "PTR")
                    col = ptr_col[number] = self.column(test, None)
                    self.defaults(test, body + _PTR_FIXED, end, off)
                elif length > _PTR_FIXED:
                    # Skip TEST_TXT and ALARM_ID without decoding; read on only if OPT_FLAG says
                    # this record has defaults of its own that differ from the first's.
                    pos = body + _PTR_FIXED + 1 + data[body + _PTR_FIXED]
                    if pos < end:
                        pos += 1 + data[pos]
                    if pos > end:
                        raise self.fail(off, "corrupt record: PTR TEST_TXT or ALARM_ID runs past the end of its record")
                    if pos < end and (data[pos] & _USES_FIRST) != _USES_FIRST:
                        test = ptr_tests[number]
                        if data[pos:end] not in test.tails:
                            self.defaults(test, body + _PTR_FIXED, end, off)
                if part is not None and not test_flg & no_result:
                    val_part.append(part)
                    val_col.append(col)
                    val.append(result)
                off = end
                continue
            if key == _PIR:
                if length < 2:
                    raise self.fail(off, "corrupt PIR: shorter than HEAD_NUM and SITE_NUM")
                head = data[body]
                site_key = head << 8 | data[body + 1]
                if site_key in open_parts:
                    raise self.fail(
                        off, f"corrupt file: PIR for head {head} site {data[body + 1]} whose previous part has no PRR"
                    )
                if lot_id is None:
                    raise self.fail(off, "corrupt file: a part (PIR) before the MIR")
                wafer = open_wafers.get(head)
                if wafer is None:
                    if len(open_wafers) > 1:
                        heads = sorted(open_wafers)
                        raise self.fail(
                            off, f"corrupt file: a part on head {head}, but wafers are open on heads {heads}"
                        )
                    if open_wafers:  # one wafer open: a multi-head prober testing one wafer
                        wafer = next(iter(open_wafers.values()))
                    else:  # no WIR: a wafer named by its WRR, if any
                        wafer_ids.append("")
                        wafer = open_wafers[head] = len(wafer_ids) - 1
                open_parts[site_key] = len(part_wafer)
                part_wafer.append(wafer)
            elif key == _PRR:
                if length < _PRR_FIXED:
                    raise self.fail(off, f"corrupt PRR: {length} bytes, fewer than its {_PRR_FIXED} required")
                head, site, part_flg, _, hard_bin, soft_bin, x, y = prr_fixed(data, body)
                part = open_parts.pop(head << 8 | site, None)
                if part is None:
                    raise self.fail(off, f"corrupt file: PRR for head {head} site {site} with no open part (no PIR)")
                if x == r.COORD_MISSING or y == r.COORD_MISSING:
                    raise self.fail(off, NO_COORDINATES)
                part_id, _ = self.cn(body + _PRR_PART_ID, end, off, "PRR PART_ID")
                prr_rows.append((part, part_wafer[part], part_id, x, y, head, site, hard_bin, soft_bin, part_flg, off))
            elif key == _MPR:
                self.mpr(off, body, end)
            elif key == _HBR or key == _SBR:
                if length > _BIN_PF and data[body + _BIN_PF] in (r.BIN_PASS, r.BIN_FAIL):
                    flags = bin_flags[record_label(typ, sub)]
                    (number,) = u2(data, body + 2)
                    passes = data[body + _BIN_PF] == r.BIN_PASS
                    flags[number] = flags.get(number, False) or passes  # per-site records: P anywhere wins
            elif key == _MIR:
                mir, lot_id = self.mir(body, end, off, u4)
            elif key == _WIR:
                wafer_id, _ = self.cn(body + _WIR_WAFER_ID, end, off, "WIR WAFER_ID")
                wafer_ids.append(wafer_id)
                open_wafers[data[body] if length else r.ALL_HEADS] = len(wafer_ids) - 1
                if length >= _WIR_WAFER_ID:
                    wir_start = wir_start or u4(data, body + 2)[0]
            elif key == _WRR:
                wafer_id, _ = self.cn(body + _WRR_WAFER_ID, end, off, "WRR WAFER_ID")
                wafer = open_wafers.pop(data[body], None) if length else None
                if wafer is None and len(open_wafers) == 1:
                    wafer = open_wafers.popitem()[1]
                if wafer is not None:
                    wafer_ids[wafer] = wafer_ids[wafer] or wafer_id
            elif key == _WCR:
                wcr = wcr if wcr is not None else self.wcr(body, end)
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
        good = {
            kind: sorted(b for b, passes in flags.items() if passes) if flags else None
            for kind, flags in bin_flags.items()
        }
        program = FileProgram(
            tests=self.program_tests(),
            good_hard_bins=good["HBR"],
            good_soft_bins=good["SBR"],
            revision={k: mir.get(k, "") for k in ("PART_TYP", "JOB_NAM", "JOB_REV")},
            start_time=mir.get("START_T") or wir_start,
            wcr=wcr,
        )
        dies = self.frame(prr_rows, len(part_wafer))
        dies.insert(0, "lot_id", lot_id)
        return _Decoded(dies, wafer_ids, names, program, bin_flags["HBR"])

    def defaults(self, test: _Test, pos: int, end: int, offset: int, n_pins: int = 0) -> list[int] | None:
        """Read a PTR / MPR from TEST_TXT on: what it says of the test's defaults (name, scale,
        limits, units) updates `test` where nothing said it before. Returns an MPR's RTN_INDX."""
        data, kind = self.data, test.kind
        text, pos = self.cn(pos, end, offset, f"{kind} TEST_TXT")
        _, pos = self.cn(pos, end, offset, f"{kind} ALARM_ID")
        if test.name is None and text and text != "\x00":  # a single NUL: "no text" (the spec's null value)
            test.name = text
        if pos >= end:  # no OPT_FLAG: nothing about scale or limits in this record
            return None
        opt = data[pos]
        test.tails.add(data[pos:end])
        exponents = [(b ^ 0x80) - 0x80 for b in data[pos + 1 : min(pos + 4, end)]]  # RES/LLM/HLM_SCAL, I1
        if test.res_scal is None and exponents and not opt & r.OPT_RES_SCAL_INVALID:
            test.res_scal = exponents[0]
        for side, at, scale_at, same, none in (
            ("lo", pos + 4, 1, r.OPT_LO_LIMIT_INVALID, r.OPT_NO_LO_LIMIT),
            ("hi", pos + 8, 2, r.OPT_HI_LIMIT_INVALID, r.OPT_NO_HI_LIMIT),
        ):
            if opt & same and not opt & none:
                continue  # "the first record's limit": nothing new
            if opt & none:
                said = None
            elif at + 4 <= end:
                said = (struct.unpack_from(self.endian + "f", data, at)[0], exponents[scale_at])
            else:
                continue  # the field is left out
            self.limit(test, side, said, offset)
        pos += 12  # OPT_FLAG, RES/LLM/HLM_SCAL, LO_LIMIT, HI_LIMIT
        indexes = None
        if kind == "MPR":
            pos += 8  # START_IN, INCR_IN
            if n_pins and pos + 2 * n_pins <= end:
                indexes = list(struct.unpack_from(f"{self.endian}{n_pins}H", data, pos))
            pos += 2 * n_pins
        if pos < end:
            units, _ = self.cn(pos, end, offset, f"{kind} UNITS")
            if test.units is None and units and units != "\x00":
                test.units = units
        return indexes

    def limit(self, test: _Test, side: str, said: tuple[float, int] | None, offset: int) -> None:
        """The first record that says a limit (or "no limit") defines it; a later one that says
        otherwise is a program edit within the file: logged once, the first kept."""
        if side not in test.limits:
            test.limits[side] = (said, offset)
            return
        first, first_offset = test.limits[side]
        # Stored limits are in base units: the same R4 is the same limit, whatever its display exponent.
        same = first is said is None or (first is not None and said is not None and first[0] == said[0])
        if not same and not test.changed:
            test.changed = True
            log.warning(
                "%s: %s %d: the record at byte offset %d gives another %s limit (%s) than the first at byte "
                "offset %d (%s); the first is kept",
                self.path,
                test.kind,
                test.number,
                offset,
                side,
                said and said[0],
                first_offset,
                first and first[0],
            )

    def mpr(self, off: int, body: int, end: int) -> None:
        """One MPR: a result per pin, each pin a feature of its own."""
        data, length = self.data, end - body
        if length < _MPR_FIXED:
            raise self.fail(off, f"corrupt MPR: {length} bytes, fewer than its {_MPR_FIXED} required")
        number, head, site, test_flg = struct.unpack_from(self.endian + "IBBB", data, body)
        n_pins = struct.unpack_from(self.endian + "H", data, body + 8)[0] if length >= 10 else 0  # RTN_ICNT
        n_results = struct.unpack_from(self.endian + "H", data, body + 10)[0] if length >= 12 else 0  # RSLT_CNT
        results_at = min(body + 12, end) + (n_pins + 1) // 2  # after RTN_STAT, 4 bits per pin
        tail = results_at + 4 * n_results
        if tail > end:
            raise self.fail(
                off,
                f"corrupt MPR: RTN_STAT and RTN_RSLT ({n_pins} states, {n_results} results) run past the end "
                "of its record",
            )
        part = self.open_parts.get(head << 8 | site)
        if part is None and not test_flg & r.TEST_FLG_NOT_EXECUTED:
            raise self.fail(off, f"corrupt file: MPR for head {head} site {site} with no open part (no PIR)")
        test = self.mpr_tests.get(number)
        first = test is None
        if first:
            test = self.mpr_tests[number] = _Test(number, "MPR")
        indexes = None
        if first or n_pins or self.has_news(test, tail, end, off):
            indexes = self.defaults(test, tail, end, off, n_pins)
        if indexes and test.pins is None:
            test.pins = indexes
        pins = indexes or test.pins or list(range(n_results))  # no RTN_INDX anywhere: pins by position
        if n_results > len(pins):
            raise self.fail(off, f"corrupt MPR: {n_results} results (RSLT_CNT) but {len(pins)} pins (RTN_INDX)")
        columns = [self.column(test, pin) for pin in pins]
        if part is not None and n_results and not test_flg & r.TEST_FLG_NO_RESULT:
            self.val_part.extend([part] * n_results)
            self.val_col.extend(columns[:n_results])
            self.val.extend(struct.unpack_from(f"{self.endian}{n_results}f", data, results_at))

    def has_news(self, test: _Test, pos: int, end: int, off: int) -> bool:
        """Whether a later record, from TEST_TXT at `pos`, may say something its test's earlier
        records did not: an OPT_FLAG that does not point back at the first, with a tail not seen."""
        data = self.data
        if pos < end:
            pos += 1 + data[pos]  # TEST_TXT
        if pos < end:
            pos += 1 + data[pos]  # ALARM_ID
        if pos > end:
            raise self.fail(off, f"corrupt record: {test.kind} TEST_TXT or ALARM_ID runs past the end of its record")
        return pos < end and (data[pos] & _USES_FIRST) != _USES_FIRST and data[pos:end] not in test.tails

    def mir(self, body: int, end: int, off: int, u4) -> tuple[dict, str]:
        """START_T, and the strings LOT_ID .. JOB_REV."""
        fields = {"START_T": u4(self.data, body + 4)[0] if end - body >= 8 else 0}
        pos = body + _MIR_LOT_ID
        for name in ("LOT_ID", "PART_TYP", "NODE_NAM", "TSTR_TYP", "JOB_NAM", "JOB_REV"):
            fields[name], pos = self.cn(pos, end, off, f"MIR {name}")
        return fields, fields["LOT_ID"]

    def wcr(self, body: int, end: int) -> dict | None:
        """WCR sizes in mm (None where zero or the units are unknown) and the centre die (None if -32768)."""
        if end - body < _WCR_FIXED:
            return None
        size, height, width = struct.unpack_from(self.endian + "fff", self.data, body)
        mm = _MM_PER_UNIT.get(self.data[body + 12])

        def to_mm(value: float) -> float | None:
            if mm is None or not value or not math.isfinite(value):
                return None
            return float(r4_decimal(value) * mm)

        centre: list[float | None] = [None, None]
        if end - body >= _WCR_FIXED + 5:
            for i, c in enumerate(struct.unpack_from(self.endian + "hh", self.data, body + _WCR_FIXED + 1)):
                centre[i] = None if c == r.COORD_MISSING else float(c)
        return {
            "diameter_mm": to_mm(size),
            "die_width_mm": to_mm(width),
            "die_height_mm": to_mm(height),
            "center_x": centre[0],
            "center_y": centre[1],
        }

    def definition(self, test: _Test) -> TestDef:
        """The test as the file defines it: limits and units in the units its values are shown in."""
        exponent = test.res_scal or 0
        limits = {}
        for side in ("lo", "hi"):
            said = test.limits.get(side, (None, 0))[0]
            limits[side] = None if said is None else scaled(said[0], exponent)
            if said is not None and said[1] != exponent:
                log.info(
                    "%s: %s %d: %s limit scale exponent %d differs from RES_SCAL %d; the limit is read in the "
                    "results' units (x 10**%d)",
                    *(self.path, test.kind, test.number, side, said[1], exponent, exponent),
                )
        return TestDef(
            number=test.number,
            name=test.name or "",
            units=display_units(test.units or "", exponent),
            lo_limit=limits["lo"],
            hi_limit=limits["hi"],
        )

    def program_tests(self) -> list[TestDef]:
        """One `TestDef` per feature column, in column order (an MPR's pins share their test's)."""
        definitions: dict[int, TestDef] = {}
        tests = []
        for test, pin in self.columns:
            if id(test) not in definitions:
                definitions[id(test)] = self.definition(test)
            tests.append(dataclasses.replace(definitions[id(test)], pin=pin))
        return tests

    def frame(self, prr_rows: list[tuple], n_parts: int) -> pd.DataFrame:
        """Every PRR (retests included, file order) with `_wafer`, `_part_flg`, `_offset` columns."""
        columns = self.columns
        values = np.full((n_parts, len(columns)), np.nan, dtype=np.float32)
        if self.val:
            col = np.asarray(self.val_col, dtype=np.int64)
            multiplier = np.asarray([10.0 ** (test.res_scal or 0) for test, _ in columns])
            # A test measured twice on one part: the later record wins (fancy assignment keeps the last).
            values[np.asarray(self.val_part, dtype=np.int64), col] = np.asarray(self.val) * multiplier[col]
        part, wafer, part_id, x, y, head, site, hard_bin, soft_bin, part_flg, offset = (
            list(c) for c in zip(*prr_rows, strict=True)
        )
        ids = pd.DataFrame(
            {
                "_wafer": np.asarray(wafer, dtype=np.int64),
                "part_id": part_id,
                "x": np.asarray(x, dtype=np.int32),
                "y": np.asarray(y, dtype=np.int32),
                "head": np.asarray(head, dtype=np.int32),
                "site": np.asarray(site, dtype=np.int32),
                "hard_bin": np.asarray(hard_bin, dtype=np.int32),
                "soft_bin": np.asarray(soft_bin, dtype=np.int32),
                "_part_flg": np.asarray(part_flg, dtype=np.int32),
                "_offset": np.asarray(offset, dtype=np.int64),
            }
        )
        names = [feature_name(test.number, pin) for test, pin in columns]
        tests = pd.DataFrame(values[np.asarray(part, dtype=np.int64)], columns=names)
        return pd.concat([ids, tests], axis=1)


@dataclasses.dataclass
class _Decoded:
    dies: pd.DataFrame  # every PRR of the file, with `_wafer`, `_part_flg`, `_offset`
    wafer_ids: list[str]  # by `_wafer`
    counts: dict[str, int]  # records of each type
    program: FileProgram
    hard_bin_flags: dict[int, bool]  # HBR HBIN_PF: bin -> passes


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


def passed_sort(path: str, dies: pd.DataFrame, hard_bin_flags: dict[int, bool]) -> np.ndarray:
    """Whether each die passed sort: its hard bin's HBR pass flag (P / F), else its PRR PART_FLG
    (bit 3 clear: passed). A die left to PART_FLG whose bit 4 says pass/fail is invalid cannot be
    classified: InputFileError at its PRR."""
    hard = dies["hard_bin"].to_numpy()
    flags = dies["_part_flg"].to_numpy()
    by_part_flg = (flags & r.PART_FLG_FAIL) == 0
    if hard_bin_flags:
        flagged = np.isin(hard, list(hard_bin_flags))
        good = np.isin(hard, [b for b, passes in hard_bin_flags.items() if passes])
    else:
        flagged = good = np.zeros(len(dies), dtype=bool)
    invalid = ~flagged & ((flags & r.PART_FLG_PF_INVALID) != 0)
    if invalid.any():
        i = int(np.argmax(invalid))
        raise InputFileError(
            path,
            f"PRR PART_FLG says pass/fail is invalid (bit 4) for the die at X/Y {dies['x'].iat[i]}/{dies['y'].iat[i]} "
            f"and no HBR flags its hard bin {hard[i]}: it cannot be classified",
            int(dies["_offset"].iat[i]),
        )
    return np.where(flagged, good, by_part_flg)


def read_stdf(path: str) -> Iterator[StdfWaferRead]:
    """Read one STDF V4 file (plain, .gz or .bz2; any path data/fs.py reads); yield each wafer in it."""
    decoded = _Decoder(path, read_input_file(path)).decode()
    counts = decoded.counts
    skipped = {name: c for name, c in sorted(counts.items()) if name not in USED_RECORDS}
    if skipped:
        log.info("%s: skipped %d records the reader does not use: %s", path, sum(skipped.values()), skipped)
    columns = [*REQUIRED_COLUMNS, *(t.feature for t in decoded.program.tests)]
    reads = []
    for index, wafer_dies in decoded.dies.groupby("_wafer", sort=True):
        wafer_dies = wafer_dies.reset_index(drop=True)
        keep = supersede(wafer_dies)
        wafer_dies = wafer_dies[keep].reset_index(drop=True)
        wafer_dies["sort_pass"] = passed_sort(path, wafer_dies, decoded.hard_bin_flags)
        wafer_id = decoded.wafer_ids[index]
        wafer_dies["wafer_id"] = wafer_id
        wafer_dies = wafer_dies[columns]
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
                program=decoded.program,
                records=counts if first else {},
                skipped_records=skipped if first else {},
            )
        )
    yield from reads
