"""Readers: Parquet files and their program, the format registry, the filesystem layer, bad input."""

from __future__ import annotations

import glob
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data import fs
from data.program import FileProgram, TestDef
from data.readers import (
    PROGRAM_METADATA_KEY,
    READERS,
    REQUIRED_COLUMNS,
    InputFileError,
    format_of_path,
    last_test_wins,
    read_parquet_wafer,
    reader_for_path,
)

PROGRAM = {
    "tests": [TestDef(5, "Vth", "mV", 300.0, 450.0).to_dict(), TestDef(120, "VOH", "V", 0.4, None, pin=3).to_dict()],
    "good_hard_bins": [7],
    "good_soft_bins": [70, 71],
    "revision": {"PART_TYP": "ACME77", "JOB_NAM": "acme_ws", "JOB_REV": "C3"},
    "start_time": 1_700_000_000,
    "wcr": None,
}


def dies(**columns) -> pd.DataFrame:
    """Three dies of lot L1, wafer W1 in the required columns but head and sort_pass; `columns` added."""
    frame = pd.DataFrame(
        {
            "lot_id": ["L1"] * 3,
            "wafer_id": ["W1"] * 3,
            "part_id": ["a", "b", "c"],
            "x": [0, 1, 2],
            "y": [0, 0, 0],
            "site": [0, 1, 0],
            "hard_bin": [7, 3, 1],
            "soft_bin": [70, 300, 1],
        }
    )
    return frame.assign(**columns)


