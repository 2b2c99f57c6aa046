"""WaferExampleGen executor: tester files + labels sidecar -> tf.Examples, one per labelled die,
and the test program the files describe.

Beam graph, per input split pattern:

    files --Read (file-parallel)--> wafers --+
                                             +-- CoGroupByKey(lot, wafer) --> join --> tf.Example
    labels sidecar files --Read--> labels ---+
    files --Read--> what each file says of its program (tests, limits, good bins, revision, WCR)
        --> distinct per lot --> merged into one `data.program.TestProgram`

The learned program (`test_program.json` beside the examples, and the `test_program` custom
property in MLMD) is what every later step builds on: the Transform makes features for each of its
tests, the exported model stores it, the predict client maps files onto it.

Every die read ends in exactly one bucket of the ingest report:
    dies_read = examples + excluded_sort_fail + rejected_no_label + superseded_retests
Sort-failing dies never reach final test, so they have no label: they are excluded (and counted),
not training examples. Files that cannot be read either fail the run or, with
`bad_file_policy="quarantine"`, are listed with the reason and counted.

Splitting, shuffling and writing stay TFX's own (BaseExampleGenExecutor, with
`partition_feature_name="lot_id"` so a lot never straddles train and eval).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
from absl import logging
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils
from tfx_bsl.coders import example_coder

from data import fs
from data import program as test_program
from data.readers import READERS, InputFileError, WaferRead
from data.wafers import assemble_lot

INPUT_FORMAT_KEY = "input_format"
LABELS_PATTERN_KEY = "labels_pattern"
BAD_FILE_POLICY_KEY = "bad_file_policy"
BAD_FILE_POLICIES = ("fail", "quarantine")
SPLIT_BY_KEY = "split_by"
# How lots are dealt to the splits (every die of a lot lands in one split):
#   lot_random: lots in the order of a hash of their id, cut in the output config's proportions;
#               exact split sizes and at least one lot in each, but a lot can change split when lots
#               are added (the default: the synthetic datasets have tens of lots);
#   lot_hash:   TFX's hash buckets of lot_id: a lot keeps its split forever, split sizes are luck;
#   time:       oldest lots first, newest last (MIR START_T): what real data needs, since a model
#               is used on lots tested after the ones it learned from.
SPLIT_BY = ("lot_random", "lot_hash", "time")
# The only column read from the sidecar. Ground truth of synthetic data (the generator's true
# probability) stays in the sidecar: no model can ever be fed it.
LABEL_COLUMN = "ft_fail"
JOIN_KEYS = ["lot_id", "wafer_id", "x", "y"]

REPORT_FILE = "ingest_report.json"
_REPORT_DIR_KEY = "_ingest_report_dir"  # exec property the executor adds for its own transform
# Every die's bins (sort fails too, which get no example), one Parquet file per tester file, in the
# Examples artifact: the run report's bin Paretos and maps read them instead of decoding every
# tester file a second time (at 312k dies that second decode was half the report's time).
DIE_BINS_DIR = "die_bins"
DIE_BIN_COLUMNS = ("lot_id", "wafer_id", "x", "y", "head", "site", "hard_bin", "soft_bin", "sort_pass")
_BINS_DIR_KEY = "_die_bins_dir"
COUNTERS = (
    "files_read",
    "files_quarantined",
    "dies_read",
    "examples",
    "excluded_sort_fail",
    "rejected_no_label",
    "superseded_retests",
    "orphan_labels",
    "duplicate_labels",
)
# Reader columns that do not go into examples: every example passed sort.
_NOT_IN_EXAMPLES = ("sort_pass",)


def _resolve(base: str, pattern: str) -> str:
    return pattern if os.path.isabs(pattern) or "://" in pattern else os.path.join(base, pattern)


def labels_pattern(exec_properties: dict[str, Any]) -> str:
    """The labels sidecar's glob with this execution's span in place of `{SPAN}` (or `{SPAN:N}`,
    zero-padded to N digits, as TFX writes it in input patterns): each span's labels beside its files."""
    pattern = exec_properties[LABELS_PATTERN_KEY]
    if "{SPAN" not in pattern:
        return pattern
    span = exec_properties.get("span")
    if span is None:
        raise ValueError(f"labels pattern {pattern!r} has a span placeholder but the input pattern has none")
    return re.sub(r"\{SPAN(?::(\d+))?\}", lambda m: str(int(span)).zfill(int(m.group(1) or 0)), pattern)


