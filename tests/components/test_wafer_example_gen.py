"""WaferExampleGen: construction, and Executor().Do() on small real files."""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from components.wafer_example_gen import executor
from components.wafer_example_gen.component import WaferExampleGen
from data.test_program import PARAMETRIC_FEATURES
from tests.example_gen_harness import run_example_gen


def run_executor(input_base: str, out: str, policy: str = "fail") -> tuple[dict, dict[str, list]]:
    return run_example_gen(executor.Executor, input_base, out, input_format="parquet",
                           input_pattern="wafers/*/*.parquet", policy=policy)


def _value(example: tf.train.Example, key: str):
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    return getattr(feature, kind).value[0] if kind else None


def test_component_construction():
    gen = WaferExampleGen(input_base="/data", bad_file_policy="quarantine")
    assert gen.exec_properties["input_format"] == "parquet"
    assert gen.exec_properties["bad_file_policy"] == "quarantine"
    assert gen.outputs["examples"].type_name == "Examples"
    with pytest.raises(ValueError, match="bad_file_policy"):
        WaferExampleGen(input_base="/data", bad_file_policy="ignore")
    with pytest.raises(ValueError, match="input_format"):
        WaferExampleGen(input_base="/data", input_format="csv")


def test_every_die_is_accounted_for_and_lots_never_straddle_splits(small_dataset, tmp_path):
    report, splits = run_executor(small_dataset, str(tmp_path / "out"))
    manifest = json.load(open(os.path.join(small_dataset, "manifest.json")))
    assert report["dies_read"] == manifest["dies"]
    assert report["examples"] == manifest["sort_pass"] == sum(len(v) for v in splits.values())
    assert report["excluded_sort_fail"] == manifest["dies"] - manifest["sort_pass"]
    assert report["balanced"] and report["rejected_no_label"] == 0
    assert report["examples_per_split"] == {k: len(v) for k, v in splits.items()}
    lots = {k: {_value(e, "lot_id") for e in v} for k, v in splits.items()}
    assert lots["train"] and lots["eval"] and not lots["train"] & lots["eval"]
    example = splits["train"][0]
    for key in ("lot_id", "wafer_id", "x", "y", "site", "hard_bin", "ft_fail", "n_fail_neighbors",
                "wafer_yield", *PARAMETRIC_FEATURES):
        assert key in example.features.feature, key


def test_missing_labels_and_missing_tests_are_counted_not_zeroed(small_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    label_file = sorted(glob.glob(str(data / "labels" / "*.parquet")))[0]
    labels = pd.read_parquet(label_file)
    pd.read_parquet(label_file).iloc[10:].to_parquet(label_file)  # 10 dies lose their label
    wafer_file = sorted(glob.glob(str(data / "wafers" / "*" / "*.parquet")))[0]
    wafer = pd.read_parquet(wafer_file)
    target = labels.iloc[20]
    row = (wafer.x == target.x) & (wafer.y == target.y)
    wafer.loc[row, PARAMETRIC_FEATURES[3]] = np.nan  # a labelled pass die missing one test
    wafer.to_parquet(wafer_file)

    report, splits = run_executor(str(data), str(tmp_path / "out"))
    assert report["rejected_no_label"] == 10 and report["balanced"]
    (die,) = [e for v in splits.values() for e in v
              if _value(e, "wafer_id") == target.wafer_id.encode()
              and (_value(e, "x"), _value(e, "y")) == (target.x, target.y)]
    assert PARAMETRIC_FEATURES[3] not in die.features.feature
    assert PARAMETRIC_FEATURES[4] in die.features.feature


def _with_bad_file(dataset: str, tmp_path, name: str, content: bytes) -> str:
    """A copy of `dataset` with one unreadable wafer file added; returns the copy's path."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    bad = data / "wafers" / "BAD" / name
    bad.parent.mkdir()
    bad.write_bytes(content)
    return str(data)


def test_bad_file_fails_the_run_naming_the_file(small_dataset, tmp_path):
    data = _with_bad_file(small_dataset, tmp_path, "truncated.parquet", b"PAR1 truncated")
    with pytest.raises(Exception, match="truncated.parquet"):
        run_executor(data, str(tmp_path / "out"), policy="fail")


def test_bad_file_is_quarantined_and_reported(small_dataset, tmp_path):
    data = _with_bad_file(small_dataset, tmp_path, "garbage.parquet", b"not parquet at all")
    report, splits = run_executor(data, str(tmp_path / "out"), policy="quarantine")
    assert report["files_quarantined"] == 1
    assert report["quarantined"][0]["file"].endswith("garbage.parquet")
    assert "not a readable Parquet" in report["quarantined"][0]["error"]
    assert report["files_read"] == len(glob.glob(f"{small_dataset}/wafers/*/*.parquet"))
    assert sum(len(v) for v in splits.values()) == report["examples"] > 0
