"""The pattern pipeline end to end on a small generated set: `waferflow run-patterns` on product A
(WF7N, 300 mm) from scratch, then product B (MX3A, 200 mm, another die grid) transferred from A's
pushed model through the Trainer's base_model input, and the blessing gate refusing a model.

Small and seeded: 8 lots x 8 maps-only wafers per product, 3 epochs, one in-memory Beam worker. The
figures of a model this small are not the point (benchmarks/wafer_patterns.py measures quality);
what is checked is that every part runs on real files and agrees with every other part.
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

from data.patterns import LABEL_KEY, PATTERN_CLASSES, SCORED_CLASSES
from models import pattern_metrics, pattern_model
from models.pattern_trainer import BUDGET_FILE, KERAS_MODEL_PATH, PATTERNS_KEY
from pipeline import cli, pattern_runner
from pipeline.config import PatternRunConfig
from pipeline.metadata import read_only_store
from pipeline.summary import latest_artifact

pytestmark = pytest.mark.e2e

SMALL = dict(lots=8, wafers_per_lot=8, epochs=3, seed=3, direct_running_mode="in_memory", direct_num_workers=1)


def _flags(**values) -> list[str]:
    flags = []
    for name, value in values.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("patterns"))
    common = {**SMALL, "output_dir": out, "min_macro_f1": 0}
    # Product A through the command line, as a user runs it.
    status = cli.main(["run-patterns", *_flags(product="WF7N", **common)])
    assert status == 0
    a = PatternRunConfig(product="WF7N", **common)
    with open(os.path.join(out, cli.PATTERN_SUMMARY_FILE)) as f:
        summary_a = json.load(f)
    # Product B from A's serving directory, frozen backbone: the clearest check that A's weights came through.
    b = PatternRunConfig(product="MX3A", base_model=a.serving_model_dir, transfer="feature_extraction", **common)
    summary_b = pattern_runner.run(b)
    return {"out": out, "a": a, "summary_a": summary_a, "b": b, "summary_b": summary_b}


def _test_examples(config: PatternRunConfig) -> list[bytes]:
    store = read_only_store(config.metadata_path)
    examples = latest_artifact(store, config.pipeline_name, "WaferMapExampleGen", "Examples")
    files = glob.glob(os.path.join(examples.uri, "Split-test", "*"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_every_wafer_is_an_example_and_each_split_has_some(runs):
    ingest = runs["summary_a"]["ingest"]
    assert ingest["wafers_read"] == 8 * 8 == ingest["examples"]
    assert ingest["balanced"]
    assert sum(ingest["examples_per_split"].values()) == 64
    assert all(n > 0 for n in ingest["examples_per_split"].values())


def test_evaluator_figures_are_the_pushed_models_on_the_test_wafers(runs):
    """TFMA's macro-F1 and recalls (overall and for the product slice) equal models/pattern_metrics
    recomputed from the pushed SavedModel's decisions on the raw test examples."""
    a, summary = runs["a"], runs["summary_a"]
    assert summary["blessed"] is True and summary["pushed_model"]
    serialized = _test_examples(a)
    model = tf.saved_model.load(summary["pushed_model"])
    outputs = model.signatures["serving_default"](examples=tf.constant(serialized))
    decisions = outputs[PATTERNS_KEY].numpy()
    labels = np.stack([tf.train.Example.FromString(s).features.feature[LABEL_KEY].int64_list.value for s in serialized])
    assert labels.shape == decisions.shape == (len(serialized), len(PATTERN_CLASSES))
    expected_recall = pattern_metrics.per_class_recall(labels, decisions)
    for slice_name in ("all", "WF7N"):
        figures = summary["test"][slice_name]
        assert figures["example_count"] == len(serialized)
        assert figures[pattern_metrics.MACRO_F1] == pytest.approx(pattern_metrics.macro_f1(labels, decisions), abs=1e-9)
        for name in SCORED_CLASSES:
            key = pattern_metrics.recall_name(name)
            if np.isnan(expected_recall[name]):
                assert key not in figures or np.isnan(figures[key])
            else:
                assert figures[key] == pytest.approx(expected_recall[name], abs=1e-9), name