def _matching_files(pattern: str, what: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no {what} files match {pattern}")
    return files


class _ReadFile(beam.DoFn):
    """Read one tester file; emit (lot, WaferRead) and a per-file counts dict."""

    STATS = "stats"
    PROGRAMS = "programs"

    def __init__(self, input_format: str, policy: str, bins_dir: str | None = None):
        self._format, self._policy, self._bins_dir = input_format, policy, bins_dir

    def process(self, path: str) -> Iterator[Any]:
        reader = READERS[self._format]
        try:
            wafers = list(reader(path))
        except InputFileError as error:
            if self._policy == "fail":
                raise
            logging.warning("Quarantined %s", error)
            yield beam.pvalue.TaggedOutput(
                self.STATS, {"files_quarantined": 1, "quarantined": [{"file": path, "error": str(error)}]}
            )
            return
        stats = {"files_read": 1, "dies_read": 0, "skipped_records": {}}
        programs = set()
        for wafer in wafers:
            stats["dies_read"] += len(wafer.dies) + wafer.superseded
            if wafer.program is not None:
                programs.add((wafer.lot_id, _program_key(wafer.program), wafer.program.start_time))
            # Record types a format's reader read past (STDF: e.g. DTR, GDR), by type.
            for record, count in getattr(wafer, "skipped_records", {}).items():
                stats["skipped_records"][record] = stats["skipped_records"].get(record, 0) + count
            yield wafer.lot_id, wafer
        for program in sorted(programs):
            yield beam.pvalue.TaggedOutput(self.PROGRAMS, program)
        if self._bins_dir and wafers:
            write_die_bins(wafers, path, self._bins_dir)
        yield beam.pvalue.TaggedOutput(self.STATS, stats)


def write_die_bins(wafers: list[WaferRead], source: str, bins_dir: str) -> None:
    """The dies of one tester file (after retest resolution, as the examples see them) with their
    bins, to a Parquet file named by the source's path: a retried bundle rewrites the same file."""
    frame = pd.concat([w.dies[[c for c in DIE_BIN_COLUMNS if c in w.dies]] for w in wafers], ignore_index=True)
    if "head" not in frame:
        frame["head"] = 1  # a format without test heads: one head
    frame = frame.astype({"x": np.int64, "y": np.int64, "head": np.int64})
    name = hashlib.sha1(source.encode()).hexdigest()[:20] + ".parquet"
    fs.write_bytes(os.path.join(bins_dir, name), frame.to_parquet(index=False))


def read_die_bins(examples_uri: str) -> pd.DataFrame | None:
    """Every die's bins that the ExampleGen read (None for an Examples artifact written before there
    were any, or by another ExampleGen)."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, DIE_BINS_DIR, "*.parquet")))
    if not files:
        return None
    return pd.concat([pd.read_parquet(io.BytesIO(fs.read_bytes(f))) for f in files], ignore_index=True)


def _program_key(program: test_program.FileProgram) -> str:
    """A file's program without its start time, as canonical JSON: equal for every file of a lot
    that ran the same program, so Distinct keeps one per lot."""
    return json.dumps({k: v for k, v in program.to_dict().items() if k != "start_time"}, sort_keys=True)


def _read_labels(path: str) -> Iterator[tuple[tuple[str, str], pd.DataFrame]]:
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as error:
        raise InputFileError(path, f"labels sidecar is not a readable Parquet file ({error})") from error
    missing = [c for c in [*JOIN_KEYS, LABEL_COLUMN] if c not in frame.columns]
    if missing:
        raise InputFileError(path, f"labels sidecar lacks columns {missing}")
    frame = frame[[*JOIN_KEYS, LABEL_COLUMN]]
    for lot_id, labels in frame.groupby("lot_id", sort=False):
        yield str(lot_id), labels


def examples_of(frame: pd.DataFrame) -> list[bytes]:
    """Each row of `frame` as a serialized tf.Example, one feature per column: floats as float32,
    integers and booleans as int64, strings as bytes; NaN and None (a test not measured, no screen
    value) are left out, never zero. Encoded by tfx-bsl's C++ coder from Arrow batches of one-value
    lists: 8.6x the throughput of building each tf.train.Example in Python (32,500 against 3,770
    dies/s on one core, the same examples; benchmarks/example_encoding.py). The coder writes a null
    list as a feature with no value kind, not as an absent feature, so rows are encoded in groups of
    the same missing columns, each group with its present columns only, and put back in the frame's
    order."""
    values, present = [], []
    for name in frame.columns:
        column = frame[name]
        kind = column.dtype.kind
        if kind == "f":
            values.append(pa.array(column.to_numpy(np.float32)))
            present.append(~np.isnan(column.to_numpy()))
        elif kind in "iub":
            values.append(pa.array(column.to_numpy(np.int64)))
            present.append(np.ones(len(column), dtype=bool))
        else:
            raw = column.to_numpy()
            values.append(pa.array([v.encode() if isinstance(v, str) else v for v in raw], type=pa.binary()))
            present.append(column.notna().to_numpy())
    names = [str(name) for name in frame.columns]
    patterns, group_of = np.unique(np.stack(present, axis=1), axis=0, return_inverse=True)
    encoded: list[bytes] = [b""] * len(frame)
    for group, pattern in enumerate(patterns):
        rows = np.flatnonzero(group_of.ravel() == group)
        take = pa.array(rows)
        one_each = pa.array(np.arange(len(rows) + 1, dtype=np.int32))
        batch = pa.RecordBatch.from_arrays(
            [pa.ListArray.from_arrays(one_each, values[c].take(take)) for c in np.flatnonzero(pattern)],
            [names[c] for c in np.flatnonzero(pattern)],
        )
        for row, serialized in zip(rows, example_coder.RecordBatchToExamples(batch), strict=True):
            encoded[row] = serialized
    return encoded


class _JoinLabels(beam.DoFn):
    """Assemble a lot's wafers from their reads (data/wafers.py: retests, context, screens; ZPAT needs
    the whole lot), join labels, emit examples and counts."""

    STATS = "stats"

    def process(self, element) -> Iterator[Any]:
        lot_id, grouped = element
        reads: list[WaferRead] = list(grouped["dies"])
        label_frames = list(grouped["labels"])
        labels = pd.concat(label_frames, ignore_index=True) if label_frames else pd.DataFrame(columns=JOIN_KEYS)
        stats = dict.fromkeys(
            (
                "examples",
                "excluded_sort_fail",
                "rejected_no_label",
                "superseded_retests",
                "orphan_labels",
                "duplicate_labels",
            ),
            0,
        )
        # A die listed twice in the sidecar: counted and reported; the last row is the one used.
        labels = labels.astype({"x": np.int64, "y": np.int64})
        stats["duplicate_labels"] = int(labels.duplicated(subset=JOIN_KEYS).sum())
        labels = labels.drop_duplicates(subset=JOIN_KEYS, keep="last")
        if not reads:
            stats["orphan_labels"] = len(labels)
            yield beam.pvalue.TaggedOutput(self.STATS, stats)
            return
        joined_frames, all_dies = [], []
        for wafer in assemble_lot(reads):
            stats["superseded_retests"] += wafer.superseded
            passed = wafer.passed
            stats["excluded_sort_fail"] += len(wafer.dies) - len(passed)
            all_dies.append(wafer.dies[["x", "y"]])
            joined = passed.merge(labels, on=JOIN_KEYS, how="left", indicator=True)
            has_label = joined["_merge"] == "both"
            stats["rejected_no_label"] += int((~has_label).sum())
            joined_frames.append(joined[has_label].drop(columns=["_merge", *_NOT_IN_EXAMPLES]))
        joined = pd.concat(joined_frames, ignore_index=True)
        # The left join makes the label float when a die had none; those rows are gone: an int again.
        joined[LABEL_COLUMN] = joined[LABEL_COLUMN].astype(np.int64)
        stats["orphan_labels"] = len(labels) - len(joined)
        for serialized in examples_of(joined):
            yield lot_id, serialized
        stats["examples"] = len(joined)
        # What the program needs from the data: the die grid's extent (every die) and each test's
        # shape over the dies that become examples (data/program.py, log-scale margins).
        every = pd.concat(all_dies, ignore_index=True)
        stats["extent"] = {
            "x_min": int(every["x"].min()),
            "x_max": int(every["x"].max()),
            "y_min": int(every["y"].min()),
            "y_max": int(every["y"].max()),
        }
        stats["test_moments"] = _moments_by_wafer(joined)
        yield beam.pvalue.TaggedOutput(self.STATS, stats)


def _moments_by_wafer(joined: pd.DataFrame) -> dict:
    """Per-wafer test moments (data/program.py `test_moments`), summed over the lot's wafers."""
    tests = [c for c in joined.columns if test_program.is_test_feature(c)]
    total: dict = {}
    for _, wafer in joined.groupby("wafer_id", sort=False):
        total = _merge_stats(total, test_program.test_moments(wafer, tests))
    return total


