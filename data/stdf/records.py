"""STDF V4 record types and flag bits: the parts of the specification this project reads and writes.

Everything here follows the "Standard Test Data Format (STDF) Specification, Version 4" (Teradyne,
2007 revision). A record is a 4-byte header (REC_LEN U2 in the file's byte order, REC_TYP U1,
REC_SUB U1) and REC_LEN bytes of fields; FAR.CPU_TYPE says the byte order of every U2/U4/I2/R4 in
the file (1: big-endian, Sun/Motorola; 2: little-endian, x86). Trailing optional fields of a record
may be left out; a reader must take the record length, not the field list, as the end of a record.
"""

from __future__ import annotations

# (REC_TYP, REC_SUB) -> record name, for every record type of STDF V4 (used to name skipped ones).
RECORD_NAMES: dict[tuple[int, int], str] = {
    (0, 10): "FAR",
    (0, 20): "ATR",
    (0, 30): "VUR",
    (1, 10): "MIR",
    (1, 20): "MRR",
    (1, 30): "PCR",
    (1, 40): "HBR",
    (1, 50): "SBR",
    (1, 60): "PMR",
    (1, 62): "PGR",
    (1, 63): "PLR",
    (1, 70): "RDR",
    (1, 80): "SDR",
    (1, 90): "PSR",
    (1, 91): "NMR",
    (1, 92): "CNR",
    (1, 93): "SSR",
    (1, 94): "CDR",
    (2, 10): "WIR",
    (2, 20): "WRR",
    (2, 30): "WCR",
    (5, 10): "PIR",
    (5, 20): "PRR",
    (10, 30): "TSR",
    (15, 10): "PTR",
    (15, 15): "MPR",
    (15, 20): "FTR",
    (15, 30): "STR",
    (20, 10): "BPS",
    (20, 20): "EPS",
    (50, 10): "GDR",
    (50, 30): "DTR",
}
RECORD_CODES = {name: code for code, name in RECORD_NAMES.items()}


def record_name(rec_typ: int, rec_sub: int) -> str:
    """Name of a record type, e.g. `PTR`; types outside the specification as `REC_180_1`."""
    return RECORD_NAMES.get((rec_typ, rec_sub), f"REC_{rec_typ}_{rec_sub}")


# FAR.CPU_TYPE -> struct byte-order prefix.
CPU_TYPE_ENDIAN = {1: ">", 2: "<"}
STDF_VERSION = 4

# PTR.TEST_FLG bits.
TEST_FLG_ALARM = 0x01
TEST_FLG_RESULT_INVALID = 0x02
TEST_FLG_UNRELIABLE = 0x04
TEST_FLG_TIMEOUT = 0x08
TEST_FLG_NOT_EXECUTED = 0x10
TEST_FLG_ABORTED = 0x20
TEST_FLG_PF_INVALID = 0x40
TEST_FLG_FAIL = 0x80
# A PTR with any of these bits has no usable RESULT: the reader treats the test as not measured.
TEST_FLG_NO_RESULT = TEST_FLG_RESULT_INVALID | TEST_FLG_NOT_EXECUTED | TEST_FLG_ABORTED

# PTR.PARM_FLG bits.
PARM_FLG_SCALE_ERROR = 0x01
PARM_FLG_DRIFT_ERROR = 0x02
PARM_FLG_OSCILLATION = 0x04
PARM_FLG_ABOVE_HIGH = 0x08  # measured value higher than the high test limit
PARM_FLG_BELOW_LOW = 0x10  # measured value lower than the low test limit
PARM_FLG_ALTERNATE_PASS = 0x20
PARM_FLG_LO_EQUAL_PASSES = 0x40  # the low limit comparison was >=, not >
PARM_FLG_HI_EQUAL_PASSES = 0x80  # the high limit comparison was <=, not <

# PTR.OPT_FLAG bits.
OPT_RES_SCAL_INVALID = 0x01  # use RES_SCAL of the first PTR of this test
OPT_RESERVED = 0x02  # reserved, always 1
OPT_NO_LO_SPEC = 0x04
OPT_NO_HI_SPEC = 0x08
OPT_LO_LIMIT_INVALID = 0x10  # use LO_LIMIT / LLM_SCAL of the first PTR of this test
OPT_HI_LIMIT_INVALID = 0x20  # use HI_LIMIT / HLM_SCAL of the first PTR of this test
OPT_NO_LO_LIMIT = 0x40
OPT_NO_HI_LIMIT = 0x80

# PRR.PART_FLG bits.
PART_FLG_SUPERSEDES_ID = 0x01  # replaces an earlier part with the same PART_ID
PART_FLG_SUPERSEDES_XY = 0x02  # replaces an earlier part with the same X_COORD / Y_COORD
PART_FLG_ABNORMAL_END = 0x04
PART_FLG_FAIL = 0x08
PART_FLG_PF_INVALID = 0x10

# WCR.WF_UNITS, and millimetres per unit (0: unknown units).
WF_UNITS_INCH, WF_UNITS_CM, WF_UNITS_MM, WF_UNITS_MIL = 1, 2, 3, 4
MM_PER_WF_UNIT = {WF_UNITS_INCH: "25.4", WF_UNITS_CM: "10", WF_UNITS_MM: "1", WF_UNITS_MIL: "0.0254"}

# HBR.HBIN_PF / SBR.SBIN_PF: the bin is a pass or a fail bin (a space: not said).
BIN_PASS, BIN_FAIL = ord("P"), ord("F")
# I2 coordinate value meaning "no coordinate".
COORD_MISSING = -32768
# U4 count meaning "not known".
COUNT_MISSING = 0xFFFFFFFF
# Head number of summary HBR / SBR / PCR records (all heads and sites together).
ALL_HEADS = 255
