"""WaferMapExampleGen executor: tester files + pattern-labels sidecar -> one tf.Example per wafer.

Beam graph, per input split pattern:

    files --Read (file-parallel, the die ExampleGen's reader step)--> wafer reads --+
                                                                                    +-- CoGroupByKey(lot)
    pattern sidecar files (data/patterns.py, one CSV per lot) --Read--> labels -----+
        --> per wafer: retests resolved (data/wafers.py), the map (data/wafer_maps.py) from the
            geometry the wafer's own file records, joined with its labels --> tf.Example

An example has the contract's keys (data/patterns.py): MAP_KEY (MAP_SIZE x MAP_SIZE x 2 floats,
row-major H, W, C), LABEL_KEY (multi-hot over PATTERN_CLASSES; all zero = "none"), PRODUCT_KEY (MIR
PART_TYP), LOT_KEY, WAFER_KEY.

Every wafer read ends in exactly one bucket of the ingest report:
    wafers_read = examples + rejected_no_label + rejected_no_geometry
A wafer the sidecar has no row for is rejected, counted and listed (`unlabelled`, the first 100),
never guessed as "none": an unlabelled wafer is not a wafer without a pattern. A sidecar row with
no wafer read is counted as an orphan label. A file without a usable WCR (wafer and die size) fails
the run, or with `bad_file_policy="quarantine"` its wafers are rejected and counted. A sidecar
with an unknown class, a wafer listed twice or a missing column fails the run naming the file and line.

Splitting is the die ExampleGen's (components/wafer_example_gen): by lot, lot-disjoint, in the
output config's proportions, "lot_random" / "lot_hash" / "time".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.types import artifact_utils, standard_component_specs

from components.wafer_example_gen import executor as die_executor
from data.patterns import LABEL_KEY, LOT_KEY, MAP_KEY, PRODUCT_KEY, WAFER_KEY, labels_to_multi_hot, read_sidecar
from data.readers import READERS, WaferRead
from data.wafer_maps import MapGeometry, MapGeometryError, wafer_map_of

INPUT_FORMAT_KEY = die_executor.INPUT_FORMAT_KEY
LABELS_PATTERN_KEY = die_executor.LABELS_PATTERN_KEY  # the pattern sidecar's glob; `{SPAN}` as the die ExampleGen's
BAD_FILE_POLICY_KEY = die_executor.BAD_FILE_POLICY_KEY
BAD_FILE_POLICIES = die_executor.BAD_FILE_POLICIES
SPLIT_BY_KEY = die_executor.SPLIT_BY_KEY
SPLIT_BY = die_executor.SPLIT_BY
EDGE_EXCLUSION_KEY = "edge_exclusion_mm"
REPORT_FILE = die_executor.REPORT_FILE
_REPORT_DIR_KEY = "_map_report_dir"
COUNTERS = (
    "files_read",
    "files_quarantined",
    "dies_read",
    "wafers_read",
    "examples",
    "rejected_no_label",
    "rejected_no_geometry",
    "orphan_labels",
    "superseded_retests",
)
_LISTED = 100  # unlabelled wafers listed by name in the report (all are counted)


def map_example(image: np.ndarray, classes: tuple[str, ...], product: str, lot_id: str, wafer_id: str) -> bytes:
    """One wafer's serialized tf.Example with the contract's keys (data/patterns.py)."""
    feature = tf.train.Feature
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                MAP_KEY: feature(float_list=tf.train.FloatList(value=image.astype(np.float32).ravel())),
                LABEL_KEY: feature(int64_list=tf.train.Int64List(value=labels_to_multi_hot(classes))),
                PRODUCT_KEY: feature(bytes_list=tf.train.BytesList(value=[product.encode()])),
                LOT_KEY: feature(bytes_list=tf.train.BytesList(value=[lot_id.encode()])),
                WAFER_KEY: feature(bytes_list=tf.train.BytesList(value=[wafer_id.encode()])),
            }
        )
    )
    return example.SerializeToString()


def _read_sidecar_file(path: str) -> Iterator[tuple[str, tuple[tuple[str, str], tuple[str, ...]]]]:
    """(lot_id, ((lot_id, wafer_id), classes)) for every row of one sidecar file."""
    for key, classes in read_sidecar(path).items():
        yield key[0], (key, classes)


class _MapsOfLot(beam.DoFn):
    """A lot's wafer reads and sidecar rows -> one map example per labelled wafer, and counts."""

    STATS = "stats"

    def __init__(self, policy: str, edge_exclusion_mm: float):
        self._policy, self._edge = policy, edge_exclusion_mm

    def process(self, element) -> Iterator[Any]:
        lot_id, grouped = element
        reads: list[WaferRead] = list(grouped["wafers"])
        labels: dict[tuple[str, str], tuple[str, ...]] = {}
        duplicates = []
        for key, classes in grouped["labels"]:
            if key in labels:
                duplicates.append(key)
            labels[key] = classes
        if duplicates:
            raise ValueError(
                f"lot {lot_id}: wafer(s) {sorted(w for _, w in duplicates)} listed in two pattern sidecars"
            )
        stats = {"wafers_read": 0, "examples": 0, "rejected_no_label": 0, "rejected_no_geometry": 0}
        stats |= {"superseded_retests": 0, "unlabelled": [], "no_geometry": []}
        by_wafer: dict[str, list[WaferRead]] = {}
        for read in reads:
            by_wafer.setdefault(read.wafer_id, []).append(read)
        used = set()
        for wafer_id in sorted(by_wafer):
            wafer_reads = by_wafer[wafer_id]
            stats["wafers_read"] += 1
            try:
                wafer = wafer_map_of(wafer_reads, self._edge)
            except MapGeometryError as error:
                if self._policy == "fail":
                    raise
                logging.warning("Rejected wafer %s: %s", wafer_id, error)
                stats["rejected_no_geometry"] += 1
                stats["no_geometry"].append({"lot_id": lot_id, "wafer_id": wafer_id, "error": str(error)})
                continue
            stats["superseded_retests"] += wafer.superseded
            key = (lot_id, wafer_id)
            if key not in labels:
                stats["rejected_no_label"] += 1
                if len(stats["unlabelled"]) < _LISTED:
                    stats["unlabelled"].append({"lot_id": lot_id, "wafer_id": wafer_id, "file": wafer.source})
                continue
            used.add(key)
            yield lot_id, map_example(wafer.image, labels[key], wafer.product, lot_id, wafer_id)
            stats["examples"] += 1
        stats["orphan_labels"] = len(set(labels) - used - {(lot_id, w) for w in by_wafer})
        yield beam.pvalue.TaggedOutput(self.STATS, stats)


