"""PatternReport executor: the pattern model on the test split, per product, with Grad-CAM samples.

Reads the wafer-map examples' test split, classifies them with the model's `serving_default` (the
tf.Example path a server takes, at the thresholds exported with the model), explains a sample with
Grad-CAM on the Keras model stored beside the SavedModel, and writes report.html, report.json and
the sample's PNGs (`images/`) into the output artifact's directory.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.model_export import saved_model_dir
from components.pattern_report import report
from data.patterns import LABEL_KEY, LOT_KEY, MAP_KEY, MAP_SIZE, PATTERN_CLASSES, PRODUCT_KEY, WAFER_KEY
from models import gradcam, pattern_metrics
from models.pattern_preprocessing import MAP_SHAPE
from models.pattern_trainer import KERAS_MODEL_PATH, PATTERNS_KEY, PROBABILITIES_KEY, THRESHOLDS_PATH
from pipeline import summary

EXAMPLES_KEY, MODEL_KEY, EVALUATION_KEY, BLESSING_KEY = "examples", "model", "evaluation", "model_blessing"
REPORT_KEY = "report"
SEED_KEY, SAMPLE_SIZE_KEY = "seed", "sample_size"
SPLIT = "test"
HTML_FILE, JSON_FILE, IMAGE_DIR = "report.html", "report.json", "images"
BATCH = 1024
_SPEC = {
    MAP_KEY: tf.io.FixedLenFeature([MAP_SIZE * MAP_SIZE * MAP_SHAPE[-1]], tf.float32),
    LABEL_KEY: tf.io.FixedLenFeature([len(PATTERN_CLASSES)], tf.int64),
    PRODUCT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    LOT_KEY: tf.io.FixedLenFeature([], tf.string),
    WAFER_KEY: tf.io.FixedLenFeature([], tf.string),
}


def _one(input_dict: dict, key: str):
    artifacts = input_dict.get(key) or []
    return artifacts[0] if artifacts else None


def read_split(examples_uri: str, split: str = SPLIT) -> tuple[dict[str, np.ndarray], list[bytes]]:
    """The split's maps (n, H, W, C), labels, products, lots, wafers, and the serialized examples."""
    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    if not files:
        raise ValueError(f"PatternReport: no {split} split in {examples_uri}")
    parts, records = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(BATCH):
        records.extend(batch.numpy().tolist())
        parts.append({k: v.numpy() for k, v in tf.io.parse_example(batch, _SPEC).items()})
    if not records:
        raise ValueError(f"PatternReport: the {split} split in {examples_uri} is empty")
    data = {k: np.concatenate([p[k] for p in parts]) for k in _SPEC}
    data[MAP_KEY] = data[MAP_KEY].reshape(-1, *MAP_SHAPE)
    for key in (PRODUCT_KEY, LOT_KEY, WAFER_KEY):
        data[key] = np.array([v.decode("utf-8") for v in data[key]])
    return data, records


