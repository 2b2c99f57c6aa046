"""Multi-process Beam: every worker process gets the tfx-bsl stand-in from pipeline.beam_worker_setup.

The first two tests run a fresh interpreter, as a Beam worker starts: the first shows the trap
(tfdv 1.16.1 does not import against tfx-bsl 1.21 on its own; if this starts passing, the stand-in
can go), the second that importing the worker-setup module first is enough. The others run real
multi-process DirectRunner pipelines: tfdv's statistics and the project's ExampleGen executor.
"""

from __future__ import annotations

import os
import subprocess
import sys

import apache_beam as beam
import pyarrow as pa

from components.wafer_example_gen import executor
from pipeline import beam_args
from tests.example_gen_harness import run_example_gen

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
    # Do() itself raises if written != reported; count again here from the files.
    report, splits = run_example_gen(
        executor.Executor,
        small_dataset,
        str(tmp_path),
        input_format="parquet",
        input_pattern="wafers/*/*.parquet",
        beam_args=TWO_WORKERS,
    )
    written = sum(len(examples) for examples in splits.values())
    assert report["balanced"] and report["examples"] > 4000
    assert written == report["examples"]
