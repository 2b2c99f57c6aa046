"""Checks and preparation before anything heavy starts: a run that cannot write its output or
find its data says so in one line (a `UsageError`) before TensorFlow is even imported."""

from __future__ import annotations

import json
import os
import tempfile

from data import fs
from data.synthetic import GeneratorConfig
from data.writers import SPAN_FOLDER, span_folder, write_dataset
from pipeline.config import PatternRunConfig, RunConfig
from pipeline.console import UsageError


def check_output_dir(path: str) -> None:
    """The output directory exists (created if need be) and takes a new file."""
    if fs.has_scheme(path):
        return  # a remote store: its permissions are the runner's to check
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".waferflow-write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(
            f"--output-dir {path} is not writable ({reason}): pass a folder you can write to with --output-dir"
        ) from error


def check_data_dir(config: RunConfig) -> None:
    """Your own files (`--data-dir`): the folder exists and the tester-file pattern matches in it."""
    if not config.data_dir:
        return
    if not fs.exists(config.data_dir):
        raise UsageError(
            f"--data-dir {config.data_dir} does not exist: point it at a folder of tester files, "
            "or leave it out to generate a synthetic dataset"
        )
    pattern = os.path.join(config.data_dir, config.any_span(config.file_pattern))
    if not fs.glob(pattern):
        raise UsageError(
            f"no tester files match {pattern}: check --data-dir, --input-format ({config.input_format}) "
            "and --input-pattern (README, 'Pointing it at other data')"
        )
    labels = os.path.join(config.data_dir, config.any_span(config.labels_file_pattern))
    if not fs.glob(labels):
        raise UsageError(
            f"no final-test label files match {labels}: check --labels-pattern (README, 'Pointing it at other data')"
        )


def check(config: RunConfig) -> None:
    check_output_dir(config.output_dir)
    check_data_dir(config)


def ensure_dataset(config: RunConfig) -> dict | None:
    """Your own files (`--data-dir`): check there are some. Otherwise generate the synthetic
    product's dataset into <output>/data/<product> unless it is already there; return the
    manifest of what was generated (None when nothing was)."""
    if config.data_dir:
        check_data_dir(config)
        return None
    if config.spans:
        # Spans of the synthetic product: span 1 unless some span is there (`waferflow generate --span`).
        if fs.glob(os.path.join(config.dataset_dir, config.any_span(SPAN_FOLDER))):
            return None
        generator = GeneratorConfig(
            lots=config.lots, wafers_per_lot=config.wafers_per_lot, seed=config.seed, product=config.product, span=1
        )
        return write_dataset(generator, os.path.join(config.dataset_dir, span_folder(1)), config.input_format)
    manifest_path = os.path.join(config.dataset_dir, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            if json.load(f).get("format", "parquet") == config.input_format:
                return None
        # A generated dataset in another format: write this format beside it; the same generator
        # config gives the same dies and labels.
    generator = GeneratorConfig(
        lots=config.lots, wafers_per_lot=config.wafers_per_lot, seed=config.seed, product=config.product
    )
    return write_dataset(generator, config.dataset_dir, config.input_format)


def ensure_pattern_dataset(config: PatternRunConfig) -> dict | None:
    """Your own files: check the tester files and the pattern sidecars are there. Otherwise generate
    the product's maps-only pattern dataset unless it is there; the manifest of what was generated."""
    if config.data_dir:
        for what, pattern in (
            ("tester files", config.file_pattern),
            ("pattern-labels sidecars", config.labels_pattern),
        ):
            if not fs.glob(os.path.join(config.data_dir, pattern)):
                raise UsageError(f"no {what} match {os.path.join(config.data_dir, pattern)} (docs/patterns.md)")
        return None
    if os.path.exists(os.path.join(config.dataset_dir, "manifest.json")):
        return None
    generator = GeneratorConfig(
        lots=config.lots,
        wafers_per_lot=config.wafers_per_lot,
        seed=config.seed,
        product=config.product,
        patterns=True,
        maps_only=True,
    )
    return write_dataset(generator, config.dataset_dir, config.input_format)