def classify(loaded, records: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, patterns) from `serving_default`, batch by batch."""
    fn = loaded.signatures["serving_default"]
    outs = [fn(examples=tf.constant(records[i : i + BATCH])) for i in range(0, len(records), BATCH)]
    return (
        np.concatenate([o[PROBABILITIES_KEY].numpy() for o in outs]),
        np.concatenate([o[PATTERNS_KEY].numpy() for o in outs]).astype(np.int64),
    )


def read_thresholds(model_dir: str) -> np.ndarray:
    with tf.io.gfile.GFile(os.path.join(model_dir, THRESHOLDS_PATH)) as f:
        by_class = json.load(f)
    return np.array([by_class[name] for name in PATTERN_CLASSES], np.float32)


def load_keras(model_dir: str) -> keras.Model:
    """The float32 Keras model stored beside the SavedModel (read through a local copy: it may be on gs://)."""
    with tempfile.TemporaryDirectory(prefix="pattern_report") as local:
        path = os.path.join(local, "pattern_model.keras")
        tf.io.gfile.copy(os.path.join(model_dir, KERAS_MODEL_PATH), path, overwrite=True)
        return keras.models.load_model(path, compile=False)


def _stem(lot_id: str, wafer_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{lot_id}_{wafer_id}")


def build(
    data: dict,
    probabilities: np.ndarray,
    thresholds: np.ndarray,
    keras_model: keras.Model,
    out_dir: str,
    seed: int = 0,
    sample_size: int = report.SAMPLE_SIZE,
) -> dict:
    """The report's context: figures per product and overall, and the Grad-CAM sample (PNGs into
    `out_dir`/images)."""
    labels = data[LABEL_KEY]
    decisions = pattern_metrics.predict(probabilities, thresholds)
    products = {}
    for product in sorted(set(data[PRODUCT_KEY])):
        rows = data[PRODUCT_KEY] == product
        products[product or "(unnamed)"] = report.product_figures(labels[rows], probabilities[rows], thresholds, seed)
    sample = []
    for i in report.sample_wafers(decisions, seed, sample_size):
        target = report.explained_class(probabilities[i], decisions[i])
        heat, _ = gradcam.gradcam(keras_model, data[MAP_KEY][i], target)
        map_png, heat_png = report.write_pngs(
            os.path.join(out_dir, IMAGE_DIR), _stem(data[LOT_KEY][i], data[WAFER_KEY][i]), data[MAP_KEY][i], heat
        )
        sample.append(
            report.SampleWafer(
                lot_id=str(data[LOT_KEY][i]),
                wafer_id=str(data[WAFER_KEY][i]),
                product=str(data[PRODUCT_KEY][i]),
                labelled=report.label_text(labels[i]),
                predicted=report.label_text(decisions[i]),
                explained=PATTERN_CLASSES[target],
                probability=float(probabilities[i, target]),
                map_png=f"{IMAGE_DIR}/{map_png}",
                gradcam_png=f"{IMAGE_DIR}/{heat_png}",
            ).__dict__
        )
    return {
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "split": SPLIT,
        "wafers": int(len(labels)),
        "classes": list(PATTERN_CLASSES),
        "scored_classes": [*PATTERN_CLASSES, "none"],
        "thresholds": dict(zip(PATTERN_CLASSES, map(float, thresholds), strict=True)),
        "seed": seed,
        "bootstrap": report.BOOTSTRAP,
        "overall": report.product_figures(labels, probabilities, thresholds, seed),
        "products": products,
        "sample": sample,
    }


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API)
        output = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        examples = _one(input_dict, EXAMPLES_KEY)
        model_dir = saved_model_dir(_one(input_dict, MODEL_KEY))
        data, records = read_split(examples.uri)
        probabilities, patterns = classify(tf.saved_model.load(model_dir), records)
        thresholds = read_thresholds(model_dir)
        if not np.array_equal(patterns, pattern_metrics.predict(probabilities, thresholds)):
            raise ValueError(
                f"PatternReport: {THRESHOLDS_PATH} of {model_dir} disagrees with the model's patterns output"
            )
        tf.io.gfile.makedirs(output.uri)
        blessing, evaluation = _one(input_dict, BLESSING_KEY), _one(input_dict, EVALUATION_KEY)
        # Grad-CAM PNGs go through a local directory (matplotlib writes files), then beside the page.
        with tempfile.TemporaryDirectory(prefix="pattern_report_out") as local:
            context = build(
                data,
                probabilities,
                thresholds,
                load_keras(model_dir),
                local,
                seed=int(exec_properties.get(SEED_KEY) or 0),
                sample_size=int(exec_properties.get(SAMPLE_SIZE_KEY) or report.SAMPLE_SIZE),
            )
            tf.io.gfile.makedirs(os.path.join(output.uri, IMAGE_DIR))
            for name in sorted(os.listdir(os.path.join(local, IMAGE_DIR))) if context["sample"] else []:
                source, target = os.path.join(local, IMAGE_DIR, name), os.path.join(output.uri, IMAGE_DIR, name)
                tf.io.gfile.copy(source, target, overwrite=True)
        context["blessed"] = None if blessing is None else bool(blessing.get_int_custom_property("blessed"))
        context["evaluator"] = summary.overall_metrics(evaluation.uri) if evaluation is not None else None
        context["model"] = model_dir
        with tf.io.gfile.GFile(os.path.join(output.uri, HTML_FILE), "w") as f:
            f.write(report.render(context))
        with tf.io.gfile.GFile(os.path.join(output.uri, JSON_FILE), "w") as f:
            json.dump(context, f, indent=1, default=float)
        logging.info("PatternReport: %s", os.path.join(output.uri, HTML_FILE))
