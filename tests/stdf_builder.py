"""STDF V4 files packed record by record in a test: for the cases the project's writer cannot
produce (other testers' programs, several heads, parts without coordinates, ...)."""

from __future__ import annotations

import struct

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


