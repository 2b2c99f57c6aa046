"""The end-of-run summary, read back from MLMD and the artifacts it points to."""

from __future__ import annotations

import json
import os

import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from sklearn.metrics import roc_auc_score
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.wafer_example_gen.executor import REPORT_FILE
from models.features import LABEL_KEY, ORACLE_KEY

_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
HEADLINE_METRICS = ("auc", "pr_auc", "precision", "recall", "calibration", "mean_label", "mean_prediction",
                    "example_count")


def _latest(store, pipeline_name: str, node: str, type_name: str):
    """Newest artifact of `type_name` attributed to pipeline node `node`."""
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node}")
    if context is None:
        return None
    types = {t.id: t.name for t in store.get_artifact_types()}
    artifacts = [a for a in store.get_artifacts_by_context(context.id) if types.get(a.type_id) == type_name]
    return max(artifacts, key=lambda a: (a.create_time_since_epoch, a.id)) if artifacts else None


def _custom(artifact, key: str):
    if artifact is None or key not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[key]
    return value.int_value if value.HasField("int_value") else value.string_value


def oracle_auc(examples_uri: str, split: str = "eval") -> float | None:
    """AUC of the generator's true failure probability on a split: the best any model can reach.

    Only synthetic data carries the true probability (`ORACLE_KEY`); real data returns None.
    """
    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    labels, truth = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        if ORACLE_KEY not in feature:
            return None
        labels.append(feature[LABEL_KEY].int64_list.value[0])
        truth.append(feature[ORACLE_KEY].float_list.value[0])
    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(labels, truth))


def anomalies_per_split(anomalies_uri: str) -> dict[str, list[str]]:
    """Features ExampleValidator flagged against the schema, per split (empty lists: clean data)."""
    found = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(anomalies_uri, "Split-*", "SchemaDiff.pb"))):
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        split = os.path.basename(os.path.dirname(path))[len("Split-") :]
        found[split] = sorted(anomalies.anomaly_info)
    return found


def overall_metrics(evaluation_uri: str) -> dict[str, float]:
    result = tfma.load_eval_result(evaluation_uri)
    for slice_key, metrics in result.slicing_metrics:
        if slice_key == ():
            values = next(iter(metrics.values()))[""]  # output name "" then sub-key ""
            flat = {}
            for name, value in values.items():
                short = name.split("@")[0].lower()
                if "doubleValue" in value:
                    flat[short] = value["doubleValue"]
            return {k: flat[k] for k in HEADLINE_METRICS if k in flat}
    return {}


def run_summary(metadata_path: str, pipeline_name: str) -> dict:
    """Examples per split, ingest accounting, headline metrics, blessing, pushed model, cache hits."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)

    summary: dict = {"pipeline": pipeline_name}
    runs = [c for c in store.get_contexts_by_type("pipeline_run")]
    if runs:
        run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
        states = {}
        for execution in store.get_executions_by_context(run.id):
            node = next((c.name for c in store.get_contexts_by_execution(execution.id)
                         if c.type == "node"), str(execution.id))
            states[node.split(".")[-1]] = _STATES.get(execution.last_known_state, "UNKNOWN").lower()
        summary["run"] = run.name
        summary["components"] = states

    examples = _latest(store, pipeline_name, "WaferExampleGen", "Examples")
    if examples is not None:
        report_path = os.path.join(examples.uri, REPORT_FILE)
        if tf.io.gfile.exists(report_path):
            with tf.io.gfile.GFile(report_path) as f:
                summary["ingest"] = json.load(f)
                summary["examples_per_split"] = summary["ingest"].pop("examples_per_split", {})
        summary["oracle_auc"] = oracle_auc(examples.uri)

    anomalies = _latest(store, pipeline_name, "ExampleValidator", "ExampleAnomalies")
    if anomalies is not None:
        summary["anomalies"] = anomalies_per_split(anomalies.uri)
    evaluation = _latest(store, pipeline_name, "Evaluator", "ModelEvaluation")
    if evaluation is not None:
        summary["metrics"] = overall_metrics(evaluation.uri)
    blessing = _latest(store, pipeline_name, "Evaluator", "ModelBlessing")
    summary["blessed"] = bool(_custom(blessing, "blessed")) if blessing is not None else None
    pushed = _latest(store, pipeline_name, "Pusher", "PushedModel")
    if pushed is not None and _custom(pushed, "pushed"):
        summary["pushed_model"] = _custom(pushed, "pushed_destination")
    else:
        summary["pushed_model"] = None
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"waferflow run summary ({summary.get('run', '?')})"]
    if "components" in summary:
        cached = sum(1 for s in summary["components"].values() if s == "cached")
        lines.append(f"  components: {len(summary['components'])} ({cached} cache hits): "
                     + ", ".join(f"{k}={v}" for k, v in sorted(summary["components"].items())))
    ingest = summary.get("ingest")
    if ingest:
        lines.append(
            f"  ingest: {ingest['dies_read']} dies read from {ingest['files_read']} files -> {ingest['examples']} "
            f"examples; excluded sort fails {ingest['excluded_sort_fail']}, no label {ingest['rejected_no_label']}, "
            f"superseded retests {ingest['superseded_retests']}, quarantined files {ingest['files_quarantined']}"
        )
        if ingest.get("skipped_records"):
            lines.append("  records read past (not used): "
                         + ", ".join(f"{k}={v}" for k, v in sorted(ingest["skipped_records"].items())))
    if "examples_per_split" in summary:
        lines.append("  examples per split: " + ", ".join(f"{k}={v}" for k, v in summary["examples_per_split"].items()))
    if "anomalies" in summary:
        flagged = {k: v for k, v in summary["anomalies"].items() if v}
        lines.append("  data anomalies: " + (", ".join(f"{k}: {v}" for k, v in flagged.items()) or "none"))
    if summary.get("metrics"):
        lines.append("  eval metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items()))
    if summary.get("oracle_auc") is not None:
        lines.append(f"  best achievable eval AUC (generator's true probabilities): {summary['oracle_auc']:.4f}")
    lines.append(f"  blessed: {summary.get('blessed')}")
    lines.append(f"  pushed model: {summary.get('pushed_model') or 'not pushed'}")
    return "\n".join(lines)
