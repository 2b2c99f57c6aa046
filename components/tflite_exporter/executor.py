"""TFLiteExporter executor: the blessed SavedModel's `serve_dense` -> TF Lite flatbuffers.

    model.tflite        float32, TF Lite builtin ops only (no Flex / SELECT_TF_OPS)
    model_int8.tflite   optional: post-training integer quantization of the dense layers (int8
                        weights and activations, ranges calibrated on a sample of the training
                        split); the Transform, the sigmoid, input and output stay float32
    export_report.json  operators, input contract, and agreement with serving_default

Both files take the dense input of models/dense_signature.py (`dies`: float32 [batch, n_columns] raw
features, NaN for an unmeasured test) and return `ft_fail_probability` [batch, 1]: the Transform
and the calibration are inside the graph.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.lite.python import schema_py_generated as schema_fb
from tensorflow.lite.tools import flatbuffer_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import model_export
from models import dense_signature, features
from models.scoring import TFLiteScorer

TFLITE_MODEL_KEY = "tflite_model"
QUANTIZE_INT8_KEY = "quantize_int8"
CALIBRATION_EXAMPLES_KEY = "calibration_examples"
PARITY_EXAMPLES_KEY = "parity_examples"
INT8_MAX_AUC_CHANGE_KEY = "int8_max_auc_change"

FLOAT32_FILE = "model.tflite"
INT8_FILE = "model_int8.tflite"


# int8 quantizes the hidden dense layers, where the multiply-adds are, and nothing else:
# - the Transform stays float32: one per-tensor int8 scale over raw features spanning many orders
#   of magnitude erases the small ones (fully quantized: max |dp| 0.5 on held-out dies);
# - the logit layer (32 multiply-adds) stays float32: its int8 range, calibrated on typical dies,
#   clips the rare high-risk die, the one that matters (0.79 scored as 0.66);
# - the sigmoid stays float32, so a probability of 0.02 is not rounded to a multiple of 1/256.
INT8_OPS = ("FULLY_CONNECTED",)


def _logit_layers(content: bytes) -> list[str]:
    """Output tensor names of the fully connected ops with one output unit (the logit)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    names = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "FULLY_CONNECTED":
                continue
            tensor = subgraph.tensors[op.outputs[0]]
            if int(tensor.shape[-1]) == 1:
                name = tensor.name
                names.append(name.decode() if isinstance(name, bytes) else name)
    return names


def _converter(loaded) -> tf.lite.TFLiteConverter:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([dense_signature.dense_function(loaded)], loaded)
    # Builtins only: conversion fails, rather than falling back to Flex ops, if an op has no builtin kernel.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert(loaded) -> bytes:
    """float32 TF Lite flatbuffer of the loaded SavedModel's `serve_dense`, builtin ops only."""
    return _converter(loaded).convert()


def convert_int8(loaded, calibration: np.ndarray, float_model: bytes) -> bytes:
    """Post-training integer quantization of the hidden `INT8_OPS` (int8 weights and activations,
    ranges calibrated on `calibration`, rows of the dense input); every other op of the float32
    conversion `float_model` stays a float32 builtin, and input and output stay float32. Round trips
    through int8 that the quantizer leaves on float tensors are removed (`strip_float_round_trips`)."""
    if len(calibration) == 0:
        raise ValueError("int8 quantization needs calibration examples; none were given")
    converter = _converter(loaded)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        return ([row[None, :]] for row in calibration)

    converter.representative_dataset = representative
    # Selective quantization is exposed through the quantization debugger: it calibrates once,
    # then quantizes all but the denylisted op types.
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=[op for op in operators(float_model) if op not in INT8_OPS],
        denylisted_nodes=_logit_layers(float_model),
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative, debug_options=options
    )
    content, _ = strip_float_round_trips(debugger.get_nondebug_quantized_model())
    return content


