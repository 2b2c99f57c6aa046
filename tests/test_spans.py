"""New lots every day: spans, the rolling training window, the drift gate (issue 12).

One pipeline, four runs on one output directory, as a fab would run it on successive days:
day 1 ingests span 1; day 2 a new span 2 (a new ExampleGen execution; span 1 is not read again)
and trains on both; day 2 again is all cache hits; day 3 brings span 3 with the threshold voltage
moved by 1.5 population sigmas, which the drift check sees and which is therefore not blessed or
pushed. Small and cheap: 4 lots x 2 wafers per span, no Tuner, no exports, no report, one Beam
worker (examples written in the same order every run, so each run trains the same weights).

The drift check runs at its default bound, 0.2: undrifted spans of this size read a largest
Jensen-Shannon divergence of 0.05-0.10 over the tests, the 1.5-sigma shift 0.24-0.38 (seeds 7-9;
components/drift_check/executor.py). After day 1 the inferred schema is exported, as a reviewer
would keep it, and days 2 and 3 validate their spans against it (ImportSchemaGen).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from components.drift_check.executor import check
from components.resolver_strategies import latest_spans
from data.synthetic import GeneratorConfig
from data.writers import span_folder, write_dataset
from pipeline import local_runner, schema
from pipeline.config import RunConfig

pytestmark = pytest.mark.e2e

DRIFT_PER_SPAN = 0.5  # span 3: threshold voltage moved by 3 x 0.5 = 1.5 sigmas against spans 1 and 2


def _write_span(data_dir: str, span: int, drift_per_span: float = 0.0) -> None:
    config = GeneratorConfig(lots=4, wafers_per_lot=2, seed=7, span=span, drift_per_span=drift_per_span)
    write_dataset(config, os.path.join(data_dir, span_folder(span)), "stdf")


def _store(config: RunConfig):
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    return metadata_store.MetadataStore(connection)


def _example_gen_executions(config: RunConfig) -> list:
    store = _store(config)
    context = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.WaferExampleGen")
    return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("spans")
    data_dir = str(root / "data")
    config = RunConfig(
        output_dir=str(root / "out"),
        data_dir=data_dir,
        spans=True,
        span_window=2,
        epochs=6,
        enable_tuning=False,
        export_tflite=False,
        export_onnx=False,
        report=False,
        min_auc=0.0,
        direct_running_mode="in_memory",
        direct_num_workers=1,
    )
    _write_span(data_dir, 1)
    day1 = local_runner.run(config)
    curated = schema.export_schema(config.metadata_path, config.pipeline_name, str(root / "schema" / "schema.pbtxt"))
    config = dataclasses.replace(config, schema_file=curated)
    _write_span(data_dir, 2)
    day2 = local_runner.run(config)
    day2_executions = _example_gen_executions(config)
    day2_again = local_runner.run(config)
    _write_span(data_dir, 3, DRIFT_PER_SPAN)
    day3 = local_runner.run(config)
    return config, day1, day2, day2_executions, day2_again, day3


def test_each_day_ingests_only_its_new_span_and_trains_on_the_window(days):
    config, day1, day2, day2_executions, _, _ = days
    assert day1["span"] == 1 and day1["training_spans"] == [1]
    assert day1["drift"]["compared"] is False
    # Day 2: one more ExampleGen execution, for span 2 only; the Transform (so the Tuner and the
    # Trainer after it) read spans 1 and 2, span 1 from day 1's artifact.
    assert len(day2_executions) == 2
    assert day2["components"]["WaferExampleGen"] == "complete"
    assert day2["span"] == 2 and day2["training_spans"] == [1, 2]
    assert day2["examples_per_split"]["train"] > 0


def test_an_undrifted_span_is_compared_passed_and_pushed(days):
    _, day1, day2, _, _, _ = days
    drift = day2["drift"]
    assert drift["compared"] and not drift["drifted"], drift["features"][:5]
    assert 0 < drift["max_js"] < drift["js_bound"] and drift["reference_spans"] == [1]
    assert day2["blessed"] and not day2["blessing_withheld"]
    assert day2["pushed_model"] and day2["pushed_model"] != day1["pushed_model"]


def test_later_spans_are_validated_against_the_curated_schema(days):
    """Day 1's schema, exported (identifiers accept any value), is imported on days 2 and 3:
    new lots are not anomalies, and the curated schema is what the Transform and Trainer use."""
    _, day1, day2, _, _, day3 = days
    assert "SchemaGen" in day1["components"] and "ImportSchemaGen" in day2["components"]
    for day in (day2, day3):
        assert day["anomalies"] and not any(day["anomalies"].values()), day["anomalies"]


def test_the_same_day_again_is_all_cache_hits(days):
    _, _, day2, _, day2_again, _ = days
    ran = {k: v for k, v in day2_again["components"].items() if not k.endswith("_resolver")}
    assert set(ran.values()) == {"cached"}, ran
    assert day2_again["pushed_model"] == day2["pushed_model"]


def test_a_drifted_span_is_not_blessed_or_pushed_and_says_why(days):
    config, day1, day2, _, _, day3 = days
    drift = day3["drift"]
    assert drift["compared"] and drift["drifted"]
    assert drift["max_js"] > drift["js_bound"] and drift["reference_spans"] == [2]
    assert all(name.startswith("t") for name in drift["drifted_features"])  # the tests, not derived features
    assert day3["span"] == 3 and day3["training_spans"] == [2, 3]
    assert day3["blessed"] is False
    assert "data drift" in day3["blessing_withheld"] and drift["drifted_features"][0] in day3["blessing_withheld"]
    assert day3["pushed_model"] is None
    # No new version: the newest served model is still day 2's.
    pushed = sorted(os.path.basename(day["pushed_model"]) for day in (day1, day2))
    assert sorted(os.listdir(config.serving_model_dir)) == pushed


def test_latest_spans_keeps_the_newest_ingest_of_each_span():
    def Fake(id_: int, span: int):  # noqa: N802 (reads like the artifacts it makes)
        artifact = standard_artifacts.Examples()
        artifact.id = id_
        artifact.set_int_custom_property("span", span)
        return artifact

    a = [Fake(1, 1), Fake(2, 2), Fake(3, 2), Fake(4, 3), Fake(5, 1)]

    def ids_and_spans(artifacts):
        return [(x.id, x.get_int_custom_property("span")) for x in artifacts]

    assert ids_and_spans(latest_spans(a, 2)) == [(4, 3), (3, 2)]
    assert ids_and_spans(latest_spans(a, 5)) == [(4, 3), (3, 2), (5, 1)]
    with pytest.raises(ValueError, match="num_spans"):
        latest_spans(a, 0)


def test_first_run_drift_record_has_no_comparison():
    record = check(current=None, references=[], schema=None, js_bound=0.1)
    assert record == {"compared": False, "drifted": False, "js_bound": 0.1, "features": [], "drifted_features": []}