class _SumStats(beam.CombineFn):
    def create_accumulator(self) -> dict:
        return {**dict.fromkeys(COUNTERS, 0), "quarantined": [], "skipped_records": {}}

    def add_input(self, acc: dict, stats: dict) -> dict:
        return _merge_stats(acc, stats)

    def merge_accumulators(self, accs) -> dict:
        total = self.create_accumulator()
        for acc in accs:
            total = self.add_input(total, acc)
        return total

    def extract_output(self, acc: dict) -> dict:
        return acc


def _merge_stats(acc: dict, stats: dict) -> dict:
    """Counts add up (nested dicts key by key), lists concatenate, `*_min` / `*_max` keep the extreme."""
    for key, value in stats.items():
        if isinstance(value, dict):
            acc[key] = _merge_stats(acc.get(key, {}), value)
        elif isinstance(value, list):
            acc[key] = acc.get(key, []) + value
        elif key not in acc:
            acc[key] = value
        elif key.endswith("_min"):
            acc[key] = min(acc[key], value)
        elif key.endswith("_max"):
            acc[key] = max(acc[key], value)
        else:
            acc[key] = acc[key] + value
    return acc


def _write_report(report: dict, path: str) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)


def _read_and_join(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):
    """The ingest's Beam graph: ((lot_id, serialized example), (lot_id, earliest MIR start time) per lot)."""
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    input_format = exec_properties[INPUT_FORMAT_KEY]
    policy = exec_properties[BAD_FILE_POLICY_KEY]
    files = _matching_files(_resolve(input_base, split_pattern), f"{input_format} input")
    label_files = _matching_files(_resolve(input_base, labels_pattern(exec_properties)), "label sidecar")
    logging.info("Ingesting %d %s files and %d label files", len(files), input_format, len(label_files))
    name = split_pattern.replace("/", "_").replace("*", "x")

    read = (
        pipeline
        | "ListFiles" >> beam.Create(files)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadFiles"
        >> beam.ParDo(_ReadFile(input_format, policy, exec_properties.get(_BINS_DIR_KEY))).with_outputs(
            _ReadFile.STATS, _ReadFile.PROGRAMS, main="wafers"
        )
    )
    labels = pipeline | "ListLabelFiles" >> beam.Create(label_files) | "ReadLabels" >> beam.FlatMap(_read_labels)
    joined = (
        {"dies": read.wafers, "labels": labels}
        | "GroupByLot" >> beam.CoGroupByKey()
        | "JoinLabels" >> beam.ParDo(_JoinLabels()).with_outputs(_JoinLabels.STATS, main="examples")
    )
    report_path = os.path.join(exec_properties[_REPORT_DIR_KEY], f"{name}.json")
    # Programs: one entry per distinct (lot, program), with the lot's earliest start time.
    programs = (
        read[_ReadFile.PROGRAMS]
        | "ProgramByLotAndKey" >> beam.Map(lambda p: ((p[0], p[1]), p[2]))
        | "EarliestStart" >> beam.CombinePerKey(min)
        | "AsReportEntry" >> beam.Map(lambda kv: {"file_programs": [[kv[0][0], kv[0][1], kv[1]]]})
    )
    _ = (
        (read[_ReadFile.STATS], joined[_JoinLabels.STATS], programs)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(_SumStats())
        | "WriteReport" >> beam.Map(_write_report, report_path)
    )
    return joined.examples, earliest_lot_starts(read[_ReadFile.PROGRAMS])


