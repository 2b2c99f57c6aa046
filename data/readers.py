"""Readers: one tester file in, whole wafers (one DataFrame of dies each) out.

A reader raises `InputFileError` naming the file (and the byte offset, where the format has one)
for anything it cannot read; the ingest component applies the bad-file policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pandas as pd
import pyarrow.parquet as pq

# Columns every reader must produce for every die; tests and other columns follow.
REQUIRED_COLUMNS = ("lot_id", "wafer_id", "x", "y", "site", "hard_bin", "soft_bin")


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


# A reader takes a path and yields the wafers in it.
Reader = Callable[[str], Iterator[WaferRead]]


def last_test_wins(dies: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the last test of each (x, y); return the deduplicated dies and how many were dropped."""
    kept = dies.drop_duplicates(subset=["x", "y"], keep="last")
    return kept.reset_index(drop=True), len(dies) - len(kept)


def read_parquet_wafer(path: str) -> Iterator[WaferRead]:
    """Columnar wafer file (data/writers.py): one row per die test, in test order."""
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt / non-Parquet input
        raise InputFileError(path, f"not a readable Parquet file ({error})") from error
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise InputFileError(path, f"missing required columns {missing}")
    frame = table.to_pandas()
    if frame.empty:
        raise InputFileError(path, "contains no dies")
    for (lot_id, wafer_id), dies in frame.groupby(["lot_id", "wafer_id"], sort=False):
        dies, superseded = last_test_wins(dies)
        yield WaferRead(str(lot_id), str(wafer_id), dies, superseded, path)


READERS: dict[str, Reader] = {"parquet": read_parquet_wafer}


def read_stdf(path: str) -> Iterator[WaferRead]:
    """STDF V4 wafer-sort file (data/stdf/reader.py): every wafer in it, retests resolved."""
    # Imported here: data.stdf.reader builds on WaferRead and InputFileError from this module.
    from data.stdf.reader import read_stdf as read

    yield from read(path)


READERS["stdf"] = read_stdf
