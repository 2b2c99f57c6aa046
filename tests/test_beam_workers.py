"""Multi-process Beam: every worker process gets the tfx-bsl stand-in from pipeline.beam_worker_setup.

The first two tests run a fresh interpreter, as a Beam worker starts: the first shows the trap
(tfdv 1.16.1 does not import against tfx-bsl 1.21 on its own; if this starts passing, the stand-in
can go), the second that importing the worker-setup module first is enough. The others run real
multi-process DirectRunner pipelines: tfdv's statistics and the project's ExampleGen executor.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.wafer_example_gen import executor
from components.wafer_example_gen.component import lot_split_output_config
from pipeline import beam_args

TWO_WORKERS = beam_args.direct_args("multi_processing", num_workers=2)


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_a_fresh_process_cannot_import_tfdv_without_the_stand_in():
    done = _fresh_python("import tensorflow_data_validation")
    assert done.returncode != 0
    assert "sql_util" in done.stderr


def test_the_worker_setup_module_makes_tfdv_importable_in_a_fresh_process():
    done = _fresh_python(
        "import pipeline.beam_worker_setup\n"
        "import tensorflow_data_validation\n"
        "from tfx_bsl.arrow import sql_util\n"
        "try:\n"
        "    sql_util.RecordBatchSQLSliceQuery('SELECT 1', None)\n"
        "except NotImplementedError as error:\n"
        "    print('refused:', error)\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The stand-in is not a silent mock: SQL slicing, if anything ever asks for it, fails loudly.
    assert "refused:" in done.stdout and "ZetaSQL" in done.stdout


def test_tfdv_statistics_run_in_separate_worker_processes():
    import tensorflow_data_validation as tfdv  # after pipeline.beam_worker_setup (imported above)

    batches = [pa.RecordBatch.from_arrays([pa.array([[float(i)], [float(i + 1)]])], ["x"]) for i in range(4)]
    with beam.Pipeline(argv=TWO_WORKERS) as pipeline:
        stats = pipeline | beam.Create(batches) | tfdv.GenerateStatistics()
        counts = stats | beam.Map(lambda s: s.datasets[0].num_examples)
        # Also prove the work left this process: the workers report their own pids.
        pids = pipeline | "Probe" >> beam.Create(range(8)) | beam.Map(lambda _: os.getpid())
        _ = counts | "Check" >> beam.Map(lambda n: _expect(n, 8))
        _ = pids | beam.combiners.ToSet() | beam.Map(lambda seen, me: _expect(me in seen, False), os.getpid())


def _expect(value, expected):
    if value != expected:
        raise AssertionError(f"{value!r} != {expected!r}")


def test_example_gen_executor_writes_every_example_under_multi_processing(small_dataset, tmp_path):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path)
    props = {
        "input_base": small_dataset,
        "input_config": proto_utils.proto_to_json(
            example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="s", pattern="wafers/*/*.parquet")])
        ),
        "output_config": proto_utils.proto_to_json(lot_split_output_config()),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        executor.INPUT_FORMAT_KEY: "parquet",
        executor.LABELS_PATTERN_KEY: "labels/*.parquet",
        executor.BAD_FILE_POLICY_KEY: "fail",
    }
    context = executor.Executor.Context(beam_pipeline_args=TWO_WORKERS, tmp_dir=str(tmp_path), unique_id="1")
    executor.Executor(context).Do({}, {"examples": [examples]}, props)  # raises if written != reported
    with open(os.path.join(str(tmp_path), executor.REPORT_FILE)) as f:
        report = json.load(f)
    files = glob.glob(os.path.join(str(tmp_path), "Split-*", "*"))
    written = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    assert report["balanced"] and report["examples"] > 4000
    assert written == report["examples"]
