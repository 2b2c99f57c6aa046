"""WaferMapExampleGen: construction, and Executor().Do() (a real Beam run) on small generated sets."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from components.wafer_map_example_gen import executor
from components.wafer_map_example_gen.component import WaferMapExampleGen
from data.patterns import (
    LABEL_KEY,
    LOT_KEY,
    MAP_CHANNELS,
    MAP_KEY,
    MAP_SIZE,
    PATTERN_CLASSES,
    PRODUCT_KEY,
    SIDECAR_PATTERN,
    WAFER_KEY,
    multi_hot_to_labels,
    read_sidecar,
)
from data.readers import read_stdf
from data.synthetic import GeneratorConfig
from data.wafer_maps import MapGeometry, fixed_map
from data.writers import write_dataset
from tests.example_gen_harness import IN_MEMORY, run_example_gen

# 6 lots so that each of the three lot-disjoint splits gets some; mixed and single patterns.
MAPS = GeneratorConfig(lots=6, wafers_per_lot=4, seed=21, patterns=True, maps_only=True, defect_wafer_share=0.6)


@pytest.fixture(scope="module")
def maps_dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("map_dataset"))
    write_dataset(MAPS, out, "stdf")
    return out


def run_executor(input_base: str, out: str, **kwargs) -> tuple[dict, dict[str, list[tf.train.Example]]]:
    return run_example_gen(
        executor.Executor,
        input_base,
        out,
        input_format=kwargs.pop("input_format", "stdf"),
        input_pattern=kwargs.pop("input_pattern", "wafers/*/*.stdf"),
        labels_pattern=SIDECAR_PATTERN,
        **kwargs,
    )


def _bytes(example: tf.train.Example, key: str) -> str:
    return example.features.feature[key].bytes_list.value[0].decode()


def sidecar_labels(dataset: str) -> dict:
    labels = {}
    for path in glob.glob(os.path.join(dataset, "patterns", "*.csv")):
        labels.update(read_sidecar(path))
    return labels


def test_component_construction():
    gen = WaferMapExampleGen(input_base="/data")
    assert gen.exec_properties["input_format"] == "stdf"
    assert gen.exec_properties["labels_pattern"] == "patterns/*.csv"
    assert gen.exec_properties["edge_exclusion_mm"] == 3.0
    assert gen.outputs["examples"].type_name == "Examples"
    with pytest.raises(ValueError, match="bad_file_policy"):
        WaferMapExampleGen(input_base="/data", bad_file_policy="ignore")
    with pytest.raises(ValueError, match="edge_exclusion_mm"):
        WaferMapExampleGen(input_base="/data", edge_exclusion_mm=-1)


def test_one_map_per_wafer_labels_from_the_sidecar_lots_disjoint(maps_dataset, tmp_path):
    report, splits = run_executor(maps_dataset, str(tmp_path / "out"))
    n_wafers = MAPS.lots * MAPS.wafers_per_lot
    assert report["wafers_read"] == report["examples"] == n_wafers and report["balanced"]
    assert report["rejected_no_label"] == report["orphan_labels"] == 0
    assert report["examples_per_split"] == {k: len(v) for k, v in splits.items()}
    everything = [e for v in splits.values() for e in v]
    keys = [(_bytes(e, LOT_KEY), _bytes(e, WAFER_KEY)) for e in everything]
    assert len(set(keys)) == len(keys) == n_wafers  # one example per wafer
    lots = {k: {_bytes(e, LOT_KEY) for e in v} for k, v in splits.items()}
    assert all(lots.values())
    assert not (lots["train"] & lots["validation"] or lots["train"] & lots["test"] or lots["validation"] & lots["test"])
    labels = sidecar_labels(maps_dataset)
    assert any(len(c) == 2 for c in labels.values()) and any(not c for c in labels.values())
    by_key = dict(zip(keys, everything, strict=True))
    for key, example in by_key.items():
        assert set(example.features.feature) == {MAP_KEY, LABEL_KEY, PRODUCT_KEY, LOT_KEY, WAFER_KEY}
        values = example.features.feature[MAP_KEY].float_list.value
        assert len(values) == MAP_SIZE * MAP_SIZE * len(MAP_CHANNELS)
        vector = list(example.features.feature[LABEL_KEY].int64_list.value)
        assert len(vector) == len(PATTERN_CLASSES)
        assert multi_hot_to_labels(vector) == (labels[key] or ("none",))
        assert _bytes(example, PRODUCT_KEY) == "WF7N"
    # The map in the example is the map builder's of the file, row-major (H, W, C).
    lot_id, wafer_id = keys[0]
    (read,) = read_stdf(os.path.join(maps_dataset, "wafers", lot_id, f"{wafer_id}.stdf"))
    expected = fixed_map(read.dies, MapGeometry.from_program(read.program, read.source))
    got = np.array(by_key[keys[0]].features.feature[MAP_KEY].float_list.value, dtype=np.float32)
    np.testing.assert_array_equal(got.reshape(MAP_SIZE, MAP_SIZE, len(MAP_CHANNELS)), expected)


def test_a_wafer_without_a_label_is_counted_and_listed_not_lost(maps_dataset, tmp_path):
    dataset = str(tmp_path / "data")
    shutil.copytree(maps_dataset, dataset)
    sidecar = sorted(glob.glob(os.path.join(dataset, "patterns", "*.csv")))[0]
    lines = open(sidecar).read().splitlines()
    dropped = lines[1].split(",")[:2]
    with open(sidecar, "w") as f:
        f.write("\n".join([lines[0], *lines[2:]]) + "\n")
    report, splits = run_executor(dataset, str(tmp_path / "out"))
    assert report["rejected_no_label"] == 1 and report["balanced"]
    assert report["examples"] == MAPS.lots * MAPS.wafers_per_lot - 1 == sum(len(v) for v in splits.values())
    assert [[w["lot_id"], w["wafer_id"]] for w in report["unlabelled"]] == [dropped]


def test_an_unknown_class_in_the_sidecar_fails_naming_the_file(maps_dataset, tmp_path):
    dataset = str(tmp_path / "data")
    shutil.copytree(maps_dataset, dataset)
    sidecar = sorted(glob.glob(os.path.join(dataset, "patterns", "*.csv")))[0]
    text = open(sidecar).read().splitlines()
    text[1] = ",".join([*text[1].split(",")[:2], "Blob"])
    with open(sidecar, "w") as f:
        f.write("\n".join(text) + "\n")
    with pytest.raises(
        Exception, match=rf"{os.path.basename(sidecar)} line 2: .*unknown pattern class\(es\) \['Blob'\]"
    ):
        run_executor(dataset, str(tmp_path / "out"))


def test_parquet_input_with_a_full_pattern_mode_dataset_split_by_time(tmp_path):
    """The full generator's pattern mode (parametric tests too), as Parquet: the same maps, by time."""
    dataset = str(tmp_path / "data")
    config = GeneratorConfig(lots=3, wafers_per_lot=2, seed=4, patterns=True, product="MX3A")
    write_dataset(config, dataset, "parquet")
    report, splits = run_executor(
        dataset, str(tmp_path / "out"), input_format="parquet", input_pattern="wafers/*/*.parquet", split_by="time"
    )
    assert report["examples"] == 6 and report["balanced"]
    assert {len(v) for v in splits.values()} == {2}  # one lot of two wafers in each split
    labels = sidecar_labels(dataset)
    for example in (e for v in splits.values() for e in v):
        key = (_bytes(example, LOT_KEY), _bytes(example, WAFER_KEY))
        vector = list(example.features.feature[LABEL_KEY].int64_list.value)
        assert multi_hot_to_labels(vector) == (labels[key] or ("none",))
        assert _bytes(example, PRODUCT_KEY) == "MX3A"


def test_runs_in_a_tfx_pipeline_with_tfx_driver_and_cache(maps_dataset, tmp_path):
    """The component in a real one-component pipeline (LocalDagRunner, SQLite MLMD): TFX's
    FileBasedDriver fingerprints the files, and a second run on the same files is a cache hit."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    db = str(tmp_path / "mlmd.sqlite")

    def run() -> None:
        pipeline = tfx_pipeline.Pipeline(
            pipeline_name="maps",
            pipeline_root=str(tmp_path / "root"),
            components=[WaferMapExampleGen(input_base=maps_dataset)],
            enable_cache=True,
            metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
            beam_pipeline_args=list(IN_MEMORY),
        )
        LocalDagRunner().run(pipeline)

    run()
    run()
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    states = [e.last_known_state for e in store.get_executions()]
    assert states == [metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED]
    (examples,) = store.get_artifacts_by_type("Examples")
    assert examples.custom_properties["examples"].int_value == MAPS.lots * MAPS.wafers_per_lot
    assert examples.custom_properties["rejected_no_label"].int_value == 0
