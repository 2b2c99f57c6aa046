"""WaferReport executor: gather the run's artifacts, read the tester files back, build and render.

Writes `report.html` (self-contained: figures as data URIs) and `report.json` (every number the page
shows, without the figures) into the output artifact's directory.
"""

from __future__ import annotations

import datetime
import json
import os

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.drift_check.executor import read_drift
from components.model_export import EXPORTED_PROPERTY, saved_model_dir, serving_default_probabilities
from components.model_export import REPORT_FILE as EXPORT_REPORT_FILE
from components.noise_aware_evaluator.executor import GATE_FILE, REASON_PROPERTY
from components.wafer_example_gen import executor as example_gen_executor
from components.wafer_example_gen.executor import REPORT_FILE as INGEST_REPORT_FILE
from components.wafer_report import health, report
from data.program import PROGRAM_FILE, TestProgram
from models import dense_signature, operating_point
from models.features import PROBABILITY_KEY
from models.training import BUDGET_FILE
from pipeline import predict, summary

# Input and output keys, and parameters.
EXAMPLES_KEY, MODEL_KEY, EVALUATION_KEY, BLESSING_KEY = "examples", "model", "evaluation", "model_blessing"
ANOMALIES_KEY, MODEL_RUN_KEY, PUSHED_MODEL_KEY = "anomalies", "model_run", "pushed_model"
TFLITE_KEY, ONNX_KEY = "tflite_model", "onnx_model"
STATISTICS_KEY, BASELINE_STATISTICS_KEY, SCHEMA_KEY = "statistics", "baseline_statistics", "schema"
REPORT_KEY = "report"
INPUT_BASE_KEY, INPUT_PATTERN_KEY, INPUT_FORMAT_KEY = "input_base", "input_pattern", "input_format"
PIPELINE_NAME_KEY, SEED_KEY = "pipeline_name", "seed"
DRIFT_REPORT_KEY = "drift_report"
METADATA_PATH_KEY = "metadata_path"  # local SQLite MLMD, for component times; empty on Kubeflow
HTML_FILE, JSON_FILE = summary.REPORT_HTML, "report.json"
# Only what the wafer maps, Paretos and yield tables need is kept of each die read from the files.
DIE_COLUMNS = ["lot_id", "wafer_id", "x", "y", "head", "site", "hard_bin", "soft_bin", "sort_pass"]
BATCH = 4096


def _one(input_dict: dict, key: str):
    artifacts = input_dict.get(key) or []
    return artifacts[0] if artifacts else None


def _json(path: str):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _transformed(loaded, records: list[bytes]) -> list[dict]:
    """`transform_features` of the model on the records, batch by batch."""
    fn = loaded.signatures["transform_features"]
    return [fn(examples=tf.constant(records[i : i + BATCH])) for i in range(0, len(records), BATCH)]


def read_dies(input_base: str, pattern: str, input_format: str) -> pd.DataFrame:
    """Every die of every file (sort fails included), as the ingest and the predict client read them."""
    files = sorted(tf.io.gfile.glob(os.path.join(input_base, pattern)))
    if not files:
        raise ValueError(f"WaferReport: no tester files match {os.path.join(input_base, pattern)}")
    frames = [w.dies[[c for c in DIE_COLUMNS if c in w.dies]] for w in predict.read_wafers(files, input_format)]
    dies = pd.concat(frames, ignore_index=True)
    if "head" not in dies:
        dies["head"] = 1
    return dies.astype({"x": np.int64, "y": np.int64})


def die_bins(examples_uri: str, exec_properties: dict) -> pd.DataFrame:
    """Every die with its bins: what the ExampleGen kept beside the examples, or (an Examples
    artifact from before it kept them, e.g. a cached one) the tester files decoded again."""
    dies = example_gen_executor.read_die_bins(examples_uri)
    if dies is not None:
        return dies
    return read_dies(
        exec_properties[INPUT_BASE_KEY], exec_properties[INPUT_PATTERN_KEY], exec_properties[INPUT_FORMAT_KEY]
    )


def export_state(artifact) -> str:
    if artifact is None:
        return "not configured"
    if artifact.get_int_custom_property(EXPORTED_PROPERTY) == 1:
        return artifact.uri
    reason = (_json(os.path.join(artifact.uri, EXPORT_REPORT_FILE)) or {}).get("reason", "not exported")
    return f"not exported: {reason}"


def drift_record(input_dict: dict, exec_properties: dict) -> dict:
    """Drift of this run's training data against the previous run's (components/wafer_report/health.py):
    the previous statistics come in as an input (Kubeflow) or from the local MLMD."""
    current, previous = _one(input_dict, STATISTICS_KEY), _one(input_dict, BASELINE_STATISTICS_KEY)
    schema = _one(input_dict, SCHEMA_KEY)
    if current is None or schema is None:
        return {"state": "not wired"}
    previous_uri = previous.uri if previous is not None and previous.uri != current.uri else None
    if previous_uri is None:
        previous_uri = health.previous_statistics_uri(
            exec_properties.get(METADATA_PATH_KEY) or "", exec_properties.get(PIPELINE_NAME_KEY) or "", current.uri
        )
    if previous_uri is None:
        return {"state": "no previous run"}
    rows = health.drift(
        health.split_statistics(current.uri), health.split_statistics(previous_uri), health.read_schema(schema.uri)
    )
    return {
        "state": "compared",
        "previous": previous_uri,
        "split": health.DRIFT_SPLIT,
        "features": len(rows),
        "over": sum(r["over"] for r in rows),
        "top": rows[:15],
        "js_bound": health.JS_BOUND,
        "l_infty_bound": health.L_INFTY_BOUND,
    }


