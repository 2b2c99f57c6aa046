"""Run the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite MLMD.

python -m pipeline.local_runner [--lots 10 --wafers-per-lot 5 --seed 42] [--beam-arg=...]
"""

from __future__ import annotations

import json
import os
import sys

from absl import logging
from tfx import v1 as tfx

from data import fs
from data.synthetic import GeneratorConfig
from data.writers import SPAN_FOLDER, span_folder, write_dataset
from pipeline import beam_args, summary
from pipeline.config import RunConfig, parse_args
from pipeline.pipeline import create_pipeline


def ensure_dataset(config: RunConfig) -> None:
    """Your own files (`--data-dir`): check there are some. Otherwise generate the synthetic
    product's dataset into <output>/data/<product> unless it is already there."""
    if config.data_dir:
        pattern = os.path.join(config.data_dir, config.any_span(config.file_pattern))
        if not fs.glob(pattern):
            raise FileNotFoundError(
                f"no tester files match {pattern}: check --data-dir, --input-format "
                f"and --input-pattern (README, 'Pointing it at other data')"
            )
        return
    if config.spans:
        # Spans of the synthetic product: span 1 unless some span is there (`waferflow generate --span`).
        if fs.glob(os.path.join(config.dataset_dir, SPAN_FOLDER.replace("{SPAN}", "*"))):
            return
        generator = GeneratorConfig(
            lots=config.lots, wafers_per_lot=config.wafers_per_lot, seed=config.seed, product=config.product, span=1
        )
        out = os.path.join(config.dataset_dir, span_folder(1))
        manifest = write_dataset(generator, out, config.input_format)
        print(f"generated span 1: {manifest['dies']} dies of product {config.product} into {out}")
        return
    manifest_path = os.path.join(config.dataset_dir, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            if json.load(f).get("format", "parquet") == config.input_format:
                return
        # A generated dataset in another format: write this format beside it; the same generator
        # config gives the same dies and labels.
    generator = GeneratorConfig(
        lots=config.lots, wafers_per_lot=config.wafers_per_lot, seed=config.seed, product=config.product
    )
    manifest = write_dataset(generator, config.dataset_dir, config.input_format)
    print(
        f"generated {manifest['dies']} dies of product {config.product} in {len(manifest['wafers'])} wafers "
        f"into {config.dataset_dir}"
    )


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


def run(config: RunConfig) -> dict:
    ensure_dataset(config)
    pipeline = build(config)
    # Fail before any component runs if the Beam arguments would not start their runner.
    beam_args.validate(pipeline.beam_pipeline_args)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return summary.run_summary(
        config.metadata_path,
        config.pipeline_name,
        # Every span's labels: the summary joins them to the test dies by lot, wafer and x/y.
        os.path.join(config.dataset_dir, config.any_span(config.labels_file_pattern)),
    )


def main(argv: list[str] | None = None) -> None:
    logging.set_verbosity(logging.INFO)
    config = parse_args(argv, description=__doc__.splitlines()[0])
    result = run(config)
    print(summary.format_summary(result))
    with open(os.path.join(config.output_dir, "run_summary.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
