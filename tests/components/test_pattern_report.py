"""PatternReport: construction, and Executor().Do() on the map ExampleGen's real examples of two
products with a small real pattern model; the page's figures against a recomputation, the Grad-CAM
PNGs against Grad-CAM itself."""

from __future__ import annotations

import json
import os
import shutil

import matplotlib
import numpy as np
import pytest
import tensorflow as tf
from tfx import types
from tfx.types import standard_artifacts

from components.pattern_report import executor as ex
from components.pattern_report import report
from components.pattern_report.component import PatternReport, PatternReportArtifact
from data.patterns import (
    LABEL_KEY,
    LOT_KEY,
    MAP_KEY,
    MAP_SIZE,
    PATTERN_CLASSES,
    PRODUCT_KEY,
    SIDECAR_PATTERN,
    WAFER_KEY,
)
from data.synthetic import GeneratorConfig
from data.writers import write_dataset
from models import gradcam, pattern_metrics
from tests.example_gen_harness import run_example_gen
from tests.pattern_serving import train_small_model

PRODUCTS = {"WF7N": 0.7, "MX3A": 0.6}  # product: share of wafers with a pattern


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    from components.wafer_map_example_gen import executor as gen

    data = str(tmp_path_factory.mktemp("pattern_report_data"))
    for product, share in PRODUCTS.items():
        config = GeneratorConfig(
            lots=6, wafers_per_lot=5, seed=41, product=product, patterns=True, maps_only=True, defect_wafer_share=share
        )
        write_dataset(config, data, "stdf")
    out = str(tmp_path_factory.mktemp("pattern_report_examples"))
    run_example_gen(
        gen.Executor, data, out, input_format="stdf", input_pattern="wafers/*/*.stdf", labels_pattern=SIDECAR_PATTERN
    )
    artifact = standard_artifacts.Examples()
    artifact.uri = out
    artifact.split_names = '["train", "validation", "test"]'
    return artifact


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("pattern_report_model")
    serving = train_small_model(str(root / "train"), seed=5)
    artifact = standard_artifacts.Model()
    artifact.uri = str(root / "model")
    shutil.move(serving, os.path.join(artifact.uri, "Format-Serving"))  # where the Trainer puts it
    return artifact


@pytest.fixture(scope="module")
def written(examples, model, tmp_path_factory):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path_factory.mktemp("blessing"))
    blessing.set_int_custom_property("blessed", 1)
    output = PatternReportArtifact()
    output.uri = str(tmp_path_factory.mktemp("pattern_report"))
    inputs = {ex.EXAMPLES_KEY: [examples], ex.MODEL_KEY: [model], ex.BLESSING_KEY: [blessing]}
    ex.Executor().Do(inputs, {ex.REPORT_KEY: [output]}, {ex.SEED_KEY: 3, ex.SAMPLE_SIZE_KEY: 12})
    with open(os.path.join(output.uri, ex.JSON_FILE)) as f:
        figures = json.load(f)
    with open(os.path.join(output.uri, ex.HTML_FILE)) as f:
        html = f.read()
    return output.uri, figures, html


def test_component_construction():
    examples = types.Channel(type=standard_artifacts.Examples)
    model = types.Channel(type=standard_artifacts.Model)
    component = PatternReport(examples=examples, model=model, seed=2)
    assert component.outputs["report"].type_name == "components.PatternReport"
    assert component.exec_properties == {"seed": 2, "sample_size": 12}
    assert set(component.inputs) == {"examples", "model"}
    with_all = PatternReport(
        examples=examples,
        model=model,
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
    )
    assert set(with_all.inputs) == {"examples", "model", "evaluation", "model_blessing"}
    with pytest.raises(ValueError, match="sample_size"):
        PatternReport(examples=examples, model=model, sample_size=0)
    import components

    assert components.PatternReport.TYPE_NAME == "components.PatternReport"


def _recomputed(examples, model):
    data, records = ex.read_split(examples.uri)
    loaded = tf.saved_model.load(os.path.join(model.uri, "Format-Serving"))
    out = loaded.signatures["serving_default"](examples=tf.constant(records))
    return data, out["probabilities"].numpy(), out["patterns"].numpy()