def strip_float_round_trips(content: bytes) -> tuple[bytes, int]:
    """Remove QUANTIZE ... DEQUANTIZE chains that lead from a float tensor back to float.

    Selective quantization can leave such a round trip inside the float32 part of the graph: with
    the dense Transform of models/dense_signature.py the quantizer put one on the raw test values
    on their way to the log of the log-scale tests. Nothing is computed in int8 there, so it only
    rounds: one per-tensor int8 scale over tests logged from nanoamps to thousands of megahertz
    (a step of about 12) turned every leakage reading into 0 (measured: max |dp| 0.73, AUC down
    0.04 on held-out dies). The consumers of each such DEQUANTIZE read the float tensor directly;
    quantize ops left with no consumer are dropped. Returns the model and the ops removed.
    """
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    kinds = [flatbuffer_utils.opcode_to_name(model, i) for i in range(len(model.operatorCodes))]
    removed = 0
    for subgraph in model.subgraphs:
        replace = _float_round_trips(subgraph, kinds)
        if not replace:
            continue
        for op in subgraph.operators:
            op.inputs = [replace.get(i, i) for i in op.inputs]
        subgraph.outputs = [replace.get(i, i) for i in subgraph.outputs]
        while True:  # drop quantize / dequantize ops nothing reads any more
            used = {i for op in subgraph.operators for i in op.inputs} | set(subgraph.outputs)
            kept = [
                op
                for op in subgraph.operators
                if kinds[op.opcodeIndex] not in ("QUANTIZE", "DEQUANTIZE") or any(o in used for o in op.outputs)
            ]
            if len(kept) == len(subgraph.operators):
                break
            removed += len(subgraph.operators) - len(kept)
            subgraph.operators = kept
    if not removed:
        return content, 0
    logging.info("int8 model: removed %d quantize/dequantize ops of float round trips", removed)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), removed


def _float_round_trips(subgraph, kinds: list[str]) -> dict[int, int]:
    """{output of a DEQUANTIZE: the float tensor it came from through QUANTIZE ops only}."""
    producer = {t: op for op in subgraph.operators for t in op.outputs}
    is_float = lambda t: subgraph.tensors[t].type == schema_fb.TensorType.FLOAT32  # noqa: E731
    trips = {}
    for op in subgraph.operators:
        if kinds[op.opcodeIndex] != "DEQUANTIZE":
            continue
        source, hops = op.inputs[0], 0
        while not is_float(source) and source in producer and kinds[producer[source].opcodeIndex] == "QUANTIZE":
            source, hops = producer[source].inputs[0], hops + 1
        if hops and is_float(source):
            trips[op.outputs[0]] = source
    return trips


def int8_operators(content: bytes) -> list[str]:
    """Operators that read or write an int8 tensor (quantize / dequantize included)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    names = set()
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            tensors = [i for i in (*op.inputs, *op.outputs) if i >= 0]
            if any(subgraph.tensors[i].type == schema_fb.TensorType.INT8 for i in tensors):
                names.add(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex))
    return sorted(names)


def float_round_trips(content: bytes) -> int:
    """How many float -> int8 -> float round trips (QUANTIZE ... DEQUANTIZE, no op between) a model has."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    kinds = [flatbuffer_utils.opcode_to_name(model, i) for i in range(len(model.operatorCodes))]
    return sum(len(_float_round_trips(subgraph, kinds)) for subgraph in model.subgraphs)


