"""Readers: good files, retests, bad input with clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from data.readers import InputFileError, last_test_wins, read_parquet_wafer


def test_reads_whole_wafers(small_dataset):
    import glob

    path = sorted(glob.glob(f"{small_dataset}/wafers/*/*.parquet"))[0]
    (wafer,) = list(read_parquet_wafer(path))
    assert wafer.wafer_id in path and len(wafer.dies) > 400 and wafer.superseded == 0


def test_last_test_wins_counts_superseded():
    dies = pd.DataFrame({"x": [0, 1, 0], "y": [0, 0, 0], "hard_bin": [3, 1, 1]})
    kept, superseded = last_test_wins(dies)
    assert superseded == 1
    assert kept.set_index(["x", "y"]).loc[(0, 0), "hard_bin"] == 1


def test_not_parquet_names_the_file(tmp_path):
    path = tmp_path / "W01.parquet"
    path.write_bytes(b"this is not a parquet file")
    with pytest.raises(InputFileError, match="W01.parquet.*not a readable Parquet"):
        list(read_parquet_wafer(str(path)))


def test_missing_columns_named(tmp_path):
    path = tmp_path / "W02.parquet"
    pd.DataFrame({"x": [0], "y": [0]}).to_parquet(path)
    with pytest.raises(InputFileError, match="W02.parquet.*missing required columns.*lot_id"):
        list(read_parquet_wafer(str(path)))
