"""Run the pattern pipeline locally (`waferflow run-patterns`, `make run-patterns`).

LocalDagRunner, Beam DirectRunner and SQLite MLMD as for the die pipeline (pipeline/local_runner.py).
Without --data-dir a synthetic maps-only dataset of the product is generated first (thousands of
wafers a minute). `--base-model` names a pattern model of another product to transfer from: it is
staged as a Model artifact (a copy, so a later push over it cannot change what this run's lineage
records) and imported into MLMD by the pipeline's Importer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import tensorflow as tf
from tfx import v1 as tfx

from components.model_export import REPORT_FILE as EXPORT_REPORT_FILE
from components.pattern_exporter.component import PatternModelExports
from components.pattern_report.component import PatternReportArtifact
from components.pattern_report.executor import HTML_FILE as REPORT_HTML
from data import fs
from data.patterns import SCORED_CLASSES
from models.pattern_metrics import MACRO_F1, recall_name
from models.pattern_trainer import BUDGET_FILE, KERAS_MODEL_PATH
from pipeline import beam_args, preflight
from pipeline.config import PatternRunConfig
from pipeline.console import UsageError
from pipeline.metadata import read_only_store
from pipeline.pattern_pipeline import create_pattern_pipeline
from pipeline.summary import latest_artifact

SERVING_FOLDER = "Format-Serving"  # where TFX's Trainer writes the serving model inside a Model artifact


def _newest_version(folder: str) -> str:
    """A Pusher's serving directory holds numbered versions: the newest; any other folder as it is."""
    if not tf.io.gfile.isdir(folder):
        return folder
    versions = [v.rstrip("/") for v in tf.io.gfile.listdir(folder) if re.fullmatch(r"\d+/?", v)]
    return os.path.join(folder, max(versions, key=int)) if versions else folder


def stage_base_model(path: str, output_dir: str) -> str:
    """The URI of a Model artifact (a folder with Format-Serving/) holding the pattern model at `path`.

    `path` may be a Model artifact (it has Format-Serving/: used in place), a Pusher's serving
    directory (the newest version is copied), a pattern SavedModel directory or a `.keras` file
    (copied). The copy is keyed by a hash of the source's path and files, so re-running with the same
    base model imports the same artifact (and the Trainer's cache holds)."""
    if not fs.exists(path):
        raise UsageError(f"--base-model {path} does not exist")
    if tf.io.gfile.isdir(os.path.join(path, SERVING_FOLDER)):
        return path
    source = _newest_version(path)
    keras_file = source if source.endswith(".keras") else os.path.join(source, KERAS_MODEL_PATH)
    if not fs.exists(keras_file):
        raise UsageError(
            f"--base-model {path}: no pattern Keras model at {keras_file} (give a pattern pipeline's serving "
            "directory, a pattern Model artifact, or a .keras file)"
        )
    digest = hashlib.sha256(os.path.abspath(keras_file).encode())
    with tf.io.gfile.GFile(keras_file, "rb") as f:
        digest.update(f.read())
    uri = os.path.join(os.path.abspath(output_dir), "base_models", digest.hexdigest()[:16])
    target = os.path.join(uri, SERVING_FOLDER)
    if not fs.exists(os.path.join(target, KERAS_MODEL_PATH)):
        if source.endswith(".keras"):
            tf.io.gfile.makedirs(os.path.dirname(os.path.join(target, KERAS_MODEL_PATH)))
            tf.io.gfile.copy(source, os.path.join(target, KERAS_MODEL_PATH), overwrite=True)
        else:
            _copy_tree(source, target)
    return uri


def _copy_tree(source: str, target: str) -> None:
    for folder, _, files in tf.io.gfile.walk(source):
        destination = os.path.join(target, os.path.relpath(folder, source))
        tf.io.gfile.makedirs(destination)
        for name in files:
            tf.io.gfile.copy(os.path.join(folder, name), os.path.join(destination, name), overwrite=True)


def build(config: PatternRunConfig) -> tfx.dsl.Pipeline:
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    pipeline = create_pattern_pipeline(
        config,
        pipeline_root=config.pipeline_root,
        data_root=os.path.abspath(config.dataset_dir),
        serving_model_dir=os.path.abspath(config.serving_model_dir),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
        beam_pipeline_args=config.beam_pipeline_args(),
        base_model_uri=stage_base_model(config.base_model, config.output_dir) if config.base_model else "",
    )
    beam_args.validate(pipeline.beam_pipeline_args)
    return pipeline


def execute(config: PatternRunConfig, pipeline: tfx.dsl.Pipeline) -> dict:
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return pattern_summary(config.metadata_path, config.pipeline_name)


def run(config: PatternRunConfig) -> dict:
    preflight.ensure_pattern_dataset(config)
    return execute(config, build(config))