def run_record(input_dict: dict, exec_properties: dict, run_id: str | None = None) -> dict:
    examples = _one(input_dict, EXAMPLES_KEY)
    ingest = _json(os.path.join(examples.uri, INGEST_REPORT_FILE)) or {}
    blessing = _one(input_dict, BLESSING_KEY)
    pushed = _one(input_dict, PUSHED_MODEL_KEY)
    model_run = _one(input_dict, MODEL_RUN_KEY)
    anomalies = _one(input_dict, ANOMALIES_KEY)
    evaluation = _one(input_dict, EVALUATION_KEY)
    is_pushed = pushed is not None and pushed.get_int_custom_property("pushed") == 1
    drift_report = _one(input_dict, DRIFT_REPORT_KEY)
    return {
        "pipeline": exec_properties.get(PIPELINE_NAME_KEY) or "waferflow",
        "run_id": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "ingest": ingest,
        "examples_per_split": ingest.get("examples_per_split", {}),
        "program": summary.program_summary(examples.uri),
        "training": _json(os.path.join(model_run.uri, BUDGET_FILE)) if model_run else None,
        "tfma_metrics": summary.overall_metrics(evaluation.uri),
        "change_gate": _json(os.path.join(evaluation.uri, GATE_FILE)),
        "blessed": bool(blessing.get_int_custom_property("blessed")),
        "pushed_model": pushed.get_string_custom_property("pushed_destination") if is_pushed else None,
        "exports": {
            "TF Lite": export_state(_one(input_dict, TFLITE_KEY)),
            "ONNX": export_state(_one(input_dict, ONNX_KEY)),
        },
        "anomalies": summary.anomalies_per_split(anomalies.uri) if anomalies else {},
        "drift": drift_record(input_dict, exec_properties),
        "drift_gate": read_drift(drift_report.uri) if drift_report is not None else None,
        "blessing_withheld": blessing.get_string_custom_property(REASON_PROPERTY) or None,
        "components": health.component_times(exec_properties.get(METADATA_PATH_KEY) or "", run_id),
    }


def gather(input_dict: dict, exec_properties: dict, run_id: str | None = None) -> report.ReportInputs:
    examples = _one(input_dict, EXAMPLES_KEY)
    model_dir = saved_model_dir(_one(input_dict, MODEL_KEY))
    loaded = tf.saved_model.load(model_dir)
    columns = dense_signature.loaded_columns(loaded)
    test, test_records = summary._split_frame(examples.uri, "test")
    train, train_records = summary._split_frame(examples.uri, "train")
    test["model"] = serving_default_probabilities(loaded, test_records)
    transformed = _transformed(loaded, test_records)
    margins = (
        pd.DataFrame(
            {
                key[: -len("_margin_xf")]: np.concatenate([part[key].numpy().reshape(-1) for part in transformed])
                for key in transformed[0]
                if key.endswith("_margin_xf")
            }
        )
        if transformed
        else pd.DataFrame()
    )
    dense = dense_signature.dense_function(loaded)
    with tf.io.gfile.GFile(os.path.join(examples.uri, PROGRAM_FILE)) as f:
        program = TestProgram.from_json(f.read())
    return report.ReportInputs(
        test=test,
        x_test=dense_signature.dense_matrix_from_examples(test_records, columns),
        x_train=dense_signature.dense_matrix_from_examples(train_records, columns),
        y_train=train["ft_fail"].to_numpy(),
        columns=columns,
        dies=die_bins(examples.uri, exec_properties),
        score_dense=lambda x: dense(tf.constant(x, tf.float32))[PROBABILITY_KEY].numpy().reshape(-1),
        margins=margins,
        op=operating_point.find(model_dir),
        test_names={t.feature: t.name for t in program.tests},
        run=run_record(input_dict, exec_properties, run_id),
        seed=int(exec_properties.get(SEED_KEY) or 0),
    )


def _without_images(value):
    if isinstance(value, dict):
        return {k: _without_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_images(v) for v in value]
    if isinstance(value, str) and value.startswith("data:image/"):
        return "<image>"
    return value


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        output = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        run_id = self._context.pipeline_run_id if self._context else None
        context = report.build(gather(input_dict, exec_properties, run_id))
        tf.io.gfile.makedirs(output.uri)
        with tf.io.gfile.GFile(os.path.join(output.uri, HTML_FILE), "w") as f:
            f.write(report.render(context))
        with tf.io.gfile.GFile(os.path.join(output.uri, JSON_FILE), "w") as f:
            json.dump(_without_images(context), f, indent=1, default=float)
        logging.info("WaferReport: %s", os.path.join(output.uri, HTML_FILE))
