"""Local scorers for an exported model: the SavedModel, its TF Lite and its ONNX conversion.

Each turns a DataFrame of dies (raw columns, wafer context added, as the readers and
`data.wafer_features.add_wafer_context` produce them) into final-test fail probabilities, so the
batch-scoring command, the exporters' parity checks, the parity tests and the serving benchmark
all run a model the same way. `prepare` (featurising) and `predict` (the model) are separate so
a benchmark can time the model alone. Each also loads what is stored beside the model: its dense
column order and its operating point (models/operating_point.py; None for a model without one).

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
from models.operating_point import OperatingPoint
from models.operating_point import find as find_operating_point

SERVING_DEFAULT = "serving_default"


def example_columns(dies: pd.DataFrame) -> list[str]:
    """What goes into a tf.Example for `serving_default`: every test the file has (the model parses
    the ones it knows, by name) and the other model inputs."""
    from data.program import is_test_feature

    return [c for c in dies.columns if is_test_feature(c)] + [c for c in features.NON_TEST_INPUTS if c in dies]


class Scorer:
    """dies -> probabilities [n]; `prepare` builds the model's input, `predict` runs the model.

    `columns` is the model's dense input order (models/dense_signature.py) and `operating_point` its
    ink threshold (models/operating_point.py), both stored with the model; `operating_point` is None
    for a model exported without one."""

    name = "model"
    columns: tuple[str, ...] = ()
    operating_point: OperatingPoint | None = None

    def prepare(self, dies: pd.DataFrame) -> Any:
        return dense_signature.dense_matrix(dies, self.columns)

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
        self.columns = dense_signature.read_columns(path)
        self.operating_point = find_operating_point(path)
        self.name = f"SavedModel {signature}"

    def prepare(self, dies: pd.DataFrame) -> Any:
        if self.signature == SERVING_DEFAULT:
            return tf.constant(dense_signature.raw_examples(dies, example_columns(dies)))
        return tf.constant(dense_signature.dense_matrix(dies, self.columns))

    def predict(self, prepared: Any) -> np.ndarray:
        key = "examples" if self.signature == SERVING_DEFAULT else dense_signature.DENSE_INPUT
        return self._fn(**{key: prepared})[features.PROBABILITY_KEY].numpy().reshape(-1)


class TFLiteScorer(Scorer):
    """A .tflite model (float32 or int8) through the ai-edge-litert interpreter."""

    def __init__(self, path: str | None = None, model_content: bytes | None = None, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter  # imported here: only this scorer needs it

        self.interpreter = Interpreter(model_path=path, model_content=model_content, num_threads=num_threads)
        self.columns = dense_signature.read_columns(path) if path else ()
        self.operating_point = find_operating_point(path) if path else None
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
        with tf.io.gfile.GFile(path, "rb") as f:  # through the filesystem layer: gs:// works too
            self.session = onnxruntime.InferenceSession(f.read(), options, providers=["CPUExecutionProvider"])
        self.columns = dense_signature.read_columns(path)
        self.operating_point = find_operating_point(path)
        self.name = f"ONNX Runtime {os.path.basename(path)}"

    def predict(self, prepared: np.ndarray) -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros(0, np.float32)
        (out,) = self.session.run([features.PROBABILITY_KEY], {dense_signature.DENSE_INPUT: prepared})
        return out.reshape(-1)


def load_scorer(path: str, signature: str = SERVING_DEFAULT) -> Scorer:
    """A scorer by file kind: `*.tflite`, `*.onnx`, or a SavedModel directory."""
    if path.endswith(".tflite"):
        if "://" in path:  # the interpreter opens files itself: hand it the bytes
            with tf.io.gfile.GFile(path, "rb") as f:
                scorer = TFLiteScorer(model_content=f.read())
            scorer.columns = dense_signature.read_columns(path)
            scorer.operating_point = find_operating_point(path)
            return scorer
        return TFLiteScorer(path)
    if path.endswith(".onnx"):
        return OnnxScorer(path)
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return SavedModelScorer(path, signature)
    raise ValueError(f"{path} is not a SavedModel directory, a .tflite or an .onnx file")