def test_figures_per_product_equal_a_recomputation(examples, model, written):
    _, figures, html = written
    data, probabilities, patterns = _recomputed(examples, model)
    assert set(data[PRODUCT_KEY]) == set(PRODUCTS) == set(figures["products"])
    assert figures["wafers"] == len(data[LABEL_KEY]) == sum(p["wafers"] for p in figures["products"].values())
    thresholds = np.array([figures["thresholds"][c] for c in PATTERN_CLASSES], np.float32)
    np.testing.assert_array_equal(pattern_metrics.predict(probabilities, thresholds), patterns)
    for product, p in figures["products"].items():
        rows = data[PRODUCT_KEY] == product
        labels, decisions = data[LABEL_KEY][rows], patterns[rows]
        assert p["wafers"] == rows.sum()
        assert p["macro_f1"] == pytest.approx(pattern_metrics.macro_f1(labels, decisions))
        low, high = p["macro_f1_95"]
        assert 0 <= low <= high <= 1
        # An interval with width, except for a product whose wafers are all classified right: every
        # resample of those is perfect too, [1, 1]. Seen on this small set with the same seeds on one
        # machine after it had passed on another: the trained model is not the same everywhere.
        assert low < high or (p["macro_f1"] == pytest.approx(1.0) and low == high == 1.0)
        recall = pattern_metrics.per_class_recall(labels, decisions)
        for name, value in p["recall"].items():
            assert (value is None and np.isnan(recall[name])) or value == pytest.approx(recall[name])
        by_class = {row["class"]: row for row in p["confusion"]["per_class"]}
        y = pattern_metrics.with_none(labels)
        assert [by_class[c]["support"] for c in (*PATTERN_CLASSES, "none")] == y.sum(axis=0).tolist()
        exact = int(sum(np.array_equal(a, b) for a, b in zip(labels, decisions, strict=True)))
        assert p["confusion"]["exact_matches"] == exact
        assert f"{p['macro_f1']:.3f}" in html and f"{low:.3f} - {high:.3f}" in html
    # The bootstrap is seeded: the same interval again.
    rows = data[PRODUCT_KEY] == "WF7N"
    again = report.bootstrap_macro_f1(data[LABEL_KEY][rows], patterns[rows], seed=3)
    assert again == pytest.approx(figures["products"]["WF7N"]["macro_f1_95"])
    assert '<span class="ok">blessed</span>' in html and figures["blessed"] is True
    assert figures["evaluator"] is None


def test_gradcam_sample_images_have_the_maps_shape_and_values(examples, model, written):
    uri, figures, html = written
    data, probabilities, patterns = _recomputed(examples, model)
    sample = figures["sample"]
    assert len(sample) == min(12, figures["wafers"])
    predicted = {c for w in sample for c in w["predicted"].split(";")}
    present = {report.label_text(row) for row in patterns}
    assert {c for s in present for c in s.split(";")} <= predicted  # every predicted class shown at least once
    keras_model = ex.load_keras(os.path.join(model.uri, "Format-Serving"))
    index = {(lot, wafer): i for i, (lot, wafer) in enumerate(zip(data[LOT_KEY], data[WAFER_KEY], strict=True))}
    colormap = matplotlib.colormaps[report.HEAT_COLORMAP]
    for w in sample:
        for name in (w["map_png"], w["gradcam_png"]):
            assert f'src="{name}"' in html
            assert matplotlib.image.imread(os.path.join(uri, name)).shape[:2] == (MAP_SIZE, MAP_SIZE)
        i = index[(w["lot_id"], w["wafer_id"])]
        target = PATTERN_CLASSES.index(w["explained"])
        assert w["predicted"] == report.label_text(patterns[i])
        if patterns[i].any():
            assert patterns[i, target] == 1 and probabilities[i, target] == max(probabilities[i][patterns[i] == 1])
        heat, _ = gradcam.gradcam(keras_model, data[MAP_KEY][i], target)
        image = matplotlib.image.imread(os.path.join(uri, w["gradcam_png"]))[..., :3]
        np.testing.assert_allclose(image, colormap(heat)[..., :3], atol=1.5 / 255)
        map_image = matplotlib.image.imread(os.path.join(uri, w["map_png"]))[..., :3]
        np.testing.assert_allclose(map_image, report.map_rgb(data[MAP_KEY][i]), atol=1.5 / 255)


def test_sample_covers_each_predicted_class_and_is_seeded():
    decisions = np.zeros((40, len(PATTERN_CLASSES)), np.int64)
    decisions[3, 0] = decisions[17, 5] = decisions[30, 7] = decisions[30, 2] = 1
    chosen = report.sample_wafers(decisions, seed=1, size=5)
    assert len(chosen) == 5 and {3, 17, 30} <= set(chosen)
    assert chosen == report.sample_wafers(decisions, seed=1, size=5)
    assert report.sample_wafers(decisions, seed=1, size=50) == list(range(40))