def parquet_bytes(frame: pd.DataFrame, program: dict | None = None) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if program is not None:
        table = table.replace_schema_metadata({**table.schema.metadata, PROGRAM_METADATA_KEY: json.dumps(program)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write(tmp_path, name: str, data: bytes) -> str:
    path = str(tmp_path / name)
    fs.write_bytes(path, data)
    return path


def read(path: str):
    (wafer,) = list(read_parquet_wafer(path))
    return wafer


def test_reads_whole_wafers_and_their_program(small_dataset):
    path = sorted(glob.glob(f"{small_dataset}/wafers/*/*.parquet"))[0]
    wafer = read(path)
    assert wafer.wafer_id in path and len(wafer.dies) > 400 and wafer.superseded == 0
    assert list(wafer.dies.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    features = [t.feature for t in wafer.program.tests]
    assert features and list(wafer.dies.columns[len(REQUIRED_COLUMNS) :]) == features
    assert all(t.name and t.units for t in wafer.program.tests)


def test_parquet_program_from_the_schema_metadata(tmp_path):
    wafer = read(write(tmp_path, "W1.parquet", parquet_bytes(dies(t5=[310.0, 320.0, 330.0], temp=25.0), PROGRAM)))
    assert wafer.program == FileProgram(
        tests=[TestDef(5, "Vth", "mV", 300.0, 450.0), TestDef(120, "VOH", "V", 0.4, None, pin=3)],
        good_hard_bins=[7],
        good_soft_bins=[70, 71],
        revision=PROGRAM["revision"],
        start_time=1_700_000_000,
    )
    assert wafer.start_time == 1_700_000_000
    frame = wafer.dies
    # Required columns, the program's features (one the file lacks: all NaN), then the rest.
    assert list(frame.columns) == [*REQUIRED_COLUMNS, "t5", "t120_p3", "temp"]
    assert frame["head"].tolist() == [1, 1, 1]  # no head column: one test head
    assert frame["sort_pass"].tolist() == [True, False, False]  # good bin 7 from the program, not bin 1
    assert frame["t120_p3"].isna().all() and frame["t5"].dtype == np.float32 and frame["x"].dtype == np.int32


def test_parquet_without_program_metadata_takes_tests_from_the_column_names(tmp_path):
    frame = dies(head=[1, 2, 1], sort_pass=[True, True, False], t5=1.0, t120_p3=2.0, t_other=3.0, temp=25.0)
    wafer = read(write(tmp_path, "W1.parquet", parquet_bytes(frame)))
    assert wafer.program == FileProgram(tests=[TestDef(5, ""), TestDef(120, "", pin=3)])
    assert wafer.dies["head"].tolist() == [1, 2, 1] and wafer.dies["sort_pass"].tolist() == [True, True, False]
    assert list(wafer.dies.columns[len(REQUIRED_COLUMNS) :]) == ["t5", "t120_p3", "t_other", "temp"]


def test_parquet_without_sort_pass_or_good_bins_cannot_tell_who_passed(tmp_path):
    path = write(tmp_path, "W1.parquet", parquet_bytes(dies(t5=1.0)))
    with pytest.raises(InputFileError, match="W1.parquet: no sort_pass column and no good hard bins"):
        read(path)


def test_parquet_part_without_die_coordinates(tmp_path):
    path = write(tmp_path, "FT.parquet", parquet_bytes(dies(x=[0, -32768, 2]), PROGRAM))
    with pytest.raises(InputFileError, match=r"FT.parquet: row 1: part without die coordinates \(X/Y = -32768\)"):
        read(path)


def test_parquet_through_a_ram_filesystem_and_gzip(tmp_path):
    data = parquet_bytes(dies(t5=[310.0, 320.0, 330.0]), PROGRAM)
    local = read(write(tmp_path, "W1.parquet", data))
    for path, content in (("ram://parquet/W1.parquet", data), ("ram://parquet/W1.parquet.gz", gzip.compress(data))):
        fs.write_bytes(path, content)
        wafer = reader_for_path(path)(path)
        pd.testing.assert_frame_equal(next(wafer).dies, local.dies)


def test_last_test_wins_counts_superseded():
    frame = pd.DataFrame({"x": [0, 1, 0], "y": [0, 0, 0], "hard_bin": [3, 1, 1]})
    kept, superseded = last_test_wins(frame)
    assert superseded == 1
    assert kept.set_index(["x", "y"]).loc[(0, 0), "hard_bin"] == 1


def test_not_parquet_names_the_file(tmp_path):
    path = write(tmp_path, "W01.parquet", b"this is not a parquet file")
    with pytest.raises(InputFileError, match="W01.parquet.*not a readable Parquet"):
        read(path)
    with pytest.raises(InputFileError, match="W03.parquet: cannot open"):
        read(str(tmp_path / "W03.parquet"))


def test_missing_columns_named(tmp_path):
    path = write(tmp_path, "W02.parquet", parquet_bytes(pd.DataFrame({"x": [0], "y": [0]})))
    with pytest.raises(InputFileError, match="W02.parquet.*missing required columns.*lot_id"):
        read(path)


@pytest.mark.parametrize(
    "path,fmt",
    [
        ("wafers/L1/W01.stdf", "stdf"),
        ("gs://bucket/wafers/L1/W01.STDF.gz", "stdf"),
        ("W01.stdf.bz2", "stdf"),
        ("W01.parquet", "parquet"),
    ],
)
def test_format_and_reader_from_the_file_name(path, fmt):
    assert format_of_path(path) == fmt and reader_for_path(path) is READERS[fmt]


def test_an_unknown_file_name_says_what_it_accepts():
    with pytest.raises(ValueError, match=r"W01.csv.gz: cannot tell the input format .*\.stdf\.gz"):
        format_of_path("W01.csv.gz")


def test_filesystem_layer_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        fs.read_bytes(str(tmp_path / "missing.stdf"))
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("ram://nowhere/missing.stdf")
    assert fs.decompress("W.stdf", b"raw") == b"raw" and fs.strip_compression("W.stdf.gz") == "W.stdf"
    with pytest.raises(fs.ArchiveError, match="corrupt gzip archive"):
        fs.decompress("W.stdf.gz", b"not gzip")


def test_the_stdf_reader_does_not_load_tensorflow():
    # Local files never need TensorFlow: importing it costs seconds on every Beam worker.
    code = "import sys, data.readers, data.stdf.reader; sys.exit('tensorflow' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
