"""Parity: the same held-out dies through the SavedModel's serving_default (serialized tf.Examples,
what TF Serving runs), the TF Lite models (ai-edge-litert) and the ONNX model (onnxruntime).

float32 exports must agree with serving_default within 1e-4 in probability; the int8 TF Lite model
within INT8_ATOL per die and INT8_MEAN_ATOL on average, with the same AUC to within 0.01.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from sklearn.metrics import roc_auc_score

from components.onnx_exporter.executor import ONNX_FILE
from components.tflite_exporter.executor import FLOAT32_FILE, INT8_FILE, operators
from models import dense_signature, features, model, trainer, training
from models.scoring import OnnxScorer, SavedModelScorer, TFLiteScorer

FLOAT32_ATOL = 1e-4
# int8 (dense layers quantized, see components/tflite_exporter/executor.py): stated tolerances.
INT8_ATOL = 0.03
INT8_MEAN_ATOL = 0.002
AUC_ATOL = 0.01


@dataclasses.dataclass
class HeldOut:
    records: list[bytes]  # as an operator sends them: raw tester fields only, no label, no oracle
    matrix: np.ndarray
    labels: np.ndarray
    reference: np.ndarray  # serving_default probabilities


@pytest.fixture(scope="module")
def held_out(served_model) -> HeldOut:
    files = glob.glob(os.path.join(served_model.examples_uri, "Split-eval", "*"))
    records, labels = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        labels.append(example.features.feature[features.LABEL_KEY].int64_list.value[0])
        for key in (features.LABEL_KEY, features.ORACLE_KEY):
            del example.features.feature[key]
        records.append(example.SerializeToString())
    loaded = tf.saved_model.load(served_model.saved_model)
    reference = loaded.signatures["serving_default"](examples=tf.constant(records))[features.PROBABILITY_KEY]
    labels = np.asarray(labels)
    assert len(records) > 500 and 0 < labels.sum() < len(labels)
    return HeldOut(records, dense_signature.dense_matrix_from_examples(records), labels, reference.numpy().reshape(-1))


def test_pipeline_exported_the_blessed_model(served_model):
    components = served_model.summary["components"]
    assert components["TFLiteExporter"] == "complete" and components["OnnxExporter"] == "complete"
    exports = {served_model.tflite_dir: (FLOAT32_FILE, INT8_FILE), served_model.onnx_dir: (ONNX_FILE,)}
    for directory, files in exports.items():
        with open(os.path.join(directory, "export_report.json")) as f:
            report = json.load(f)
        assert report["exported"] is True
        assert report["input"]["columns"] == list(features.MODEL_FEATURES)
        for name in files:
            assert os.path.getsize(os.path.join(directory, name)) > 0


def test_dense_signature_of_the_saved_model_matches_serving_default(served_model, held_out):
    dense = SavedModelScorer(served_model.saved_model, dense_signature.DENSE_SIGNATURE)
    np.testing.assert_allclose(dense.predict(tf.constant(held_out.matrix)), held_out.reference, atol=FLOAT32_ATOL)


def test_tflite_float32_is_builtin_only_and_matches_serving_default(served_model, held_out):
    path = os.path.join(served_model.tflite_dir, FLOAT32_FILE)
    with open(path, "rb") as f:
        ops = operators(f.read())
    assert "FULLY_CONNECTED" in ops
    assert all(op.isupper() for op in ops), ops  # builtin names only: custom and Flex ops are "FlexAddV2" etc.
    scorer = TFLiteScorer(path)
    assert not any(d["dtype"] == np.int8 for d in scorer.interpreter.get_tensor_details())
    probabilities = scorer.predict(held_out.matrix)
    assert np.abs(probabilities - held_out.reference).max() <= FLOAT32_ATOL


def test_onnx_loads_in_onnxruntime_and_matches_serving_default(served_model, held_out):
    scorer = OnnxScorer(os.path.join(served_model.onnx_dir, ONNX_FILE))
    assert [i.name for i in scorer.session.get_inputs()] == [dense_signature.DENSE_INPUT]
    assert [o.name for o in scorer.session.get_outputs()] == [features.PROBABILITY_KEY]
    probabilities = scorer.predict(held_out.matrix)
    assert np.abs(probabilities - held_out.reference).max() <= FLOAT32_ATOL


def test_tflite_int8_is_quantized_within_tolerance_and_keeps_the_auc(served_model, held_out):
    path = os.path.join(served_model.tflite_dir, INT8_FILE)
    scorer = TFLiteScorer(path)
    assert any(d["dtype"] == np.int8 for d in scorer.interpreter.get_tensor_details())
    assert os.path.getsize(path) < os.path.getsize(os.path.join(served_model.tflite_dir, FLOAT32_FILE))
    probabilities = scorer.predict(held_out.matrix)
    diff = np.abs(probabilities - held_out.reference)
    assert diff.max() <= INT8_ATOL and diff.mean() <= INT8_MEAN_ATOL, (diff.max(), diff.mean())
    auc = roc_auc_score(held_out.labels, held_out.reference)
    assert abs(roc_auc_score(held_out.labels, probabilities) - auc) <= AUC_ATOL


def test_missing_tests_score_the_same_in_every_format(served_model, held_out):
    """A die whose test program stopped early: absent from the tf.Example, NaN in the matrix."""
    rng = np.random.default_rng(3)
    n = 64
    stop = rng.integers(0, len(features.PARAMETRIC), size=n)
    records, matrix = [], held_out.matrix[:n].copy()
    for i, record in enumerate(held_out.records[:n]):
        example = tf.train.Example.FromString(record)
        for key in features.PARAMETRIC[stop[i] :]:
            del example.features.feature[key]
        records.append(example.SerializeToString())
        matrix[i, stop[i] : len(features.PARAMETRIC)] = np.nan
    reference = SavedModelScorer(served_model.saved_model).predict(tf.constant(records))
    assert np.abs(reference - held_out.reference[:n]).max() > 1e-3  # the missing tests matter
    for scorer in (
        TFLiteScorer(os.path.join(served_model.tflite_dir, FLOAT32_FILE)),
        OnnxScorer(os.path.join(served_model.onnx_dir, ONNX_FILE)),
        SavedModelScorer(served_model.saved_model, dense_signature.DENSE_SIGNATURE),
    ):
        prepared = tf.constant(matrix) if isinstance(scorer, SavedModelScorer) else matrix
        assert np.abs(scorer.predict(prepared) - reference).max() <= FLOAT32_ATOL, scorer.name


def test_dense_transform_reproduces_the_transform_graph_and_the_check_can_fail(served_model):
    output = tft.TFTransformOutput(served_model.transform_graph)
    constants = dense_signature.TransformConstants.from_transform_output(output)
    assert len(constants.mean) == len(dense_signature.Z_SCORED)
    assert sorted(constants.site_vocabulary) == sorted(float(s) for s in output.vocabulary_by_name("site_vocab"))
    layer, spec = output.transform_features_layer(), trainer.serving_raw_feature_spec(output)
    worst = dense_signature.check_against_transform(dense_signature.DenseTransform(constants), layer, spec, constants)
    assert worst <= 1e-5
    mean = list(constants.mean)
    mean[3] += 0.5 * np.sqrt(constants.variance[3])  # half a standard deviation off on one test
    wrong = dataclasses.replace(constants, mean=tuple(mean))
    with pytest.raises(ValueError, match=dense_signature.Z_SCORED[3]):
        dense_signature.check_against_transform(dense_signature.DenseTransform(wrong), layer, spec, constants)


def test_float32_copy_keeps_the_trained_weights_and_computes_in_float32():
    hp = model.get_hyperparameters()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = model.build_model(hp, 4)
        copy = trainer.float32_copy(trained, hp, 4)
    finally:
        training.reset_policy()
    assert {layer.compute_dtype for layer in trained.layers if layer.weights} >= {"bfloat16"}
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    for a, b in zip(trained.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_exported_signatures_have_no_reduced_precision_ops(served_model):
    loaded = tf.saved_model.load(served_model.saved_model)
    for name in ("serving_default", dense_signature.DENSE_SIGNATURE):
        graph = loaded.signatures[name].graph.as_graph_def()
        nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
        reduced = {
            n.op
            for n in nodes
            for a in n.attr.values()
            if a.type in (tf.bfloat16.as_datatype_enum, tf.float16.as_datatype_enum)
        }
        assert not reduced, (name, reduced)