class _SumStats(die_executor._SumStats):
    def create_accumulator(self) -> dict:
        return {**dict.fromkeys(COUNTERS, 0), "quarantined": [], "skipped_records": {}, "unlabelled": []}


def _read_maps(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):
    """The map ingest's Beam graph: ((lot_id, serialized example), (lot_id, earliest MIR start time))."""
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    input_format = exec_properties[INPUT_FORMAT_KEY]
    policy = exec_properties[BAD_FILE_POLICY_KEY]
    edge = float(exec_properties.get(EDGE_EXCLUSION_KEY) or MapGeometry.edge_exclusion_mm)
    files = die_executor._matching_files(die_executor._resolve(input_base, split_pattern), f"{input_format} input")
    sidecar_glob = die_executor._resolve(input_base, die_executor.labels_pattern(exec_properties))
    sidecars = die_executor._matching_files(sidecar_glob, "pattern sidecar")
    logging.info(
        "Building wafer maps from %d %s files and %d pattern sidecars", len(files), input_format, len(sidecars)
    )
    name = split_pattern.replace("/", "_").replace("*", "x")
    read = (
        pipeline
        | "ListFiles" >> beam.Create(files)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadFiles"
        >> beam.ParDo(die_executor._ReadFile(input_format, policy)).with_outputs(
            die_executor._ReadFile.STATS, die_executor._ReadFile.PROGRAMS, main="wafers"
        )
    )
    labels = pipeline | "ListSidecars" >> beam.Create(sidecars) | "ReadSidecars" >> beam.FlatMap(_read_sidecar_file)
    maps = (
        {"wafers": read.wafers, "labels": labels}
        | "GroupByLot" >> beam.CoGroupByKey()
        | "BuildMaps" >> beam.ParDo(_MapsOfLot(policy, edge)).with_outputs(_MapsOfLot.STATS, main="examples")
    )
    report_path = os.path.join(exec_properties[_REPORT_DIR_KEY], f"{name}.json")
    _ = (
        (read[die_executor._ReadFile.STATS], maps[_MapsOfLot.STATS])
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(_SumStats())
        | "WriteReport" >> beam.Map(die_executor._write_report, report_path)
    )
    return maps.examples, die_executor.earliest_lot_starts(read[die_executor._ReadFile.PROGRAMS])


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _WaferFilesToMapExample(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802
    """Map examples of the files matching `split_pattern` (TFX then splits them by lot hash)."""
    examples, _ = _read_maps(pipeline, exec_properties, split_pattern)
    return examples | "DropLot" >> beam.Values()


class Executor(die_executor.Executor):
    """Reads wafer-test files of `input_format` and writes one wafer-map tf.Example per labelled wafer,
    split by lot as the die ExampleGen splits, plus an ingest report."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
        return _WaferFilesToMapExample

    def read_and_join(self, pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):
        return _read_maps(pipeline, exec_properties, split_pattern)

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 (TFX API)
        if exec_properties[INPUT_FORMAT_KEY] not in READERS:
            raise ValueError(
                f"unknown input_format {exec_properties[INPUT_FORMAT_KEY]!r}; choose from {sorted(READERS)}"
            )
        if exec_properties[BAD_FILE_POLICY_KEY] not in BAD_FILE_POLICIES:
            raise ValueError(f"bad_file_policy must be one of {BAD_FILE_POLICIES}")
        if (exec_properties.get(SPLIT_BY_KEY) or "lot_random") not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {SPLIT_BY}")
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        report_dir = os.path.join(examples.uri, "_map_reports")
        # The die ExampleGen's Do learns a test program; a map needs none: TFX's own Do writes the splits.
        BaseExampleGenExecutor.Do(self, input_dict, output_dict, {**exec_properties, _REPORT_DIR_KEY: report_dir})

        reports = []
        for name in sorted(tf.io.gfile.listdir(report_dir)):
            with tf.io.gfile.GFile(os.path.join(report_dir, name)) as f:
                reports.append(json.load(f))
        tf.io.gfile.rmtree(report_dir)
        report = _SumStats().merge_accumulators(reports)
        report["balanced"] = report["wafers_read"] == (
            report["examples"] + report["rejected_no_label"] + report["rejected_no_geometry"]
        )
        report["examples_per_split"] = {
            split: die_executor.count_records(artifact_utils.get_split_uri([examples], split))
            for split in artifact_utils.decode_split_names(examples.split_names)
        }
        die_executor._write_report(report, os.path.join(examples.uri, REPORT_FILE))
        for key in COUNTERS:
            examples.set_int_custom_property(key, int(report[key]))
        logging.info("Wafer-map ingest report: %s", {k: report[k] for k in COUNTERS})
        if report["rejected_no_label"]:
            logging.warning(
                "%d wafer(s) had no row in the pattern sidecar and were left out (listed in %s)",
                report["rejected_no_label"],
                os.path.join(examples.uri, REPORT_FILE),
            )
        written = sum(report["examples_per_split"].values())
        if not report["balanced"]:
            raise RuntimeError(f"wafer-map ingest accounting does not balance: {report}")
        if written != report["examples"]:
            raise RuntimeError(
                f"{report['examples']} map examples were produced but {written} were written to "
                f"{examples.uri}; the Beam runner lost records. Report: {report}"
            )
        if report["examples"] == 0:
            raise ValueError(
                f"no wafer-map examples from {exec_properties['input_base']}: {report['wafers_read']} wafers read, "
                f"{report['rejected_no_label']} without a row in the pattern sidecar"
            )
        empty = [split for split, n in report["examples_per_split"].items() if n == 0]
        if empty:
            raise ValueError(
                f"split(s) {empty} got no wafer maps: splits are by lot; add lots. "
                f"Report: {report['examples_per_split']}"
            )
