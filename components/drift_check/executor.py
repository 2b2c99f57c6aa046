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
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx_bsl.public.tfxio import TFExampleRecord

from components.resolver_strategies import span_of
from components.wafer_report import health

EXAMPLES_KEY = "examples"
REFERENCE_KEY = "reference_reports"
SCHEMA_KEY = "schema"
DRIFT_KEY = "drift"
JS_BOUND_KEY = "js_bound"
STATISTICS_FILE = "FeatureStats.pb"  # the statistics a DriftReport keeps, TFDV's binary form
EXAMPLES_URI_PROPERTY = "examples_uri"
DRIFT_FILE = "drift.json"
# Measured on generated WF7N data (sort-passing dies, TFDV statistics, largest JS over the 52 tests,
# spans of 4 lots x 2 wafers, seeds 7-9): 0.05-0.10 between undrifted spans, 0.24-0.38 for a
# threshold-voltage shift of 1.5 population sigmas (`--drift-per-span 0.5`, span 3). Lots differ by
# themselves: compared on 2 lots (one span's train split), undrifted spans read up to 0.19, which
# is why the check takes every split of a span. 0.2 flags the shift, not the lot-to-lot spread.
DEFAULT_JS_BOUND = 0.2


def load_statistics(uri: str, split: str = "train"):
    """A StatisticsGen artifact's split, or a statistics file at the top of an artifact (a
    DriftReport's, a Transform's pre/post-transform statistics)."""
    per_split = os.path.join(uri, f"Split-{split}", STATISTICS_FILE)
    return tfdv.load_stats_binary(per_split if tf.io.gfile.exists(per_split) else os.path.join(uri, STATISTICS_FILE))


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


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        references = input_dict.get(REFERENCE_KEY) or []
        schema = health.read_schema(artifact_utils.get_single_uri(input_dict[SCHEMA_KEY]))
        output = artifact_utils.get_single_instance(output_dict[DRIFT_KEY])
        stats_path = os.path.join(output.uri, STATISTICS_FILE)
        with self._make_beam_pipeline() as pipeline:
            _ = (
                pipeline
                | "ReadExamples"
                >> TFExampleRecord(
                    file_pattern=os.path.join(examples.uri, "Split-*", "*"), telemetry_descriptors=["waferflow"]
                ).BeamSource()
                | "Statistics" >> tfdv.GenerateStatistics()
                | "Write" >> tfdv.WriteStatisticsToBinaryFile(stats_path)
            )
        bound = float(exec_properties[JS_BOUND_KEY])
        current = tfdv.load_stats_binary(stats_path)
        record = check(current, [load_statistics(r.uri) for r in references], schema, bound)
        span = span_of(examples)
        record.update(span=span, examples_uri=examples.uri, reference_spans=[span_of(r) for r in references])
        with tf.io.gfile.GFile(os.path.join(output.uri, DRIFT_FILE), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        output.set_int_custom_property("span", span)
        output.set_string_custom_property(EXAMPLES_URI_PROPERTY, examples.uri)
        output.set_int_custom_property("compared", int(record["compared"]))
        output.set_int_custom_property("drifted", int(record["drifted"]))
        output.set_float_custom_property("max_js", float(record.get("max_js", 0.0)))
        if record["drifted"]:
            logging.warning(
                "Data drift: %d test(s) moved by more than Jensen-Shannon %.3g against every earlier span (%s); "
                "the model will not be blessed or pushed",
                len(record["drifted_features"]),
                record["js_bound"],
                ", ".join(record["drifted_features"][:10]),
            )
