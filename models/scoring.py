"""Local scorers for an exported model: the SavedModel, its TF Lite and its ONNX conversion.

Each turns a DataFrame of dies (raw columns, wafer context added, as the readers and
`data.wafer_features.add_wafer_context` produce them) into final-test fail probabilities, so the
batch-scoring command, the exporters' parity checks, the parity tests and the serving benchmark
all run a model the same way. `prepare` (featurising) and `predict` (the model) are separate so
a benchmark can time the model alone.

    SavedModelScorer(path)                      serving_default: serialized tf.Examples
    SavedModelScorer(path, signature="serve_dense")   the dense matrix (models/dense_signature.py)
    TFLiteScorer(path)                          ai-edge-litert interpreter, dense matrix
    OnnxScorer(path)                            onnxruntime, dense matrix
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from models import dense_signature, features

SERVING_DEFAULT = "serving_default"


class Scorer:
    """dies -> probabilities [n]; `prepare` builds the model's input, `predict` runs the model."""

    name = "model"

    def prepare(self, dies: pd.DataFrame) -> Any:
        return dense_signature.dense_matrix(dies)

    def predict(self, prepared: Any) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, dies: pd.DataFrame) -> np.ndarray:
        return self.predict(self.prepare(dies))


class SavedModelScorer(Scorer):
    """The SavedModel through `serving_default` (serialized examples) or `serve_dense`."""

    def __init__(self, path: str, signature: str = SERVING_DEFAULT):
        if signature not in (SERVING_DEFAULT, dense_signature.DENSE_SIGNATURE):
            raise ValueError(f"signature must be {SERVING_DEFAULT} or {dense_signature.DENSE_SIGNATURE}")
        self.loaded = tf.saved_model.load(path)
        self.signature = signature
        self._fn = self.loaded.signatures[signature]
        self.name = f"SavedModel {signature}"

    def prepare(self, dies: pd.DataFrame) -> Any:
        if self.signature == SERVING_DEFAULT:
            return tf.constant(dense_signature.raw_examples(dies))
        return tf.constant(dense_signature.dense_matrix(dies))

    def predict(self, prepared: Any) -> np.ndarray:
        key = "examples" if self.signature == SERVING_DEFAULT else dense_signature.DENSE_INPUT
        return self._fn(**{key: prepared})[features.PROBABILITY_KEY].numpy().reshape(-1)


class TFLiteScorer(Scorer):
    """A .tflite model (float32 or int8) through the ai-edge-litert interpreter."""

    def __init__(self, path: str | None = None, model_content: bytes | None = None, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter  # imported here: only this scorer needs it

        self.interpreter = Interpreter(model_path=path, model_content=model_content, num_threads=num_threads)
        (key,) = self.interpreter.get_signature_list()
        self._runner = self.interpreter.get_signature_runner(key)
        self.name = f"TF Lite {os.path.basename(path) if path else ''}".strip()

    def predict(self, prepared: np.ndarray) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros(0, np.float32)
        return self._runner(**{dense_signature.DENSE_INPUT: prepared})[features.PROBABILITY_KEY].reshape(-1)


class OnnxScorer(Scorer):
    """A .onnx model through onnxruntime (CPU)."""

    def __init__(self, path: str, intra_op_threads: int = 0):
        import onnxruntime  # imported here: only this scorer needs it

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = f"ONNX Runtime {os.path.basename(path)}"

    def predict(self, prepared: np.ndarray) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros(0, np.float32)
        (out,) = self.session.run([features.PROBABILITY_KEY], {dense_signature.DENSE_INPUT: prepared})
        return out.reshape(-1)


def load_scorer(path: str, signature: str = SERVING_DEFAULT) -> Scorer:
    """A scorer by file kind: `*.tflite`, `*.onnx`, or a SavedModel directory."""
    if path.endswith(".tflite"):
        return TFLiteScorer(path)
    if path.endswith(".onnx"):
        return OnnxScorer(path)
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return SavedModelScorer(path, signature)
    raise ValueError(f"{path} is not a SavedModel directory, a .tflite or an .onnx file")
