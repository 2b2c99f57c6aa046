"""Run configuration: one frozen dataclass, parsed once from command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

from data.products import PRODUCTS
from data.writers import SPAN_FOLDER, wafer_file_pattern
from pipeline import beam_args as beam_profiles


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a local run needs; runners turn it into `create_pipeline(...)` arguments."""

    output_dir: str = "output"
    data_dir: str = ""  # default: <output_dir>/data, generated if missing
    # One pipeline (MLMD contexts, blessed-model baseline, serving directory) per product: empty
    # means "waferflow" (your own files, or the default product) and "waferflow-<product>" for
    # another synthetic product, so its model is never gated against another product's.
    pipeline_name: str = ""
    # Synthetic data, used when data_dir has no dataset yet: a built-in product (data/products).
    product: str = "WF7N"
    lots: int = 20
    wafers_per_lot: int = 5
    seed: int = 42
    # Input.
    input_format: str = "stdf"  # a key of data.readers.READERS: "stdf" (STDF V4 files) or "parquet"
    bad_file_policy: str = "fail"
    # Lot-disjoint train / validation / test splits (3:1:2): "lot_random" (exact proportions),
    # "lot_hash" (stable per lot) or "time" (oldest lots train, newest test: use it on real data).
    split_by: str = "lot_random"
    input_pattern: str = ""  # glob of tester files under the data dir; default: see `file_pattern`
    labels_pattern: str = "labels/*.parquet"  # final-test labels sidecar(s), relative to the data dir
    # New lots every day: the data dir holds one folder per span (span-1/, span-2/, ... each laid out
    # as a dataset: wafers/, labels/). A run ingests the newest span only and trains on the newest
    # `span_window` spans (components/resolver_strategies.py).
    spans: bool = False
    span_window: int = 3
    # A curated schema (schema.pbtxt, reviewed and kept with the project) instead of one inferred from
    # each run's data: ImportSchemaGen, and ExampleValidator checks every new span against it.
    schema_file: str = ""
    # Drift gate: the newest data's tests against the earlier spans of the training window (or the
    # previous run's data), TFDV's Jensen-Shannon divergence; a test over this bound against every
    # earlier span withholds the blessing, so nothing is pushed. 0 reports drift without gating.
    drift_bound: float = 0.2
    # Features: a test within this many robust sigmas of a limit counts as near it (models/preprocessing.py).
    guard_band: float = 1.5
    limit_features: bool = True  # per-test margins to the limits and per-die summaries (off: ablation)
    # Training.
    # Training: an epoch is one pass over the training split, so the budget follows the data;
    # early stopping on validation AUC (after `patience` epochs without a gain) ends it sooner.
    epochs: int = 30
    patience: int = 3
    batch_size: int = 256
    enable_tuning: bool = True
    tuner_trials: int = 3
    tuner_epochs: int = 2  # full passes per trial
    strategy: str = "mirrored"
    mixed_precision: bool = True
    # Evaluation gate.
    min_auc: float = 0.6
    # The change gate against the last blessed model refuses a drop in test AUC larger than the
    # test split's noise explains (paired lot bootstrap, one-sided 95%), and any drop over this cap.
    max_auc_drop: float = 0.02
    operating_threshold: float = 0.1  # precision / recall are reported at this probability
    # The ink decision: what an escape (a final-test fail not inked) and an overkill (a good die
    # inked) cost, in any unit; the Trainer picks the threshold that minimises their sum on validation.
    escape_cost: float = 50.0
    overkill_cost: float = 1.0
    # Exports of the blessed model beside the Pusher (components/tflite_exporter, onnx_exporter).
    export_tflite: bool = True
    tflite_int8: bool = False  # also an int8 post-training-quantized TF Lite model
    export_onnx: bool = True
    # The run report (components/wafer_report): wafer maps, bins, yield, sites, the model, data health.
    report: bool = True
    # Beam: a profile from pipeline/beam_args.py (direct | dataflow | flink | spark), the direct
    # runner's mode and workers, plus any extra arguments passed through verbatim (they win).
    # multi_processing: one SDK worker process per core, each bootstrapped by
    # pipeline/beam_worker_setup.py (docs/beam.md says why not multi_threading).
    beam_profile: str = "direct"
    direct_running_mode: str = "multi_processing"
    # Each multi_processing worker holds its own TensorFlow (~1-2 GB): cap by default so a many-core
    # server does not run out of memory; 0 means one worker per CPU core (docs/beam.md).
    direct_num_workers: int = 2
    beam_args: tuple[str, ...] = ()
    enable_cache: bool = True

    def __post_init__(self) -> None:
        if self.span_window < 1:
            raise ValueError(f"span_window must be at least 1, got {self.span_window}")
        if not self.pipeline_name:
            own = self.data_dir or self.product == RunConfig.product
            name = "waferflow" if own else f"waferflow-{self.product.lower()}"
            object.__setattr__(self, "pipeline_name", name)

    @property
    def dataset_dir(self) -> str:
        """The data: `data_dir` (your files), else the synthetic product's generated dataset."""
        return self.data_dir or os.path.join(self.output_dir, "data", self.product)

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline_root", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata", f"{self.pipeline_name}.sqlite")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.output_dir, "serving_model", self.pipeline_name)

    @property
    def file_pattern(self) -> str:
        """Glob of tester files under the data dir: `input_pattern`, else the generated layout
        for the input format, compressed files included (`wafers/*/*.stdf*`: .stdf, .stdf.gz, .stdf.bz2)."""
        compressed = "*" if self.input_format == "stdf" else ""
        return self._in_span(self.input_pattern or wafer_file_pattern(self.input_format) + compressed)

    @property
    def labels_file_pattern(self) -> str:
        """Glob of the labels sidecar(s): `labels_pattern`, in the span's folder with `spans`."""
        return self._in_span(self.labels_pattern)

    @staticmethod
    def any_span(pattern: str) -> str:
        """A glob over every span: `{SPAN}` (or `{SPAN:N}`) replaced by `*`."""
        return re.sub(r"\{SPAN(:\d+)?\}", "*", pattern)

    def _in_span(self, pattern: str) -> str:
        if not self.spans or "{SPAN" in pattern or os.path.isabs(pattern) or "://" in pattern:
            return pattern
        return f"{SPAN_FOLDER}/{pattern}"

    def beam_pipeline_args(self) -> list[str]:
        """The profile's arguments, then the extra ones; direct-runner defaults unless those pick a runner."""
        extra = list(self.beam_args)
        if self.beam_profile != "direct":
            return beam_profiles.profile_args(self.beam_profile, extra)
        if any(a.startswith("--runner") for a in extra):
            return beam_profiles.with_worker_setup(extra)
        return [*beam_profiles.direct_args(self.direct_running_mode, self.direct_num_workers), *extra]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_args(argv: list[str] | None = None, description: str = "") -> RunConfig:
    """Flags for every RunConfig field (`--epochs 20`, `--no-enable-tuning`, `--beam-arg X`)."""
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(RunConfig):
        if field.name == "beam_args":
            parser.add_argument(
                "--beam-arg",
                dest="beam_args",
                action="append",
                default=[],
                help="extra Beam pipeline argument, repeatable (e.g. --beam-arg=--runner=FlinkRunner)",
            )
        elif field.name == "product":
            parser.add_argument(
                "--product",
                choices=sorted(PRODUCTS),
                default=field.default,
                help="built-in synthetic product to generate when --data-dir is not given",
            )
        elif field.type == "bool":
            parser.add_argument(
                _flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction, default=field.default
            )
        else:
            kind = {"int": int, "float": float}.get(field.type, str)
            parser.add_argument(_flag(field.name), dest=field.name, type=kind, default=field.default)
    values = vars(parser.parse_args(argv))
    values["beam_args"] = tuple(values["beam_args"])
    return RunConfig(**values)
