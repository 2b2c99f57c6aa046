"""PatternExporter executor: the blessed pattern SavedModel's `serve_map` as TF Lite (float32 and
full-integer int8) and ONNX, each checked against the SavedModel on held-out test maps.

What is converted is the map -> class probabilities function (`serve_map` without its decisions):
the per-class thresholds travel beside the files (pattern_thresholds.json), and a client applies
them, as the predict client does. Parity (export_report.json, and MLMD properties):
- float32 TF Lite and ONNX must reproduce the SavedModel's probabilities within
  `model_export.FLOAT32_ATOL` on every test map, or the execution fails: it would not be the
  model the Evaluator blessed;
- int8 is an approximation: its largest probability difference, the share of maps whose decisions
  (all eight classes at the thresholds) are the same as the SavedModel's, and the macro-F1 of both
  on the same maps are recorded; a probability off by more than `MAX_INT8_ABS_DIFF` anywhere fails
  the execution (a broken quantization, not rounding). Decision agreement is not a gate: a barely
  trained model has probabilities sitting on its thresholds, where any rounding flips decisions.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import model_export
from components.onnx_exporter.executor import function_to_onnx
from components.tflite_exporter.executor import int8_operators, operators
from data.patterns import LABEL_KEY, MAP_KEY
from models import pattern_metrics, pattern_preprocessing
from models.pattern_trainer import PROBABILITIES_KEY, THRESHOLDS_PATH

EXPORTS_KEY = "pattern_exports"
QUANTIZE_INT8_KEY = "quantize_int8"
PARITY_MAPS_KEY = "parity_maps"
CALIBRATION_MAPS_KEY = "calibration_maps"

FLOAT32_FILE = "model.tflite"
INT8_FILE = "model_int8.tflite"
ONNX_FILE = "model.onnx"
THRESHOLDS_FILE = "pattern_thresholds.json"
OPSET = 17
# int8 rounding moves a probability by a few hundredths (0.078 at most over 675 test maps of the
# default run's model, whose decisions it kept on 98.8% of them); a quarter of the probability
# scale is a broken conversion.
MAX_INT8_ABS_DIFF = 0.25


def maps_and_labels(serialized: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 2) float32 maps and (n, 8) multi-hot labels of serialized map examples."""
    maps, labels = [], []
    for record in serialized:
        feature = tf.train.Example.FromString(record).features.feature
        maps.append(np.asarray(feature[MAP_KEY].float_list.value, np.float32))
        labels.append(np.asarray(feature[LABEL_KEY].int64_list.value, np.int64))
    shape = (len(maps), *pattern_preprocessing.MAP_SHAPE)
    return np.stack(maps).reshape(shape) if maps else np.zeros(shape, np.float32), np.asarray(labels)


def probability_function(loaded) -> tf.types.experimental.ConcreteFunction:
    """maps -> {"probabilities"} of the loaded pattern SavedModel (its `serve_map` without decisions)."""
    serve = loaded.signatures["serve_map"]

    @tf.function(input_signature=[tf.TensorSpec([None, *pattern_preprocessing.MAP_SHAPE], tf.float32, name=MAP_KEY)])
    def probabilities(maps):
        return {PROBABILITIES_KEY: serve(**{MAP_KEY: maps})[PROBABILITIES_KEY]}

    return probabilities.get_concrete_function()


def to_tflite(loaded, calibration: np.ndarray | None = None) -> bytes:
    """float32 TF Lite (builtin ops only), or with `calibration` maps full-integer int8: int8 weights
    and activations in every op, float32 input and output (the client sends the map as it is)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([probability_function(loaded)], loaded)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if calibration is not None:
        if len(calibration) == 0:
            raise ValueError("int8 quantization needs calibration maps; the train split gave none")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([m[None]] for m in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def to_onnx(loaded, opset: int = OPSET) -> bytes:
    """ONNX of the probability function (tf2onnx over the frozen graph, as components/onnx_exporter)."""
    proto = function_to_onnx(probability_function(loaded), MAP_KEY, PROBABILITIES_KEY, "waferflow_patterns", opset)
    return proto.SerializeToString()


def tflite_probabilities(content: bytes, maps: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=num_threads)
    (key,) = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(key)
    return np.concatenate([runner(**{MAP_KEY: maps[i : i + 256]})[PROBABILITIES_KEY] for i in range(0, len(maps), 256)])


def onnx_probabilities(content: bytes, maps: np.ndarray, threads: int = 0) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    return session.run([PROBABILITIES_KEY], {MAP_KEY: maps})[0]


def parity(reference: np.ndarray, candidate: np.ndarray, thresholds: np.ndarray, labels: np.ndarray) -> dict:
    """How closely an export reproduces the SavedModel's probabilities and decisions on the same maps."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    ours, theirs = pattern_metrics.predict(reference, thresholds), pattern_metrics.predict(candidate, thresholds)
    return {
        "maps": int(len(reference)),
        "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "decision_agreement": float((ours == theirs).all(axis=1).mean()) if len(diff) else 1.0,
        "macro_f1_saved_model": pattern_metrics.macro_f1(labels, ours) if len(diff) else None,
        "macro_f1_export": pattern_metrics.macro_f1(labels, theirs) if len(diff) else None,
    }