def earliest_lot_starts(programs: beam.PCollection) -> beam.PCollection:
    """(lot, start time of its earliest file) from the reader's (lot, program, start) outputs: what
    a split by time orders lots by."""
    return programs | "LotStart" >> beam.Map(lambda p: (p[0], p[2])) | "EarliestLotStart" >> beam.CombinePerKey(min)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _WaferFilesToExample(pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802
    """Examples of the files matching `split_pattern` (TFX then splits them by lot hash)."""
    examples, _ = _read_and_join(pipeline, exec_properties, split_pattern)
    return examples | "DropLot" >> beam.Values()


def _random_key(lot: str) -> str:
    return hashlib.sha256(lot.encode()).hexdigest()


def split_assignment(lot_starts: dict[str, int], weights: list[int], split_by: str) -> dict[str, int]:
    """Split index of each lot: lots in order (by first test time for "time", MIR START_T then name;
    by a hash of the name for "lot_random"), the first to the first split, in proportion to
    `weights` (the output config's hash buckets), every split at least one lot."""
    key = (lambda lot: (lot_starts[lot], lot)) if split_by == "time" else _random_key
    lots = sorted(lot_starts, key=key)
    if len(lots) < len(weights):
        raise ValueError(
            f"splitting by lot into {len(weights)} splits needs at least {len(weights)} lots, got {len(lots)}: {lots}"
        )
    total = sum(weights)
    counts = [max(1, int(len(lots) * w / total)) for w in weights]
    while sum(counts) > len(lots):  # too many after the minimum of one: take from the largest
        counts[counts.index(max(counts))] -= 1
    order = sorted(range(len(weights)), key=lambda i: -(len(lots) * weights[i] / total - counts[i]))
    for i in order[: len(lots) - sum(counts)]:  # largest remainders get the lots left over
        counts[i] += 1
    assignment, start = {}, 0
    for index, count in enumerate(counts):
        for lot in lots[start : start + count]:
            assignment[lot] = index
        start += count
    return assignment


def learned_program(report: dict) -> test_program.TestProgram:
    """The run's test program from the report's per-lot programs, grid extent and test moments."""
    per_lot: dict[str, list[test_program.FileProgram]] = {}
    for lot_id, key, start_time in report.get("file_programs", []):
        program = test_program.FileProgram.from_dict({**json.loads(key), "start_time": start_time})
        per_lot.setdefault(lot_id, []).append(program)
    extent = report.get("extent")
    return test_program.merge_programs(
        per_lot,
        (extent["x_min"], extent["x_max"], extent["y_min"], extent["y_max"]) if extent else None,
        log_scale=test_program.log_scale_tests(report.get("test_moments", {})),
    )


def merge_reports(reports: list[dict]) -> dict:
    total = _SumStats().merge_accumulators(reports)
    total["balanced"] = total["dies_read"] == (
        total["examples"] + total["excluded_sort_fail"] + total["rejected_no_label"] + total["superseded_retests"]
    )
    return total


COUNT_BATCH = 4096  # records per step of the post-write count


def count_records(split_uri: str) -> int:
    """Records in the gzipped TFRecord files of one output split."""
    files = tf.io.gfile.glob(os.path.join(split_uri, "*"))
    if not files:
        return 0
    # Counted inside tf.data (C++), not by iterating records in Python, and a batch of records per
    # reduce step: one step per record cost as much again as reading them (312k dies: 13 s -> 6 s).
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=len(files))
    return int(dataset.batch(COUNT_BATCH).reduce(np.int64(0), lambda count, batch: count + tf.size(batch, tf.int64)))


