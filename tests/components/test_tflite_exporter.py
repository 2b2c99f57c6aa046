"""TFLiteExporter: construction, and Executor().Do() on a small real trained model."""

from __future__ import annotations

import json
import os

import pytest
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.model_export import REPORT_FILE
from components.tflite_exporter import executor
from components.tflite_exporter.component import TFLiteExporter, TFLiteModel
from tests.export_harness import exporter_inputs


def _channels():
    return (
        tfx.dsl.Channel(type=standard_artifacts.Model),
        tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
        tfx.dsl.Channel(type=standard_artifacts.Examples),
    )


def test_component_construction():
    model, blessing, examples = _channels()
    exporter = TFLiteExporter(model=model, model_blessing=blessing, examples=examples, quantize_int8=True)
    assert exporter.exec_properties[executor.QUANTIZE_INT8_KEY] == 1
    assert exporter.exec_properties[executor.CALIBRATION_EXAMPLES_KEY] == 5000
    assert exporter.outputs[executor.TFLITE_MODEL_KEY].type_name == "waferflow.TFLiteModel"
    assert TFLiteModel.TYPE_NAME != standard_artifacts.Model.TYPE_NAME  # invisible to Model resolvers
    with pytest.raises(ValueError, match="calibrate"):
        TFLiteExporter(model=model, model_blessing=blessing, quantize_int8=True)


def test_executor_exports_a_blessed_model_builtin_only_and_checked(served_model, tmp_path):
    output = TFLiteModel()
    output.uri = str(tmp_path / "out")
    executor.Executor().Do(
        exporter_inputs(served_model, tmp_path, blessed=True),
        {executor.TFLITE_MODEL_KEY: [output]},
        {
            executor.QUANTIZE_INT8_KEY: 1,
            executor.CALIBRATION_EXAMPLES_KEY: 300,
            executor.PARITY_EXAMPLES_KEY: 400,
            executor.INT8_MAX_AUC_CHANGE_KEY: 0.01,
        },
    )
    with open(os.path.join(output.uri, REPORT_FILE)) as f:
        report = json.load(f)
    assert output.get_int_custom_property("exported") == 1
    assert all(op.isupper() for op in report["float32"]["operators"])  # no Flex / custom ops
    assert report["float32"]["vs_serving_default"]["dies"] == 400
    assert report["float32"]["vs_serving_default"]["max_abs_diff"] <= 1e-4
    int8 = report["int8"]
    assert int8["calibration_examples"] == 300 and "QUANTIZE" in int8["operators"]
    assert int8["kept"] == os.path.exists(os.path.join(output.uri, executor.INT8_FILE))
    assert os.path.getsize(os.path.join(output.uri, executor.FLOAT32_FILE)) > 0


def test_executor_exports_nothing_for_an_unblessed_model(served_model, tmp_path):
    output = TFLiteModel()
    output.uri = str(tmp_path / "out")
    executor.Executor().Do(
        exporter_inputs(served_model, tmp_path, blessed=False),
        {executor.TFLITE_MODEL_KEY: [output]},
        {executor.QUANTIZE_INT8_KEY: 1, executor.CALIBRATION_EXAMPLES_KEY: 10},
    )
    assert output.get_int_custom_property("exported") == 0
    assert os.listdir(output.uri) == [REPORT_FILE]