class Executor(base_executor.BaseExecutor):
    """Converts a blessed pattern model to TF Lite (float32, int8) and ONNX, with parity checks."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        output = artifact_utils.get_single_instance(output_dict[EXPORTS_KEY])
        if not model_export.gate_on_blessing(input_dict, output):
            return
        source = model_export.saved_model_dir(artifact_utils.get_single_instance(input_dict[model_export.MODEL_KEY]))
        loaded = tf.saved_model.load(source)
        with tf.io.gfile.GFile(os.path.join(source, THRESHOLDS_PATH)) as f:
            thresholds_by_class = json.load(f)
        thresholds = np.asarray(list(thresholds_by_class.values()), np.float32)
        maps, labels = maps_and_labels(
            model_export.read_examples(input_dict, "test", int(exec_properties.get(PARITY_MAPS_KEY) or 0))
        )
        reference = loaded.signatures["serve_map"](**{MAP_KEY: tf.constant(maps)})[PROBABILITIES_KEY].numpy()

        files = {FLOAT32_FILE: to_tflite(loaded), ONNX_FILE: to_onnx(loaded)}
        checks = {
            FLOAT32_FILE: parity(reference, tflite_probabilities(files[FLOAT32_FILE], maps), thresholds, labels),
            ONNX_FILE: parity(reference, onnx_probabilities(files[ONNX_FILE], maps), thresholds, labels),
        }
        if exec_properties.get(QUANTIZE_INT8_KEY):
            calibration, _ = maps_and_labels(
                model_export.read_examples(input_dict, "train", int(exec_properties.get(CALIBRATION_MAPS_KEY) or 0))
            )
            files[INT8_FILE] = to_tflite(loaded, calibration)
            checks[INT8_FILE] = parity(reference, tflite_probabilities(files[INT8_FILE], maps), thresholds, labels)
            checks[INT8_FILE]["calibration_maps"] = int(len(calibration))
            checks[INT8_FILE]["int8_operators"] = int8_operators(files[INT8_FILE])
            checks[INT8_FILE]["float_operators"] = sorted(
                set(operators(files[INT8_FILE])) - set(int8_operators(files[INT8_FILE]))
            )

        tf.io.gfile.makedirs(output.uri)
        for name, content in files.items():
            with tf.io.gfile.GFile(os.path.join(output.uri, name), "wb") as f:
                f.write(content)
        with tf.io.gfile.GFile(os.path.join(output.uri, THRESHOLDS_FILE), "w") as f:
            json.dump(thresholds_by_class, f, indent=2)
        report = {
            "exported": True,
            "source_model": source,
            "input": {"name": MAP_KEY, "dtype": "float32", "shape": [None, *pattern_preprocessing.MAP_SHAPE]},
            "output": PROBABILITIES_KEY,
            "thresholds": THRESHOLDS_FILE,
            "vs_saved_model": checks,
        }
        model_export.write_report(output.uri, report)
        logging.info("Pattern exports vs the SavedModel: %s", checks)
        for name in (FLOAT32_FILE, ONNX_FILE):
            if checks[name]["max_abs_diff"] > model_export.FLOAT32_ATOL:
                raise RuntimeError(f"{name} disagrees with the pattern SavedModel's serve_map: {checks[name]}")
            output.set_float_custom_property(f"{name}_max_abs_diff", checks[name]["max_abs_diff"])
        if INT8_FILE in checks:
            output.set_float_custom_property("int8_decision_agreement", checks[INT8_FILE]["decision_agreement"])
            if checks[INT8_FILE]["max_abs_diff"] > MAX_INT8_ABS_DIFF:
                raise RuntimeError(f"{INT8_FILE} is too far from the pattern SavedModel: {checks[INT8_FILE]}")
        output.set_int_custom_property(model_export.EXPORTED_PROPERTY, 1)