def _slice_metrics(evaluation_uri: str) -> dict[str, dict[str, float]]:
    """TFMA's figures per slice: "all" and each product, {metric: value}."""
    import tensorflow_model_analysis as tfma

    slices = {}
    for slice_key, metrics in tfma.load_eval_result(evaluation_uri).slicing_metrics:
        name = "all" if slice_key == () else "/".join(str(v) for _, v in slice_key)
        values = next(iter(metrics.values()))[""]
        slices[name] = {k: float(v["doubleValue"]) for k, v in values.items() if "doubleValue" in v}
    return slices


def pattern_summary(metadata_path: str, pipeline_name: str) -> dict:
    """Wafers per split and ingest accounting, the Trainer's budget and validation figures, the test
    figures per product from the Evaluator, the blessing and where the model went."""
    from components.wafer_example_gen.executor import REPORT_FILE

    store = read_only_store(metadata_path)
    summary: dict = {"pipeline": pipeline_name}
    examples = latest_artifact(store, pipeline_name, "WaferMapExampleGen", "Examples")
    if examples is not None and fs.exists(os.path.join(examples.uri, REPORT_FILE)):
        with tf.io.gfile.GFile(os.path.join(examples.uri, REPORT_FILE)) as f:
            summary["ingest"] = json.load(f)
    model_run = latest_artifact(store, pipeline_name, "Trainer", "ModelRun")
    if model_run is not None and fs.exists(os.path.join(model_run.uri, BUDGET_FILE)):
        with tf.io.gfile.GFile(os.path.join(model_run.uri, BUDGET_FILE)) as f:
            summary["training"] = json.load(f)
    evaluation = latest_artifact(store, pipeline_name, "Evaluator", "ModelEvaluation")
    if evaluation is not None:
        summary["test"] = _slice_metrics(evaluation.uri)
    blessing = latest_artifact(store, pipeline_name, "Evaluator", "ModelBlessing")
    summary["blessed"] = bool(blessing.custom_properties["blessed"].int_value) if blessing is not None else None
    exports = latest_artifact(store, pipeline_name, "PatternExporter", PatternModelExports.TYPE_NAME)
    if exports is not None and fs.exists(os.path.join(exports.uri, EXPORT_REPORT_FILE)):
        with tf.io.gfile.GFile(os.path.join(exports.uri, EXPORT_REPORT_FILE)) as f:
            summary["exports"] = {"uri": exports.uri, **json.load(f)}
    report = latest_artifact(store, pipeline_name, "PatternReport", PatternReportArtifact.TYPE_NAME)
    if report is not None and fs.exists(os.path.join(report.uri, REPORT_HTML)):
        summary["report"] = os.path.join(report.uri, REPORT_HTML)
    pushed = latest_artifact(store, pipeline_name, "Pusher", "PushedModel")
    summary["pushed_model"] = (
        pushed.custom_properties["pushed_destination"].string_value
        if pushed is not None and pushed.custom_properties["pushed"].int_value
        else None
    )
    return summary


def format_pattern_summary(summary: dict) -> str:
    lines = [f"waferflow pattern run summary ({summary['pipeline']})"]
    ingest = summary.get("ingest", {})
    if ingest:
        lines.append(
            f"wafers: {ingest.get('wafers_read', '?')} read, {ingest.get('examples', '?')} examples "
            f"{ingest.get('examples_per_split', {})}, rejected: {ingest.get('rejected_no_label', 0)} without a "
            f"label, {ingest.get('rejected_no_geometry', 0)} without geometry"
        )
    training = summary.get("training", {})
    if training:
        lines.append(
            f"trained: transfer {training['transfer']}, {training['train_examples']} training maps, "
            f"validation macro-F1 {training['validation']['macro_f1']:.3f} (thresholds chosen there)"
        )
    for name, metrics in summary.get("test", {}).items():
        count = int(metrics.get("example_count", 0))
        recalls = [
            f"{c} {metrics[key]:.2f}"
            for c in SCORED_CLASSES
            if (key := recall_name(c)) in metrics and metrics[key] == metrics[key]
        ]
        lines.append(
            f"test [{name}] {count} wafers: macro-F1 {metrics.get(MACRO_F1, float('nan')):.3f}; recall "
            + ", ".join(recalls)
        )
    lines.append(f"blessed: {summary.get('blessed')}; pushed to: {summary.get('pushed_model') or 'not pushed'}")
    if summary.get("report"):
        lines.append(f"report (per product, Grad-CAM): {summary['report']}")
    exports = summary.get("exports", {})
    if exports.get("exported"):
        checks = exports["vs_saved_model"]
        said = ", ".join(
            f"{name} (max |dp| {c['max_abs_diff']:.1e}, same decisions on {c['decision_agreement']:.1%})"
            for name, c in checks.items()
        )
        lines.append(f"exported to {exports['uri']}: {said} of {next(iter(checks.values()))['maps']} test maps")
    elif exports:
        lines.append(f"not exported: {exports.get('reason')}")
    return "\n".join(lines)