def operators(content: bytes) -> list[str]:
    """Operator names in a flatbuffer; custom ops (Flex ops included) by their custom code."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    names = set()
    for index, code in enumerate(model.operatorCodes):
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema_fb.BuiltinOperator.CUSTOM:
            custom = code.customCode
            names.add(custom.decode() if isinstance(custom, bytes) else str(custom))
        else:
            names.add(flatbuffer_utils.opcode_to_name(model, index))
    return sorted(names)


def _flex_free(ops: list[str], what: str) -> None:
    custom = [op for op in ops if op.startswith("Flex") or not op.isupper()]
    if custom:
        raise RuntimeError(f"{what} has non-builtin ops {custom}")


class Executor(base_executor.BaseExecutor):
    """Converts a blessed model to TF Lite and checks it against serving_default."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        output = artifact_utils.get_single_instance(output_dict[TFLITE_MODEL_KEY])
        if not model_export.gate_on_blessing(input_dict, output):
            return
        model = artifact_utils.get_single_instance(input_dict[model_export.MODEL_KEY])
        source = model_export.saved_model_dir(model)
        loaded = tf.saved_model.load(source)

        content = convert(loaded)
        ops = operators(content)
        _flex_free(ops, FLOAT32_FILE)
        tf.io.gfile.makedirs(output.uri)
        with tf.io.gfile.GFile(os.path.join(output.uri, FLOAT32_FILE), "wb") as f:
            f.write(content)
        # The column order travels beside the model file (models/dense_signature.py).
        dense_signature.write_columns(dense_signature.loaded_columns(loaded), output.uri)

        matrix, reference, labels = model_export.held_out_check(
            loaded, input_dict, int(exec_properties.get(PARITY_EXAMPLES_KEY) or 0)
        )
        float32 = model_export.agreement(reference, TFLiteScorer(model_content=content).predict(matrix), labels)
        report = {
            "exported": True,
            "source_model": source,
            "input": {
                "name": dense_signature.DENSE_INPUT,
                "dtype": "float32",
                "columns": list(dense_signature.loaded_columns(loaded)),
            },
            "output": features.PROBABILITY_KEY,
            "float32": {"file": FLOAT32_FILE, "bytes": len(content), "operators": ops, "vs_serving_default": float32},
        }
        logging.info("TF Lite float32 vs serving_default: %s", float32)
        if float32["max_abs_diff"] > model_export.FLOAT32_ATOL:
            model_export.write_report(output.uri, report)
            raise RuntimeError(f"TF Lite float32 model disagrees with serving_default: {float32}")
        output.set_float_custom_property("float32_max_abs_diff", float32["max_abs_diff"])

        if exec_properties.get(QUANTIZE_INT8_KEY):
            held_out = (matrix, reference, labels)
            report["int8"] = self._int8(loaded, content, input_dict, exec_properties, held_out, output.uri)
            output.set_int_custom_property("int8", int(report["int8"]["kept"]))
        output.set_int_custom_property(model_export.EXPORTED_PROPERTY, 1)
        model_export.write_report(output.uri, report)

    def _int8(self, loaded, float_model, input_dict, exec_properties, held_out, uri) -> dict:
        """Quantize, measure against serving_default, keep the file only if the AUC holds."""
        matrix, reference, labels = held_out
        n = int(exec_properties.get(CALIBRATION_EXAMPLES_KEY) or 0)
        calibration = dense_signature.dense_matrix_from_examples(
            model_export.read_examples(input_dict, "train", n), dense_signature.loaded_columns(loaded)
        )
        content = convert_int8(loaded, calibration, float_model)
        ops = operators(content)
        _flex_free(ops, INT8_FILE)
        result = model_export.agreement(reference, TFLiteScorer(model_content=content).predict(matrix), labels)
        max_change = float(exec_properties.get(INT8_MAX_AUC_CHANGE_KEY) or 0.01)
        change = abs(result["auc_export"] - result["auc_saved_model"]) if "auc_export" in result else None
        kept = change is not None and change <= max_change
        logging.info("TF Lite int8 vs serving_default: %s (kept: %s)", result, kept)
        if kept:
            with tf.io.gfile.GFile(os.path.join(uri, INT8_FILE), "wb") as f:
                f.write(content)
        return {
            "file": INT8_FILE if kept else None,
            "kept": kept,
            "why": None if kept else f"AUC change {change} exceeds {max_change} (or no labelled held-out dies)",
            "bytes": len(content),
            "operators": ops,
            "int8_operators": int8_operators(content),
            "calibration_examples": len(calibration),
            "calibration_split": "train",
            "quantized_ops": list(INT8_OPS),
            "vs_serving_default": result,
        }
