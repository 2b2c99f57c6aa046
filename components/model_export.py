"""Shared by the TF Lite and ONNX exporters: the blessing gate, held-out dies, the parity check.

Both exporters act only on a model the Evaluator blessed (like the Pusher), convert the
SavedModel's dense signature (models/dense_signature.py), then score the same held-out dies through
`serving_default` (serialized tf.Examples, what TF Serving runs) and through the converted model,
and record the agreement in `export_report.json` and as artifact properties. A float32 export that
disagrees beyond its tolerance fails the component: it is not the model that was evaluated.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging
from sklearn.metrics import roc_auc_score
from tfx.components.util import model_utils
from tfx.types import artifact, artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.utils import path_utils

from models import dense_signature, features

MODEL_KEY = "model"
MODEL_BLESSING_KEY = "model_blessing"
EXAMPLES_KEY = "examples"
REPORT_FILE = "export_report.json"
EXPORTED_PROPERTY = "exported"  # int custom property of the output artifact: 1 exported, 0 skipped

# The inputs both exporters take: the Trainer's model, the Evaluator's blessing, and (optional)
# ExampleGen output whose test split checks the export against serving_default.
EXPORT_INPUTS = {
    MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
}

# Float32 conversions must reproduce serving_default to this absolute difference in probability.
FLOAT32_ATOL = 1e-4


def saved_model_dir(model: artifact.Artifact) -> str:
    """The SavedModel inside a Trainer `Model` artifact."""
    return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))


def gate_on_blessing(input_dict: dict, output: artifact.Artifact) -> bool:
    """True if the model is blessed; otherwise mark `output` as not exported and say why."""
    blessing = artifact_utils.get_single_instance(input_dict[MODEL_BLESSING_KEY])
    if model_utils.is_model_blessed(blessing):
        return True
    output.set_int_custom_property(EXPORTED_PROPERTY, 0)
    write_report(output.uri, {"exported": False, "reason": f"model not blessed ({blessing.uri})"})
    logging.info("Model not blessed by %s: nothing exported", blessing.uri)
    return False


def read_examples(input_dict: dict, split: str, limit: int, seed: int = 0) -> list[bytes]:
    """Up to `limit` serialized examples of one split, drawn from across the split, not its head
    (the ingest writes dies wafer by wafer)."""
    examples = input_dict.get(EXAMPLES_KEY) or []
    if not examples or limit <= 0:
        return []
    uri = artifact_utils.get_split_uri(examples, split)
    files = sorted(tf.io.gfile.glob(os.path.join(uri, "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    dataset = dataset.shuffle(max(10 * limit, 10_000), seed=seed, reshuffle_each_iteration=False).take(limit)
    return [r.numpy() for r in dataset]


def labels_of(serialized: list[bytes]) -> np.ndarray | None:
    """The final-test label of each example, or None if any example has none."""
    labels = []
    for record in serialized:
        feature = tf.train.Example.FromString(record).features.feature
        if features.LABEL_KEY not in feature:
            return None
        labels.append(feature[features.LABEL_KEY].int64_list.value[0])
    return np.asarray(labels)


def serving_default_probabilities(loaded, serialized: list[bytes], batch: int = 1024) -> np.ndarray:
    """What TF Serving answers for these examples: `serving_default` on the serialized records."""
    fn = loaded.signatures["serving_default"]
    parts = [
        fn(examples=tf.constant(serialized[i : i + batch]))[features.PROBABILITY_KEY].numpy().reshape(-1)
        for i in range(0, len(serialized), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def agreement(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> dict:
    """How closely `candidate` reproduces `reference` on the same dies (and both AUCs if labelled)."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    result = {
        "dies": int(len(reference)),
        "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "mean_abs_diff": float(diff.mean()) if len(diff) else 0.0,
    }
    if labels is not None and len(set(labels.tolist())) == 2:
        result["auc_saved_model"] = float(roc_auc_score(labels, reference))
        result["auc_export"] = float(roc_auc_score(labels, candidate))
    return result


def held_out_check(loaded, input_dict: dict, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Eval-split dies as (dense matrix, serving_default probabilities, labels); empty if no examples."""
    serialized = read_examples(input_dict, "test", limit)
    matrix = dense_signature.dense_matrix_from_examples(serialized, dense_signature.loaded_columns(loaded))
    return matrix, serving_default_probabilities(loaded, serialized), labels_of(serialized)


def write_report(uri: str, report: dict) -> None:
    tf.io.gfile.makedirs(uri)
    with tf.io.gfile.GFile(os.path.join(uri, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
