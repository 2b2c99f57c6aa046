"""Run the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite MLMD.

`waferflow run` (pipeline/cli.py) is the command line; `python -m pipeline.local_runner [flags]`
is the same command. `run(config)` is the whole run in-process, as the tests and benchmarks call it.
"""

from __future__ import annotations

import os
import sys

from tfx import v1 as tfx

from pipeline import beam_args, preflight, summary
from pipeline.config import RunConfig
from pipeline.pipeline import create_pipeline


def build(config: RunConfig) -> tfx.dsl.Pipeline:
    os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
    return create_pipeline(
        config,
        beam_pipeline_args=config.beam_pipeline_args(),
        pipeline_root=config.pipeline_root,
        data_root=os.path.abspath(config.dataset_dir),
        serving_model_dir=config.serving_model_dir,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
    )


def prepare(config: RunConfig) -> tfx.dsl.Pipeline:
    """The pipeline, checked: fails before any component runs if the Beam arguments would not
    start their runner."""
    pipeline = build(config)
    beam_args.validate(pipeline.beam_pipeline_args)
    return pipeline


def execute(config: RunConfig, pipeline: tfx.dsl.Pipeline) -> dict:
    """Run every component (cached ones are reused) and return the run summary."""
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return summary.run_summary(
        config.metadata_path,
        config.pipeline_name,
        # Every span's labels: the summary joins them to the test dies by lot, wafer and x/y.
        os.path.join(config.dataset_dir, config.any_span(config.labels_file_pattern)),
    )


def run(config: RunConfig) -> dict:
    preflight.ensure_dataset(config)
    return execute(config, prepare(config))


def main(argv: list[str] | None = None) -> int:
    from pipeline import cli

    return cli.main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
