"""Training-serving skew for the predict client: the dies it scored against the training window.

`waferflow-predict ... --skew-against output` compares the test measurements of the scored dies with
the statistics of the data the model was trained on (the newest Transform's input statistics of a
local run: the train split of its training window), by TFDV's Jensen-Shannon skew comparator, and
writes `<predictions>.skew.json`. A path may also name a statistics file (FeatureStats.pb) or an
ExampleStatistics artifact directory. Kept out of pipeline/predict.py's imports: TFX and TFDV load
only when skew is asked for.
"""

from __future__ import annotations

import os

import tfx  # noqa: F401 (first: see components/drift_check/executor.py)

# isort: split
import pandas as pd
import tensorflow_data_validation as tfdv
from ml_metadata.proto import metadata_store_pb2

from components.drift_check.executor import load_statistics
from components.wafer_report import health
from pipeline.metadata import read_only_store


def training_statistics_uri(path: str, pipeline_name: str = "waferflow") -> str:
    """Where the training statistics are: `path` itself, or for a run's output directory the newest
    Transform `pre_transform_stats` of `pipeline_name` in its MLMD."""
    metadata_path = os.path.join(path, "metadata", f"{pipeline_name}.sqlite")
    if not os.path.exists(metadata_path):
        if os.path.exists(path):
            return path
        raise FileNotFoundError(f"--skew-against {path}: no such statistics file, artifact or run output directory")
    store = read_only_store(metadata_path)
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.Transform")
    artifacts = store.get_artifacts_by_context(context.id) if context is not None else []
    events = store.get_events_by_artifact_ids([a.id for a in artifacts]) if artifacts else []
    stats_ids = {
        e.artifact_id
        for e in events
        if e.type == metadata_store_pb2.Event.OUTPUT and any(s.key == "pre_transform_stats" for s in e.path.steps)
    }
    stats = [a for a in artifacts if a.id in stats_ids]
    if not stats:
        raise FileNotFoundError(f"--skew-against {path}: pipeline {pipeline_name!r} has no Transform statistics yet")
    return max(stats, key=lambda a: a.id).uri


def scored_skew(scored: pd.DataFrame, training_path: str, pipeline_name: str, js_bound: float) -> dict:
    """The skew record of the scored dies' test columns against the training statistics."""
    uri = training_statistics_uri(training_path, pipeline_name)
    training = tfdv.load_stats_binary(uri) if os.path.isfile(uri) else load_statistics(uri, "train")
    serving = tfdv.generate_statistics_from_dataframe(scored)
    rows = health.skew(training, serving, js_bound)
    return {
        "training_statistics": uri,
        "scored_dies": int(len(scored)),
        "js_bound": js_bound,
        "max_js": max((r["value"] for r in rows), default=0.0),
        "features": rows,
        "skewed_features": [r["feature"] for r in rows if r["over"]],
    }


def format_skew(record: dict) -> str:
    top = ", ".join(f"{r['feature']} {r['value']:.3f}" for r in record["features"][:3])
    over = record["skewed_features"]
    verdict = f"{len(over)} over the bound: {', '.join(over[:10])}" if over else "none over the bound"
    return (
        f"skew of {record['scored_dies']} scored dies vs the training window, Jensen-Shannon over "
        f"{len(record['features'])} tests, bound {record['js_bound']:g}: largest {top}; {verdict}"
    )
