"""Runs an ExampleGen executor's Do() on real files, as TFX would, and reads back what it wrote."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence

import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.wafer_example_gen import executor as wafer_executor
from components.wafer_example_gen.component import lot_split_output_config
from pipeline import beam_args as project_beam_args

# In-process DirectRunner, with the worker image named as the pipeline names it: TFX otherwise builds
# and leaves a 52 MB copy of itself in /tmp for every executor given Beam arguments (docs/beam.md).
IN_MEMORY = tuple(project_beam_args.with_worker_setup(["--direct_running_mode=in_memory"]))


def run_example_gen(
    executor_class: type,
    input_base: str,
    out: str,
    *,
    input_format: str,
    input_pattern: str,
    policy: str = "fail",
    split_by: str = "lot_random",
    beam_args: Sequence[str] = IN_MEMORY,
    labels_pattern: str = "labels/*.parquet",
    extra_properties: dict | None = None,
) -> tuple[dict, dict[str, list[tf.train.Example]]]:
    """Executor().Do() into `out`; returns the ingest report and the examples of each split."""
    examples = standard_artifacts.Examples()
    examples.uri = out
    props = {
        "input_base": input_base,
        "input_config": proto_utils.proto_to_json(
            example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="s", pattern=input_pattern)])
        ),
        "output_config": proto_utils.proto_to_json(lot_split_output_config()),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        wafer_executor.INPUT_FORMAT_KEY: input_format,
        wafer_executor.LABELS_PATTERN_KEY: labels_pattern,
        wafer_executor.BAD_FILE_POLICY_KEY: policy,
        wafer_executor.SPLIT_BY_KEY: split_by,
        **(extra_properties or {}),
    }
    context = executor_class.Context(beam_pipeline_args=list(beam_args), tmp_dir=out, unique_id="1")
    executor_class(context).Do({}, {"examples": [examples]}, props)
    with open(os.path.join(out, wafer_executor.REPORT_FILE)) as f:
        report = json.load(f)
    splits = {}
    for split in ("train", "validation", "test"):
        files = glob.glob(os.path.join(out, f"Split-{split}", "*"))
        splits[split] = [
            tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
        ]
    return report, splits
