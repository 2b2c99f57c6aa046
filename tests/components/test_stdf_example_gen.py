"""StdfExampleGen: construction, and Executor().Do() on small STDF files written here."""

from __future__ import annotations

import shutil

import pytest

from components.stdf_example_gen import executor
from components.stdf_example_gen.component import StdfExampleGen
from components.wafer_example_gen.component import WaferExampleGen
from data.geometry import WaferGeometry
from data.stdf.writer import encode_wafer, write_stdf_wafer
from data.synthetic import GeneratorConfig, generate
from data.test_program import PARAMETRIC_FEATURES
from data.writers import write_dataset
from tests.example_gen_harness import run_example_gen

CONFIG = GeneratorConfig(lots=4, wafers_per_lot=1, seed=11, geometry=WaferGeometry(diameter_mm=120.0))


@pytest.fixture(scope="module")
def stdf_dataset(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("stdf_dataset"))
    return out, write_dataset(CONFIG, out, "stdf")


def run_executor(input_base: str, out: str, policy: str = "fail", input_format: str = "stdf") -> tuple[dict, list]:
    report, splits = run_example_gen(executor.Executor, input_base, out, input_format=input_format,
                                     input_pattern=executor.INPUT_PATTERN, policy=policy)
    return report, [e for split in splits.values() for e in split]


def test_component_construction():
    gen = StdfExampleGen(input_base="/data", bad_file_policy="quarantine")
    assert isinstance(gen, WaferExampleGen)
    assert gen.exec_properties["input_format"] == "stdf"
    assert gen.exec_properties["bad_file_policy"] == "quarantine"
    assert "wafers/*/*.stdf" in gen.exec_properties["input_config"]
    assert gen.executor_spec.executor_class is executor.Executor
    assert gen.outputs["examples"].type_name == "Examples"
    # A drop-in for the pipeline's one ExampleGen node, under that node's id.
    assert gen.with_id("WaferExampleGen").id == "WaferExampleGen"
    with pytest.raises(ValueError, match="bad_file_policy"):
        StdfExampleGen(input_base="/data", bad_file_policy="ignore")


def test_stdf_files_become_examples_with_retests_and_a_quarantined_file(stdf_dataset, tmp_path):
    source, manifest = stdf_dataset
    data = tmp_path / "data"
    shutil.copytree(source, data)
    # One wafer is probed a second time on three dies; the file now carries both tests of each.
    wafer = next(generate(CONFIG))
    retests = wafer.dies.iloc[[3, 10, 20]]
    write_stdf_wafer(wafer, str(data / "wafers" / wafer.lot_id), retests=retests)
    # And one file was cut short by a tester crash.
    bad = data / "wafers" / "CRASHED" / "W99.stdf"
    bad.parent.mkdir()
    bad.write_bytes(encode_wafer(wafer)[:5000])

    report, examples = run_executor(str(data), str(tmp_path / "out"), policy="quarantine")
    assert report["files_read"] == len(manifest["wafers"]) and report["files_quarantined"] == 1
    (quarantined,) = report["quarantined"]
    assert quarantined["file"].endswith("W99.stdf")
    assert "truncated file" in quarantined["error"] and "byte offset" in quarantined["error"]
    assert report["superseded_retests"] == 3
    assert report["dies_read"] == manifest["dies"] + 3
    assert report["examples"] == manifest["sort_pass"] == len(examples)
    assert report["excluded_sort_fail"] == manifest["dies"] - manifest["sort_pass"]
    assert report["balanced"] and report["rejected_no_label"] == 0
    # Summary records the reader reads past are counted per type across all files read.
    assert report["skipped_records"] == {r: report["files_read"] for r in ("HBR", "PCR", "SBR", "SDR", "WCR")}
    example = examples[0].features.feature
    for key in (
        "lot_id",
        "wafer_id",
        "part_id",
        "x",
        "y",
        "site",
        "hard_bin",
        "soft_bin",
        "ft_fail",
        "n_fail_neighbors",
        "wafer_yield",
    ):
        assert key in example, key
    assert sum(key in example for key in PARAMETRIC_FEATURES) == len(PARAMETRIC_FEATURES)  # a passing die
    assert example["x"].int64_list.value and example[PARAMETRIC_FEATURES[0]].float_list.value


def test_bad_stdf_file_fails_the_run_naming_file_and_offset(stdf_dataset, tmp_path):
    source, _ = stdf_dataset
    data = tmp_path / "data"
    shutil.copytree(source, data)
    (data / "wafers" / "BAD").mkdir()
    (data / "wafers" / "BAD" / "notes.stdf").write_bytes(b"lot notes, not a tester file")
    with pytest.raises(Exception, match=r"notes\.stdf at byte offset 0: not an STDF file"):
        run_executor(str(data), str(tmp_path / "out"), policy="fail")


def test_executor_refuses_other_formats(stdf_dataset, tmp_path):
    source, _ = stdf_dataset
    with pytest.raises(ValueError, match="STDF files only"):
        run_executor(source, str(tmp_path / "out"), input_format="parquet")
