"""DriftCheck's executor: TFDV's Jensen-Shannon comparator on every measurement (see component.py)."""

from __future__ import annotations

import json
import os

# TFX first: importing it installs the stand-in for the tfx_bsl module tfdv 1.16 imports and tfx-bsl
# 1.21 removed (pipeline/beam_worker_setup.py), so this module imports on its own too.
import tfx  # noqa: F401

# isort: split
import tensorflow as tf
import tensorflow_data_validation as tfdv
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.wafer_report import health

STATISTICS_KEY = "statistics"
REFERENCE_KEY = "reference_statistics"
SCHEMA_KEY = "schema"
DRIFT_KEY = "drift"
JS_BOUND_KEY = "js_bound"
SPLIT_KEY = "split"
DRIFT_FILE = "drift.json"
# Measured on generated WF7N data (sort-passing dies, TFDV statistics, largest JS over the 52 tests;
# README, "New lots every day"): lots differ by themselves, so two spans of 2 lots read 0.06-0.19
# without any drift (5-10 lots: 0.03-0.04), while a threshold-voltage shift of 0.9 population sigmas
# reads 0.23-0.37 and one of 1.5 sigmas 0.39-0.52. 0.2 flags the shifts, not the lot-to-lot spread.
DEFAULT_JS_BOUND = 0.2


def load_statistics(uri: str, split: str):
    """A StatisticsGen artifact's split, or a Transform's pre/post-transform statistics (one file)."""
    per_split = os.path.join(uri, f"Split-{split}", "FeatureStats.pb")
    return tfdv.load_stats_binary(per_split if tf.io.gfile.exists(per_split) else os.path.join(uri, "FeatureStats.pb"))


def check(current, references: list, schema, js_bound: float) -> dict:
    """The drift record of statistics `current` against the earlier spans' `references` (none on a
    first run). A measurement's drift is its smallest Jensen-Shannon divergence from any of them:
    the newest data drifted when it is unlike every span the model was trained on, not when it
    differs from one odd span."""
    if not references:
        return {"compared": False, "drifted": False, "js_bound": js_bound, "features": [], "drifted_features": []}
    smallest: dict[str, dict] = {}
    for reference in references:
        for row in health.drift(current, reference, schema, js_bound=js_bound, measurements_only=True):
            if row["feature"] not in smallest or row["value"] < smallest[row["feature"]]["value"]:
                smallest[row["feature"]] = row
    rows = sorted(smallest.values(), key=lambda r: -r["value"])
    over = [r["feature"] for r in rows if r["over"]]
    return {
        "compared": True,
        "references": len(references),
        "drifted": bool(over),
        "js_bound": js_bound,
        "max_js": max((r["value"] for r in rows), default=0.0),
        "features": rows,
        "drifted_features": over,
    }


def read_drift(uri: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(uri, DRIFT_FILE)) as f:
        return json.load(f)


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        split = exec_properties[SPLIT_KEY]
        statistics = artifact_utils.get_single_instance(input_dict[STATISTICS_KEY])
        references = input_dict.get(REFERENCE_KEY) or []
        schema = health.read_schema(artifact_utils.get_single_uri(input_dict[SCHEMA_KEY]))
        bound = float(exec_properties[JS_BOUND_KEY])
        current = load_statistics(statistics.uri, split)
        record = check(current, [load_statistics(r.uri, split) for r in references], schema, bound)
        record.update(
            split=split,
            span=int(statistics.get_int_custom_property("span") or getattr(statistics, "span", 0) or 0),
            statistics_uri=statistics.uri,
            reference_uris=[r.uri for r in references],
        )
        output = artifact_utils.get_single_instance(output_dict[DRIFT_KEY])
        with tf.io.gfile.GFile(os.path.join(output.uri, DRIFT_FILE), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        output.set_int_custom_property("compared", int(record["compared"]))
        output.set_int_custom_property("drifted", int(record["drifted"]))
        output.set_float_custom_property("max_js", float(record.get("max_js", 0.0)))
        if record["drifted"]:
            logging.warning(
                "Data drift: %d measurement(s) moved by more than Jensen-Shannon %.3g against the previous "
                "training window (%s); the model will not be blessed or pushed",
                len(record["drifted_features"]),
                record["js_bound"],
                ", ".join(record["drifted_features"][:10]),
            )
