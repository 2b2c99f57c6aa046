"""Data health and run history for the report: drift against the previous run's data (TFDV), and
each component's time and cache hit in this run (MLMD)."""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_data_validation as tfdv
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from models import features
from pipeline.metadata import read_only_store

# Drift bounds (TFDV comparators): Jensen-Shannon divergence for numeric features, L-infinity
# distance between value shares for categorical ones. 0.1 is TFDV's documented example bound.
JS_BOUND = 0.1
L_INFTY_BOUND = 0.1
DRIFT_SPLIT = "train"  # the training data of both runs: what the model learned from, then and now
_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


def split_statistics(uri: str, split: str = DRIFT_SPLIT):
    return tfdv.load_stats_binary(os.path.join(uri, f"Split-{split}", "FeatureStats.pb"))


def drift(
    current, previous, schema: schema_pb2.Schema, js_bound: float = JS_BOUND, measurements_only: bool = False
) -> list[dict]:
    """Every feature's drift between two runs' statistics, largest first: TFDV's comparators on a
    copy of the schema with a drift comparator on every feature (`measurements_only`: on the tester's
    FLOAT measurements alone, not identifiers, coordinates, the label or the wafer context and screens
    the ingest derives per wafer and lot, whose few values per wafer make a histogram of a handful of
    wafers, not of dies). A bound of 0 or less still measures every feature (TFDV needs a positive
    threshold) and flags none."""
    schema = schema_pb2.Schema.FromString(schema.SerializeToString())
    threshold = js_bound if js_bound > 0 else 1e-12
    derived = set(features.NON_TEST_INPUTS) if measurements_only else set()
    for feature in schema.feature:
        if feature.name in derived:
            continue
        if feature.type == schema_pb2.FLOAT or (feature.type == schema_pb2.INT and not measurements_only):
            feature.drift_comparator.jensen_shannon_divergence.threshold = threshold
        elif not measurements_only:
            feature.drift_comparator.infinity_norm.threshold = L_INFTY_BOUND
    anomalies = tfdv.validate_statistics(current, schema, previous_statistics=previous)
    rows = []
    for info in anomalies.drift_skew_info:
        for m in info.drift_measurements:
            rows.append(
                {
                    "feature": ".".join(info.path.step),
                    "measure": anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(m.type).lower(),
                    "value": float(m.value),
                    "bound": float(m.threshold),
                    "over": bool(m.threshold > 1e-12 and m.value > m.threshold),
                }
            )
    return sorted(rows, key=lambda r: -r["value"])


def skew(training, serving, js_bound: float = JS_BOUND) -> list[dict]:
    """Training-serving skew of every test measurement both statistics hold, largest first: TFDV's
    Jensen-Shannon skew comparator (the serving data are the dies a client scored)."""
    schema = tfdv.infer_schema(training)
    served = {".".join(f.path.step) or f.name for d in serving.datasets for f in d.features}
    derived = set(features.NON_TEST_INPUTS)
    threshold = js_bound if js_bound > 0 else 1e-12
    for feature in schema.feature:
        if feature.type == schema_pb2.FLOAT and feature.name in served and feature.name not in derived:
            feature.skew_comparator.jensen_shannon_divergence.threshold = threshold
    anomalies = tfdv.validate_statistics(training, schema, serving_statistics=serving)
    rows = [
        {
            "feature": ".".join(info.path.step),
            "value": float(m.value),
            "bound": js_bound,
            "over": bool(js_bound > 0 and m.value > js_bound),
        }
        for info in anomalies.drift_skew_info
        for m in info.skew_measurements
    ]
    return sorted(rows, key=lambda r: -r["value"])


def _store(metadata_path: str):
    if not metadata_path or not tf.io.gfile.exists(metadata_path):
        return None
    return read_only_store(metadata_path)


def previous_statistics_uri(metadata_path: str, pipeline_name: str, current_uri: str) -> str | None:
    """The newest statistics of this pipeline's StatisticsGen other than this run's, from a local MLMD."""
    store = _store(metadata_path)
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.StatisticsGen") if store else None
    if context is None:
        return None
    types = {t.id: t.name for t in store.get_artifact_types()}
    others = [
        a
        for a in store.get_artifacts_by_context(context.id)
        if types.get(a.type_id) == "ExampleStatistics"
        and a.uri != current_uri
        and a.state == metadata_store_pb2.Artifact.LIVE
    ]
    return max(others, key=lambda a: (a.create_time_since_epoch, a.id)).uri if others else None


def read_schema(uri: str) -> schema_pb2.Schema:
    return tfdv.load_schema_text(os.path.join(uri, "schema.pbtxt"))


def component_times(metadata_path: str, run_id: str | None) -> list[dict]:
    """Each execution of this pipeline run: node, state (complete / cached / ...), seconds from its
    registration to its last update. Empty when MLMD is not a local SQLite file (Kubeflow shows its
    own task times) or the run is unknown."""
    store = _store(metadata_path)
    if store is None or not run_id:
        return []
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is None:
        return []
    rows = []
    for execution in store.get_executions_by_context(run.id):
        node = next((c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"), "?")
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        rows.append(
            {
                "node": node.split(".")[-1],
                "state": _STATES.get(execution.last_known_state, "UNKNOWN").lower(),
                "seconds": round(seconds, 1),
                "started": execution.create_time_since_epoch,
            }
        )
    return sorted(rows, key=lambda r: r["started"])
