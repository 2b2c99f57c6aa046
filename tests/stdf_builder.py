"""STDF V4 files packed record by record in a test: for the cases the project's writer cannot
produce (other testers' programs, several heads, parts without coordinates, ...); and pystdf, the
tests' independent reader, decoding any file record by record."""

from __future__ import annotations

import io
import struct

import numpy as np
import pandas as pd
from pystdf.IO import Parser

from data.program import feature_name
from data.stdf import records as rec


def write_bytes(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def cn(text: str) -> bytes:
    return bytes([len(text)]) + text.encode("latin-1")


class Stdf:
    """An STDF V4 file packed record by record, fields in the specification's order."""

    def __init__(self, cpu_type: int = 2):
        self.endian = rec.CPU_TYPE_ENDIAN[cpu_type]
        self.chunks: list[bytes] = []
        self.add("FAR", bytes([cpu_type, 4]))

    def pack(self, fmt: str, *values) -> bytes:
        return struct.pack(self.endian + fmt, *values)

    def add(self, name: str, *parts: bytes) -> Stdf:
        body = b"".join(parts)
        self.chunks.append(self.pack("HBB", len(body), *rec.RECORD_CODES[name]) + body)
        return self

    def mir(self, lot="LOT9", part_typ="ACME77", job="acme_ws", rev="C3", start=1_700_000_000) -> Stdf:
        fixed = self.pack("IIBcccHc", max(start - 60, 0), start, 1, b"P", b" ", b" ", 65535, b" ")
        return self.add("MIR", fixed, cn(lot), cn(part_typ), cn("node1"), cn("T9000"), cn(job), cn(rev))

    def wir(self, wafer_id="W07", head=1, start=0) -> Stdf:
        return self.add("WIR", self.pack("BBI", head, 255, start), cn(wafer_id))

    def wrr(self, wafer_id="W07", head=1) -> Stdf:
        return self.add("WRR", self.pack("BBIIIIII", head, 255, 0, 0, 0, 0, 0, 0), cn(wafer_id))

    def pir(self, head=1, site=0) -> Stdf:
        return self.add("PIR", bytes([head, site]))

    def ptr(self, number, result, tail=b"", head=1, site=0, test_flg=0) -> Stdf:
        return self.add("PTR", self.pack("IBBBBf", number, head, site, test_flg, 0, result), tail)

    def defaults(self, text, opt, scale=0, lo=0.0, hi=0.0, units="") -> bytes:
        """A PTR's fields from TEST_TXT to UNITS (LLM_SCAL and HLM_SCAL = RES_SCAL)."""
        return cn(text) + cn("") + self.pack("Bbbbff", opt, scale, scale, scale, lo, hi) + cn(units)

    def mpr(self, number, results, pins=(), text="", opt=None, scale=0, lo=0.0, hi=0.0, units="", head=1, site=0):
        """An MPR: RTN_STAT all 0; from TEST_TXT on only if `opt` or `pins` are given."""
        body = self.pack("IBBBBHH", number, head, site, 0, 0, len(pins), len(results))
        body += bytes((len(pins) + 1) // 2) + self.pack(f"{len(results)}f", *results)
        if opt is not None or pins:
            opt = rec.OPT_RESERVED | rec.OPT_RES_SCAL_INVALID | 0x30 if opt is None else opt
            body += cn(text) + cn("") + self.pack("Bbbbffff", opt, scale, scale, scale, lo, hi, 0.0, 0.0)
            body += self.pack(f"{len(pins)}H", *pins) + cn(units)
        return self.add("MPR", body)

    def prr(self, x, y, hard=1, soft=1, part_flg=0, head=1, site=0, part_id="") -> Stdf:
        fixed = self.pack("BBBHHHhhI", head, site, part_flg, 0, hard, soft, x, y, 0)
        return self.add("PRR", fixed, cn(part_id))

    def die(self, x, y, results: dict[int, float], hard=1, part_flg=0, head=1, site=0) -> Stdf:
        """PIR, a bare PTR per result (the test's first record must come before), PRR."""
        self.pir(head, site)
        for number, value in results.items():
            self.ptr(number, value, head=head, site=site)
        return self.prr(x, y, hard, hard, part_flg, head, site)

    def bin(self, kind: str, number: int, pass_fail: str) -> Stdf:
        return self.add(kind, self.pack("BBHI", 255, 0, number, 1), pass_fail.encode(), cn(f"BIN{number}"))

    def wcr(self, size, height, width, units, center=(0, 0)) -> Stdf:
        return self.add("WCR", self.pack("fffBchhcc", size, height, width, units, b" ", *center, b" ", b" "))

    def bytes(self) -> bytes:
        return b"".join(self.chunks) + self.pack("HBBI", 4, *rec.RECORD_CODES["MRR"], 0)

    def write(self, tmp_path, name: str = "hand.stdf") -> str:
        return write_bytes(tmp_path, name, self.bytes())


def pystdf_records(data: bytes | str) -> list[tuple[str, dict]]:
    """Every record of a file (its bytes or its path) as pystdf decodes it: (name, {field: value});
    left-out fields are None."""
    if isinstance(data, str):
        with open(data, "rb") as f:
            data = f.read()
    records: list[tuple[str, dict]] = []

    class Sink:
        def after_send(self, source, decoded):
            record_type, fields = decoded
            records.append((type(record_type).__name__.upper(), dict(zip(record_type.fieldNames, fields, strict=True))))

    parser = Parser(inp=io.BytesIO(data))
    parser.addSink(Sink())
    parser.parse()
    return records


def oracle_dies(records: list[tuple[str, dict]]) -> pd.DataFrame:
    """Dies from pystdf's records, last test of each x/y winning: a PTR is feature `t{TEST_NUM}`, an
    MPR pin `t{TEST_NUM}_p{RTN_INDX}` (the test's first RTN_INDX where a record has none); values
    RESULT * 10**(the test's first valid RES_SCAL)."""
    scale: dict[tuple[str, int], int] = {}
    pins: dict[int, list[int]] = {}
    open_parts: dict[tuple, dict] = {}
    dies: dict[tuple, dict] = {}
    for name, f in records:
        if name == "PIR":
            open_parts[(f["HEAD_NUM"], f["SITE_NUM"])] = {}
        elif name in ("PTR", "MPR"):
            number, opt = f["TEST_NUM"], f["OPT_FLAG"]
            if (name, number) not in scale and opt is not None and not opt & 1 and f["RES_SCAL"] is not None:
                scale[(name, number)] = f["RES_SCAL"]
            factor = 10.0 ** scale.get((name, number), 0)
            if name == "PTR":
                results = {feature_name(number): f["RESULT"]}
            else:
                if f["RTN_INDX"]:
                    pins.setdefault(number, list(f["RTN_INDX"]))
                indexes = f["RTN_INDX"] or pins[number]
                results = {feature_name(number, p): v for p, v in zip(indexes, f["RTN_RSLT"], strict=False)}
            part = open_parts[(f["HEAD_NUM"], f["SITE_NUM"])]
            part.update({k: np.float32(v * factor) for k, v in results.items()})
        elif name == "PRR":
            tests = open_parts.pop((f["HEAD_NUM"], f["SITE_NUM"]))
            dies[(f["X_COORD"], f["Y_COORD"])] = {
                "x": f["X_COORD"],
                "y": f["Y_COORD"],
                "head": f["HEAD_NUM"],
                "site": f["SITE_NUM"],
                "hard_bin": f["HARD_BIN"],
                "soft_bin": f["SOFT_BIN"],
                "part_id": f["PART_ID"],
                "part_flg": f["PART_FLG"],
                **tests,
            }
    return pd.DataFrame(list(dies.values()))
