"""TFLiteExporter: construction, Executor().Do() on a small real trained model, and the removal of
int8 round trips from float tensors."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema_fb
from tensorflow.lite.tools import flatbuffer_utils
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.model_export import REPORT_FILE
from components.tflite_exporter import executor
from components.tflite_exporter.component import TFLiteExporter, TFLiteModel
from models import dense_signature
from models.scoring import TFLiteScorer
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
    assert exporter.outputs[executor.TFLITE_MODEL_KEY].type_name == "components.TFLiteModel"
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
    columns = list(dense_signature.read_columns(served_model.saved_model))
    assert report["input"]["columns"] == columns
    # The column order travels beside the file: a client of model.tflite needs nothing else.
    assert list(dense_signature.read_columns(os.path.join(output.uri, executor.FLOAT32_FILE))) == columns
    int8 = report["int8"]
    assert int8["calibration_examples"] == 300 and "QUANTIZE" in int8["operators"]
    assert int8["int8_operators"] == ["DEQUANTIZE", "FULLY_CONNECTED", "QUANTIZE"]  # int8 in the dense layers only
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


def _with_int8_round_trip(content: bytes, scale: float) -> bytes:
    """The model with its input rounded through int8 (QUANTIZE, DEQUANTIZE) before any op reads it:
    the shape of round trip the quantizer can leave on a float tensor."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    codes = {}
    for builtin in (schema_fb.BuiltinOperator.QUANTIZE, schema_fb.BuiltinOperator.DEQUANTIZE):
        code = schema_fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        model.operatorCodes.append(code)
        codes[builtin] = len(model.operatorCodes) - 1
    subgraph = model.subgraphs[0]
    (source,) = subgraph.inputs

    def tensor(name: str, kind: int, quantization=None) -> int:
        t = schema_fb.TensorT()
        t.name, t.type, t.quantization = name, kind, quantization
        t.shape, t.shapeSignature = subgraph.tensors[source].shape, subgraph.tensors[source].shapeSignature
        subgraph.tensors.append(t)
        return len(subgraph.tensors) - 1

    quantized = tensor(
        "rounded", schema_fb.TensorType.INT8, schema_fb.QuantizationParametersT(scale=[scale], zeroPoint=[0])
    )
    restored = tensor("restored", schema_fb.TensorType.FLOAT32)
    for op in subgraph.operators:
        op.inputs = [restored if i == source else i for i in op.inputs]
    ops = []
    for builtin, inputs, outputs in (
        (schema_fb.BuiltinOperator.QUANTIZE, [source], [quantized]),
        (schema_fb.BuiltinOperator.DEQUANTIZE, [quantized], [restored]),
    ):
        op = schema_fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes[builtin], inputs, outputs
        ops.append(op)
    subgraph.operators = ops + subgraph.operators
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_strip_float_round_trips_restores_the_float_model(served_model):
    with open(os.path.join(served_model.tflite_dir, executor.FLOAT32_FILE), "rb") as f:
        content = f.read()
    assert executor.float_round_trips(content) == 0
    assert executor.strip_float_round_trips(content) == (content, 0)  # nothing to do: the same bytes

    rounded = _with_int8_round_trip(content, scale=100.0)  # every raw reading to a multiple of 100
    assert executor.float_round_trips(rounded) == 1
    assert executor.int8_operators(rounded) == ["DEQUANTIZE", "QUANTIZE"]
    stripped, removed = executor.strip_float_round_trips(rounded)
    assert removed == 2 and executor.float_round_trips(stripped) == 0 and executor.int8_operators(stripped) == []

    files = glob.glob(os.path.join(served_model.examples_uri, "Split-test", "*"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(200)]
    dies = dense_signature.dense_matrix_from_examples(records, dense_signature.read_columns(served_model.saved_model))
    expected = TFLiteScorer(model_content=content).predict(dies)
    assert np.abs(TFLiteScorer(model_content=rounded).predict(dies) - expected).max() > 0.01
    np.testing.assert_array_equal(TFLiteScorer(model_content=stripped).predict(dies), expected)
