"""The Evaluator's executor, with the AUC change threshold sized to the test split's noise.

A fixed "at most 0.01 AUC worse than the blessed model" means different things on 300 and on
3,000 final-test fails: on a few lots it refuses a model as good as the last one about as often as
it refuses a worse one. Before TFMA runs, this executor scores the test split with the candidate and
the baseline (both `serving_default`, as TFMA will), resamples the test lots with replacement
(paired: both models on the same resampled dies, models/evaluation.paired_auc_change) and sets

    tolerance = min(cap, Z * standard error of the AUC difference)

as the absolute change threshold: a candidate is refused when its drop is larger than noise at
one-sided 95% explains, and always when it is larger than the cap (the configured threshold). The
figures go to `change_gate.json` in the evaluation artifact and to its custom properties. Without
a baseline (the first run) it is TFX's Evaluator unchanged.

With a `drift_report` input (components/drift_check) that says the data drifted, the blessing is
withheld whatever TFMA found: the blessing artifact gets NOT_BLESSED, `blessed` 0 and a `reason`,
so the Pusher and the exporters publish nothing and tomorrow's baseline stays the last good model.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_model_analysis as tfma
from absl import logging
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.drift_check.executor import read_drift
from components.model_export import saved_model_dir, serving_default_probabilities
from models import evaluation, features

Z = 1.645  # one-sided 95%
GATE_FILE = "change_gate.json"
TOLERANCE_PROPERTY = "auc_change_tolerance"
DRIFT_REPORT_KEY = "drift_report"
REASON_PROPERTY = "reason"


def read_split(examples, split: str) -> list[bytes]:
    """Every serialized example of one split."""
    uris = artifact_utils.get_split_uris(examples, split)
    files = sorted(f for uri in uris for f in tf.io.gfile.glob(os.path.join(uri, "*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def lots_and_labels(serialized: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    spec = {
        features.LOT_KEY: tf.io.FixedLenFeature([], tf.string),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = tf.io.parse_example(tf.constant(serialized), spec)
    return parsed[features.LOT_KEY].numpy().astype(str), parsed[features.LABEL_KEY].numpy()


def change_thresholds(config: tfma.EvalConfig):
    """Every absolute AUC change threshold in the config (overall-slice thresholds included)."""
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            if metric.class_name != "AUC":
                continue
            thresholds = [metric.threshold] + [t.threshold for t in metric.per_slice_thresholds]
            for threshold in thresholds:
                if threshold.HasField("change_threshold") and threshold.change_threshold.HasField("absolute"):
                    yield threshold.change_threshold


def gate(frame: pd.DataFrame, cap: float, z: float = Z) -> dict:
    """The change gate's figures for a frame of lot_id, ft_fail, candidate and baseline scores."""
    change = evaluation.paired_auc_change(frame, "candidate", "baseline")
    tolerance = min(cap, z * change["se"])
    return {
        **change,
        "z": z,
        "cap": cap,
        "tolerance": tolerance,
        "blessable": change["difference"] >= -tolerance,
        "dies": int(len(frame)),
        "fails": int(frame[features.LABEL_KEY].sum()),
        "lots": int(frame[features.LOT_KEY].nunique()),
    }


class Executor(evaluator_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):
        baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        config = tfma.EvalConfig()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.EVAL_CONFIG_KEY], config)
        caps = list(change_thresholds(config))
        report = None
        if baselines and caps:
            splits = json.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY) or "null") or ["test"]
            examples = input_dict[standard_component_specs.EXAMPLES_KEY]
            serialized = [r for split in splits for r in read_split(examples, split)]
            lots, labels = lots_and_labels(serialized)
            candidate = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
            frame = pd.DataFrame({features.LOT_KEY: lots, features.LABEL_KEY: labels})
            for name, model in (("candidate", candidate), ("baseline", baselines[0])):
                frame[name] = serving_default_probabilities(tf.saved_model.load(saved_model_dir(model)), serialized)
            cap = -max(c.absolute.value for c in caps)  # absolute thresholds are negative: the allowed drop
            report = gate(frame, cap)
            for threshold in caps:
                threshold.absolute.value = -report["tolerance"]
            exec_properties = {
                **exec_properties,
                standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(config),
            }
            logging.info("Change gate on %d test dies of %d lots: %s", len(frame), report["lots"], report)
        super().Do(input_dict, output_dict, exec_properties)
        output = artifact_utils.get_single_instance(output_dict[standard_component_specs.EVALUATION_KEY])
        if report is not None:
            with tf.io.gfile.GFile(os.path.join(output.uri, GATE_FILE), "w") as f:
                json.dump(report, f, indent=1, sort_keys=True)
            output.set_float_custom_property(TOLERANCE_PROPERTY, report["tolerance"])
        drift_reports = input_dict.get(DRIFT_REPORT_KEY) or []
        if drift_reports:
            withhold_if_drifted(read_drift(drift_reports[0].uri), output_dict)


def withhold_if_drifted(drift: dict, output_dict) -> None:
    """Turn a blessing into NOT_BLESSED, with the reason, when the data drifted."""
    if not drift.get("drifted"):
        return
    blessing = artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY])
    moved = drift["drifted_features"]
    reason = (
        f"data drift: {len(moved)} test(s) moved by more than Jensen-Shannon {drift['js_bound']:g} "
        f"from every earlier span ({', '.join(moved[:5])}{', ...' if len(moved) > 5 else ''})"
    )
    blessed = os.path.join(blessing.uri, constants.BLESSED_FILE_NAME)
    if tf.io.gfile.exists(blessed):
        tf.io.gfile.remove(blessed)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME), "w") as f:
        f.write(reason)
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.NOT_BLESSED_VALUE)
    blessing.set_string_custom_property(REASON_PROPERTY, reason)
    logging.warning("Blessing withheld: %s", reason)