def test_the_blessed_model_is_exported_to_tflite_and_onnx_with_parity(runs):
    """TF Lite float32 and ONNX reproduce the SavedModel on every test map (the exporter fails past
    1e-4); int8 stays within the exporter's bound for a working quantization (0.25)."""
    exports = runs["summary_a"]["exports"]
    assert exports["exported"]
    checks = exports["vs_saved_model"]
    assert set(checks) == {"model.tflite", "model_int8.tflite", "model.onnx"}
    n_test = runs["summary_a"]["ingest"]["examples_per_split"]["test"]
    for name in ("model.tflite", "model.onnx"):
        assert checks[name]["maps"] == n_test
        assert checks[name]["max_abs_diff"] <= 1e-4 and checks[name]["decision_agreement"] == 1.0
    assert checks["model_int8.tflite"]["max_abs_diff"] <= 0.25
    assert "CONV_2D" in checks["model_int8.tflite"]["int8_operators"]
    for name in checks:
        assert os.path.getsize(os.path.join(exports["uri"], name)) > 0


def test_the_report_shows_the_test_wafers_and_grad_cam_maps(runs):
    report = runs["summary_a"]["report"]
    with open(os.path.join(os.path.dirname(report), "report.json")) as f:
        content = json.load(f)
    assert os.path.getsize(report) > 0
    images = glob.glob(os.path.join(os.path.dirname(report), "images", "*.png"))
    assert images, "no Grad-CAM images"
    n_test = runs["summary_a"]["ingest"]["examples_per_split"]["test"]
    assert content["wafers"] == n_test == content["overall"]["wafers"]
    # The report's own computation and the Evaluator's agree on the test split's macro-F1.
    figures = runs["summary_a"]["test"]["all"]
    assert content["overall"]["macro_f1"] == pytest.approx(figures["macro_f1"], abs=1e-9)


def test_transfer_goes_through_base_model_and_keeps_the_frozen_backbone(runs):
    b, summary = runs["b"], runs["summary_b"]
    assert summary["training"]["transfer"] == "feature_extraction"
    store = read_only_store(b.metadata_path)
    imported = latest_artifact(store, b.pipeline_name, "base_model_importer", "Model")
    assert imported is not None
    assert summary["training"]["base_model"] == os.path.join(imported.uri, "Format-Serving")
    base = keras.models.load_model(os.path.join(runs["summary_a"]["pushed_model"], KERAS_MODEL_PATH), compile=False)
    target = keras.models.load_model(os.path.join(summary["pushed_model"], KERAS_MODEL_PATH), compile=False)
    blocks = pattern_model.backbone_blocks(base)
    assert blocks == pattern_model.backbone_blocks(target)
    for block in blocks:
        for w_base, w_target in zip(
            base.get_layer(block).get_weights(), target.get_layer(block).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(w_base, w_target)
    # ... and the head was trained on B: it is not A's.
    head = pattern_model.head_layers(target)[-1]
    assert not np.array_equal(base.get_layer(head).get_weights()[0], target.get_layer(head).get_weights()[0])
    # B's test figures are B's wafers only.
    assert set(summary["test"]) == {"all", "MX3A"}


def test_the_floor_withholds_the_blessing_and_nothing_is_pushed(runs):
    """A floor above any macro-F1 (1.01): the same data and model (cached), a new evaluation, not blessed."""
    a = runs["a"]
    gated = dataclasses.replace(a, min_macro_f1=1.01)
    before = sorted(os.listdir(a.serving_model_dir))
    summary = pattern_runner.run(gated)
    assert summary["blessed"] is False
    assert summary["pushed_model"] is None
    assert summary["exports"]["exported"] is False and "not blessed" in summary["exports"]["reason"]
    assert sorted(os.listdir(a.serving_model_dir)) == before
    with tf.io.gfile.GFile(
        os.path.join(
            latest_artifact(read_only_store(a.metadata_path), a.pipeline_name, "Trainer", "ModelRun").uri, BUDGET_FILE
        )
    ) as f:
        assert json.load(f)["train_examples"] == runs["summary_a"]["training"]["train_examples"]


def test_the_tuners_hyperparameters_reach_the_trainer(tmp_path):
    """--enable-tuning: the Tuner's best hyperparameters (not the defaults) build the pushed model."""
    config = PatternRunConfig(
        output_dir=str(tmp_path),
        product="WF7N",
        enable_tuning=True,
        tuner_trials=2,
        tuner_epochs=1,
        min_macro_f1=0,
        export=False,
        report=False,
        **{**SMALL, "epochs": 1},
    )
    summary = pattern_runner.run(config)
    store = read_only_store(config.metadata_path)
    tuned = latest_artifact(store, config.pipeline_name, "Tuner", "HyperParameters")
    with open(os.path.join(tuned.uri, "best_hyperparameters.txt")) as f:
        best = json.load(f)["values"]
    assert summary["training"]["architecture"] == {k: best[k] for k in ("architecture", "width", "depth")}
