"""OnnxExporter: construction, and Executor().Do() on a small real trained model."""

from __future__ import annotations

import json
import os

import onnx
import pytest
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.model_export import REPORT_FILE
from components.onnx_exporter import executor
from components.onnx_exporter.component import OnnxExporter, ONNXModel
from models import dense_signature, features
from tests.export_harness import exporter_inputs


def test_component_construction():
    exporter = OnnxExporter(
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
    )
    assert exporter.exec_properties[executor.OPSET_KEY] == executor.DEFAULT_OPSET
    assert exporter.outputs[executor.ONNX_MODEL_KEY].type_name == "components.ONNXModel"
    with pytest.raises(ValueError):
        OnnxExporter(
            model=tfx.dsl.Channel(type=standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
            parity_examples=-1,
        )


def test_executor_exports_a_blessed_model_that_onnxruntime_loads(served_model, tmp_path):
    output = ONNXModel()
    output.uri = str(tmp_path / "out")
    executor.Executor().Do(
        exporter_inputs(served_model, tmp_path, blessed=True),
        {executor.ONNX_MODEL_KEY: [output]},
        {executor.OPSET_KEY: 17, executor.PARITY_EXAMPLES_KEY: 300},
    )
    path = os.path.join(output.uri, executor.ONNX_FILE)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["dies"]
    assert [o.name for o in model.graph.output] == [features.PROBABILITY_KEY]
    with open(os.path.join(output.uri, REPORT_FILE)) as f:
        report = json.load(f)
    assert report["vs_serving_default"]["dies"] == 300 and report["vs_serving_default"]["max_abs_diff"] <= 1e-4
    assert output.get_int_custom_property("exported") == 1
    # The column order travels beside the file: a client of model.onnx needs nothing else.
    columns = list(dense_signature.read_columns(served_model.saved_model))
    assert report["input"]["columns"] == columns
    assert list(dense_signature.read_columns(path)) == columns
    (dies,) = model.graph.input
    assert dies.type.tensor_type.shape.dim[1].dim_value == len(columns)


def test_executor_exports_nothing_for_an_unblessed_model(served_model, tmp_path):
    output = ONNXModel()
    output.uri = str(tmp_path / "out")
    inputs = exporter_inputs(served_model, tmp_path, blessed=False)
    executor.Executor().Do(inputs, {executor.ONNX_MODEL_KEY: [output]}, {})
    assert output.get_int_custom_property("exported") == 0
    assert os.listdir(output.uri) == [REPORT_FILE]
