"""Readers: one tester file in, whole wafers (one DataFrame of dies each) and the file's program out.

`READERS` maps an input format ("stdf", "parquet") to its reader; `reader_for_path` picks one by
file name (.stdf, .stdf.gz, .stdf.bz2, .parquet). Every reader reads through data/fs.py, so a
gs:// path and a compressed file read like a local plain one. Each `WaferRead` carries the dies in
`REQUIRED_COLUMNS` then one float32 column per test feature, and the `FileProgram` of its file.

A reader raises `InputFileError` naming the file (and the byte offset, where the format has one)
for anything it cannot read; the ingest component applies the bad-file policy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data import fs
from data.program import FileProgram, TestDef, is_test_feature, parse_feature

# Columns every reader must produce for every die; test columns (`data.program.feature_name`) follow.
# `head` and `site` together are the probe-card slot; `sort_pass` is whether the die's bin is good
# by the file's own HBR flags (else its PRR PART_FLG), never by a fixed bin number.
REQUIRED_COLUMNS = ("lot_id", "wafer_id", "part_id", "x", "y", "head", "site", "hard_bin", "soft_bin", "sort_pass")


# A die position of -32768 is STDF's "no coordinate": what final-test (packaged part) files write.
COORD_MISSING = -32768
NO_COORDINATES = "part without die coordinates (X/Y = -32768): a final-test file, not wafer sort?"


class InputFileError(ValueError):
    """A file that cannot be ingested: names the file, the byte offset (if known) and the reason."""

    def __init__(self, path: str, reason: str, offset: int | None = None):
        self.path, self.reason, self.offset = path, reason, offset
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{path}{where}: {reason}")


@dataclasses.dataclass
class WaferRead:
    """One wafer as read from a file, before labels are joined."""

    lot_id: str
    wafer_id: str
    dies: pd.DataFrame
    superseded: int = 0  # retested dies whose earlier results were replaced (last test wins)
    source: str = ""
    program: FileProgram | None = None  # what the file says about its test program (data/program.py)

    @property
    def start_time(self) -> int:
        """When the file's test run started (MIR START_T): orders retests spread over files."""
        return self.program.start_time if self.program else 0


# A reader takes a path and yields the wafers in it.
Reader = Callable[[str], Iterator[WaferRead]]


def last_test_wins(dies: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the last test of each (x, y); return the deduplicated dies and how many were dropped."""
    kept = dies.drop_duplicates(subset=["x", "y"], keep="last")
    return kept.reset_index(drop=True), len(dies) - len(kept)


# Input formats by file name: the suffix after any compression suffix (`W01.stdf.gz` is "stdf").
FORMAT_SUFFIXES = {".stdf": "stdf", ".parquet": "parquet"}
# Every wafer-file name ending each format is read from (data/fs.py decompresses .gz and .bz2).
INPUT_SUFFIXES = {fmt: (suffix, *(suffix + c for c in fs.COMPRESSIONS)) for suffix, fmt in FORMAT_SUFFIXES.items()}
PROGRAM_METADATA_KEY = FileProgram.METADATA_KEY

_INT_COLUMNS = ("x", "y", "head", "site", "hard_bin", "soft_bin")


def format_of_path(path: str) -> str:
    """The input format, "stdf" or "parquet", from a file name: .stdf, .stdf.gz, .stdf.bz2, .parquet, ..."""
    suffix = os.path.splitext(fs.strip_compression(path))[1].lower()
    if suffix not in FORMAT_SUFFIXES:
        names = ", ".join(s for suffixes in INPUT_SUFFIXES.values() for s in suffixes)
        raise ValueError(f"{path}: cannot tell the input format from the file name (one of {names})")
    return FORMAT_SUFFIXES[suffix]


def reader_for_path(path: str) -> Reader:
    """The reader for a file, by its name (`format_of_path`)."""
    return READERS[format_of_path(path)]


def read_input_file(path: str) -> bytes:
    """A wafer file's bytes through data/fs.py (any scheme, decompressed): InputFileError if unreadable."""
    try:
        return fs.read_input(path)
    except fs.ArchiveError as error:
        raise InputFileError(path, str(error)) from error
    except OSError as error:
        raise InputFileError(path, f"cannot open ({error})") from error


def _parquet_program(path: str, table: pa.Table) -> FileProgram:
    """The program in the schema metadata, else tests named by the columns (no names, units, limits)."""
    raw = (table.schema.metadata or {}).get(PROGRAM_METADATA_KEY)
    if raw is not None:
        try:
            return FileProgram.from_dict(json.loads(raw))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            key = PROGRAM_METADATA_KEY.decode()
            raise InputFileError(path, f"corrupt {key} schema metadata ({type(error).__name__}: {error})") from error
    tests = []
    for name in table.column_names:
        if is_test_feature(name):
            number, pin = parse_feature(name)
            tests.append(TestDef(number, "", pin=pin))
    return FileProgram(tests=tests)


def read_parquet_wafer(path: str) -> Iterator[WaferRead]:
    """Columnar wafer file (data/writers.py): one row per die test, in test order.

    Dies in `REQUIRED_COLUMNS` (a missing `head` is 1; a missing `sort_pass` comes from the
    program's good hard bins), then one float32 column per test of the program (NaN where the file
    has none), then any other columns. The program is the schema metadata's `waferflow.file_program`,
    else the test columns the file has."""
    data = read_input_file(path)
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as error:  # pyarrow raises several types for corrupt / non-Parquet input
        raise InputFileError(path, f"not a readable Parquet file ({error})") from error
    derivable = ("head", "sort_pass")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names and c not in derivable]
    if missing:
        raise InputFileError(path, f"missing required columns {missing}")
    program = _parquet_program(path, table)
    frame = table.to_pandas()
    if frame.empty:
        raise InputFileError(path, "contains no dies")
    if "head" not in frame:
        frame["head"] = 1
    if "sort_pass" not in frame:
        if program.good_hard_bins is None:
            raise InputFileError(
                path, "no sort_pass column and no good hard bins in its program metadata: cannot tell which dies passed"
            )
        frame["sort_pass"] = frame["hard_bin"].isin(program.good_hard_bins)
    no_xy = (frame["x"] == COORD_MISSING) | (frame["y"] == COORD_MISSING)
    if no_xy.any():
        raise InputFileError(path, f"row {int(no_xy.to_numpy().argmax())}: {NO_COORDINATES}")
    features = [t.feature for t in program.tests]
    for feature in features:
        if feature not in frame:
            frame[feature] = np.float32(np.nan)
    others = [c for c in frame.columns if c not in REQUIRED_COLUMNS and c not in features]
    frame = frame[[*REQUIRED_COLUMNS, *features, *others]].astype(
        {"lot_id": str, "wafer_id": str, "part_id": str, "sort_pass": bool}
        | dict.fromkeys(_INT_COLUMNS, np.int32)
        | dict.fromkeys(features, np.float32)
    )
    for (lot_id, wafer_id), dies in frame.groupby(["lot_id", "wafer_id"], sort=False):
        dies, superseded = last_test_wins(dies)
        yield WaferRead(str(lot_id), str(wafer_id), dies, superseded, path, program)


def read_stdf(path: str) -> Iterator[WaferRead]:
    """STDF V4 wafer-sort file (data/stdf/reader.py): every wafer in it, retests resolved."""
    # Imported here: data.stdf.reader builds on WaferRead and InputFileError from this module.
    from data.stdf.reader import read_stdf as read

    yield from read(path)


# Input format -> reader.
READERS: dict[str, Reader] = {"stdf": read_stdf, "parquet": read_parquet_wafer}