class Executor(BaseExampleGenExecutor):
    """Reads wafer-test files of `input_format` and writes die tf.Examples plus an ingest report."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
        return _WaferFilesToExample

    def read_and_join(self, pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str):
        """The Beam graph from the files to ((lot_id, serialized example), (lot_id, earliest start time)):
        what the lot splits below deal out. Another ExampleGen over the same files (wafer maps) gives its own."""
        return _read_and_join(pipeline, exec_properties, split_pattern)

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: dict[str, Any]):  # noqa: N802
        """TFX's own lot-hash split, or lots dealt in proportion by time or at random (SPLIT_BY)."""
        split_by = exec_properties.get(SPLIT_BY_KEY) or "lot_random"
        if split_by == "lot_hash":
            return super().GenerateExamplesByBeam(pipeline, exec_properties)
        input_config = proto_utils.json_to_proto(exec_properties["input_config"], example_gen_pb2.Input())
        output_config = proto_utils.json_to_proto(exec_properties["output_config"], example_gen_pb2.Output())
        splits = list(output_config.split_config.splits)
        if len(input_config.splits) != 1 or not splits:
            raise ValueError("splitting by lot needs one input pattern and the output splits with their weights")
        examples, lot_starts = self.read_and_join(pipeline, exec_properties, input_config.splits[0].pattern)
        weights = [s.hash_buckets for s in splits]
        assignment = (
            lot_starts
            | "AllLotStarts" >> beam.combiners.ToDict()
            | "AssignLots" >> beam.Map(split_assignment, weights, split_by)
        )
        parts = examples | "SplitByLot" >> beam.Partition(
            lambda keyed, n, lots: lots[keyed[0]], len(splits), beam.pvalue.AsSingleton(assignment)
        )
        return {split.name: parts[i] | f"DropLot{split.name}" >> beam.Values() for i, split in enumerate(splits)}

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
        report_dir = os.path.join(examples.uri, "_ingest_reports")
        bins_dir = os.path.join(examples.uri, DIE_BINS_DIR)
        tf.io.gfile.makedirs(bins_dir)
        super().Do(input_dict, output_dict, {**exec_properties, _REPORT_DIR_KEY: report_dir, _BINS_DIR_KEY: bins_dir})

        reports = []
        for name in sorted(tf.io.gfile.listdir(report_dir)):
            with tf.io.gfile.GFile(os.path.join(report_dir, name)) as f:
                reports.append(json.load(f))
        tf.io.gfile.rmtree(report_dir)
        report = merge_reports(reports)
        program = learned_program(report)
        for key in ("file_programs", "test_moments", "extent"):
            report.pop(key, None)
        with tf.io.gfile.GFile(os.path.join(examples.uri, test_program.PROGRAM_FILE), "w") as f:
            f.write(program.to_json())
        report["test_program"] = {
            "tests": len(program.tests),
            "changes": len(program.changes),
            "good_hard_bins": program.good_hard_bins,
        }
        # Count what actually landed in each split: the accounting above is of what the join
        # emitted, and a runner that loses a bundle must fail the run, not shrink the data.
        report["examples_per_split"] = {
            split: count_records(artifact_utils.get_split_uri([examples], split))
            for split in artifact_utils.decode_split_names(examples.split_names)
        }
        written = sum(report["examples_per_split"].values())
        _write_report(report, os.path.join(examples.uri, REPORT_FILE))
        for key in COUNTERS:
            examples.set_int_custom_property(key, int(report[key]))
        # The learned program in MLMD too: lineage shows what program a model was trained on.
        examples.set_string_custom_property("test_program", program.to_json())
        examples.set_int_custom_property("program_tests", len(program.tests))
        examples.set_int_custom_property("program_changes", len(program.changes))
        logging.info("Ingest report: %s", {k: report[k] for k in COUNTERS})
        if not report["balanced"]:
            raise RuntimeError(f"ingest accounting does not balance: {report}")
        if written != report["examples"]:
            raise RuntimeError(
                f"{report['examples']} examples were produced but {written} were written to "
                f"{examples.uri}; the Beam runner lost records. Report: {report}"
            )
        if not program.tests:
            raise ValueError(f"no parametric tests found in {exec_properties['input_base']}: {report}")
        empty = [split for split, n in report["examples_per_split"].items() if n == 0]
        if report["examples"] and empty:
            raise ValueError(
                f"split(s) {empty} got no examples: every lot hashed into the other split(s). Splits are by "
                f"lot so that no wafer straddles them; add lots ({len(program.lots)} read). Report: "
                f"{report['examples_per_split']}"
            )
        if report["examples"] == 0:
            raise ValueError(f"no examples produced from {exec_properties['input_base']}: {report}")
