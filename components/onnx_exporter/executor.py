"""OnnxExporter executor: the blessed SavedModel's `serve_dense` -> model.onnx (tf2onnx).

tf2onnx's Keras path (`from_keras`) has open Keras 3 bugs, so the exporter converts a traced
function over the SavedModel's dense signature, frozen to a GraphDef, and names the graph's input
and output as the SavedModel does (`dies` -> `ft_fail_probability`). The result must load in
onnxruntime and reproduce `serving_default` on held-out dies (export_report.json).
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import model_export
from models import dense_signature, features
from models.scoring import OnnxScorer

ONNX_MODEL_KEY = "onnx_model"
OPSET_KEY = "opset"
PARITY_EXAMPLES_KEY = "parity_examples"

ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 17


def convert(loaded, path: str, opset: int = DEFAULT_OPSET):
    """Write the loaded SavedModel's `serve_dense` as an ONNX model to `path`; returns the ModelProto."""
    proto = function_to_onnx(
        dense_signature.dense_function(loaded),
        dense_signature.DENSE_INPUT,
        features.PROBABILITY_KEY,
        "waferflow",
        opset,
    )
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(proto.SerializeToString())
    return proto


def function_to_onnx(function, input_name: str, output_name: str, name: str, opset: int = DEFAULT_OPSET):
    """A concrete function of one input and one output as a checked ONNX ModelProto, its input and
    output named as the SavedModel's signature names them (frozen to a GraphDef first: see above)."""
    import onnx  # imported here: the pipeline imports this module, only the executors convert
    import tf2onnx

    inputs = [t.name for t in function.inputs if t.dtype != tf.resource][:1]
    outputs = [t.name for t in function.outputs]
    graph_def = tf2onnx.tf_loader.from_function(function, inputs, outputs)
    with tf.device("/cpu:0"):
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            name=name,
            input_names=inputs,
            output_names=outputs,
            opset=opset,
            tensors_to_rename={inputs[0]: input_name, outputs[0]: output_name},
        )
    onnx.checker.check_model(proto)
    return proto


class Executor(base_executor.BaseExecutor):
    """Converts a blessed model to ONNX and checks it in onnxruntime against serving_default."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        output = artifact_utils.get_single_instance(output_dict[ONNX_MODEL_KEY])
        if not model_export.gate_on_blessing(input_dict, output):
            return
        model = artifact_utils.get_single_instance(input_dict[model_export.MODEL_KEY])
        source = model_export.saved_model_dir(model)
        loaded = tf.saved_model.load(source)
        opset = int(exec_properties.get(OPSET_KEY) or DEFAULT_OPSET)

        tf.io.gfile.makedirs(output.uri)
        path = os.path.join(output.uri, ONNX_FILE)
        proto = convert(loaded, path, opset)
        # The column order travels beside the model file (models/dense_signature.py).
        dense_signature.write_columns(dense_signature.loaded_columns(loaded), output.uri)
        matrix, reference, labels = model_export.held_out_check(
            loaded, input_dict, int(exec_properties.get(PARITY_EXAMPLES_KEY) or 0)
        )
        result = model_export.agreement(reference, OnnxScorer(path).predict(matrix), labels)
        report = {
            "exported": True,
            "source_model": source,
            "file": ONNX_FILE,
            "opset": opset,
            "operators": sorted({node.op_type for node in proto.graph.node}),
            "input": {
                "name": dense_signature.DENSE_INPUT,
                "dtype": "float32",
                "columns": list(dense_signature.loaded_columns(loaded)),
            },
            "output": features.PROBABILITY_KEY,
            "vs_serving_default": result,
        }
        model_export.write_report(output.uri, report)
        logging.info("ONNX vs serving_default: %s", result)
        if result["max_abs_diff"] > model_export.FLOAT32_ATOL:
            raise RuntimeError(f"ONNX model disagrees with serving_default: {result}")
        output.set_float_custom_property("max_abs_diff", result["max_abs_diff"])
        output.set_int_custom_property(model_export.EXPORTED_PROPERTY, 1)
