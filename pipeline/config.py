"""Run configuration: one frozen dataclass, parsed once from command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

from data.products import PRODUCTS
from data.readers import READERS
from data.writers import SPAN_FOLDER, wafer_file_pattern
from pipeline import beam_args as beam_profiles
from pipeline.console import ArgumentParser


def option(default, help: str, **argparse_kwargs):  # noqa: A002 (argparse's name)
    """A RunConfig field with what its command-line flag says about it: the help text (the one
    place an option is described; `add_arguments` refuses a field without one) and argparse
    extras such as `choices`."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What both pipelines (dies: RunConfig, wafer maps: PatternRunConfig) read and where they write."""

    output_dir: str = option(
        "output",
        "where everything goes: data/, pipeline_root/, metadata/, serving_model/, logs/ and run_summary.json",
    )
    data_dir: str = option(
        "",
        "a folder of your own tester files and labels to ingest (default: the synthetic product's dataset "
        "in <output-dir>/data/<product>, generated if missing)",
    )
    pipeline_name: str = option(
        "",
        "one pipeline (MLMD contexts, blessed-model baseline, serving directory) per product (default: "
        "'waferflow' for your own files or the default product, 'waferflow-<product>' for another synthetic "
        "product, so its model is never gated against another product's)",
    )
    product: str = option(
        "WF7N",
        "built-in synthetic product to generate when --data-dir is not given (data/products.py)",
        choices=sorted(PRODUCTS),
    )
    lots: int = option(20, "lots in the generated synthetic dataset (used only when it is not there yet)")
    wafers_per_lot: int = option(5, "wafers per lot in the generated synthetic dataset")
    seed: int = option(42, "seed of the generated dataset and of the model's initialisation and shuffling")
    input_format: str = option(
        "stdf", "tester file format: STDF V4 files or Parquet (data/readers.py)", choices=sorted(READERS)
    )
    bad_file_policy: str = option(
        "fail",
        "what an unreadable tester file does: 'fail' stops the run, 'quarantine' skips it and lists and counts it",
    )
    split_by: str = option(
        "lot_random",
        "how lots are dealt to the lot-disjoint train / validation / test splits (3:1:2): 'lot_random' "
        "(exact proportions), 'lot_hash' (stable per lot) or 'time' (oldest lots train, newest test: use it "
        "on real data)",
    )
    input_pattern: str = option(
        "",
        "glob of tester files under the data dir (default: the generated layout, wafers/*/*.stdf* for STDF "
        "with .gz and .bz2 archives, wafers/*/*.parquet for Parquet)",
    )
    beam_profile: str = option(
        "direct",
        "Beam argument set from pipeline/beam_args.py; --beam-arg flags are added after it and win",
        choices=sorted(beam_profiles.PROFILES),
    )
    direct_running_mode: str = option(
        "multi_processing",
        "the DirectRunner's mode: 'multi_processing' runs one SDK worker process per worker, each bootstrapped "
        "by pipeline/beam_worker_setup.py ('multi_threading' loses records, docs/beam.md)",
        choices=beam_profiles.DIRECT_RUNNING_MODES,
    )
    direct_num_workers: int = option(
        2,
        "DirectRunner worker processes; each holds its own TensorFlow (~1-2 GB), so capped by default to keep a "
        "many-core server in memory; 0 means one per CPU core (docs/beam.md)",
    )
    beam_args: tuple[str, ...] = option(
        (),
        "extra Beam pipeline argument, repeatable, passed verbatim and winning over the profile's "
        "(e.g. --beam-arg=--runner=FlinkRunner; default: none)",
    )
    enable_cache: bool = option(True, "reuse a component's earlier execution when its inputs and settings match")

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

    def _in_span(self, pattern: str) -> str:
        """Where a pattern points with spans (RunConfig); no spans here."""
        return pattern

    def beam_pipeline_args(self) -> list[str]:
        """The profile's arguments, then the extra ones; direct-runner defaults unless those pick a runner."""
        extra = list(self.beam_args)
        if self.beam_profile != "direct":
            return beam_profiles.profile_args(self.beam_profile, extra)
        if any(a.startswith("--runner") for a in extra):
            return beam_profiles.with_worker_setup(extra)
        return [*beam_profiles.direct_args(self.direct_running_mode, self.direct_num_workers), *extra]


@dataclasses.dataclass(frozen=True)
class RunConfig(DataConfig):
    """Everything a local run of the die pipeline needs; runners turn it into `create_pipeline(...)` arguments."""

    labels_pattern: str = option("labels/*.parquet", "glob of the final-test labels sidecar(s) under the data dir")
    spans: bool = option(
        False,
        "new lots every day: the data dir holds one folder per span (span-1/, span-2/, ..., each with wafers/ "
        "and labels/, as `waferflow generate --span K` writes them); a run ingests the newest span only and "
        "trains on the newest --span-window spans",
    )
    span_window: int = option(3, "with --spans: how many of the newest spans the model trains on")
    schema_file: str = option(
        "",
        "a curated schema (schema.pbtxt: the first run's, reviewed, kept with the project; `python -m "
        "pipeline.schema` writes it) that every new span is validated against (default: none, the schema is "
        "inferred from each run's data)",
    )
    drift_bound: float = option(
        0.2,
        "drift gate: the largest Jensen-Shannon divergence a test of the newest data may have from every earlier "
        "span of the training window (without spans: from the previous run's data) before the model is not "
        "blessed, so not pushed; 0 reports drift without gating",
    )
    guard_band: float = option(
        1.5, "a test within this many robust sigmas of a limit counts as near it (models/preprocessing.py)"
    )
    limit_features: bool = option(
        True, "per-test margins to the limits and per-die summaries as features (--no-limit-features: ablation)"
    )
    epochs: int = option(
        30,
        "the most training epochs; an epoch is one pass over the training split, so the budget follows the "
        "data, and early stopping on validation AUC usually ends it sooner",
    )
    patience: int = option(3, "epochs without a better validation AUC before training stops (best weights kept)")
    batch_size: int = option(256, "training batch size per replica")
    train_memory_mib: int = option(
        1024,
        "the Tuner and the Trainer hold the parsed training split in memory up to this size (each epoch then "
        "reshuffles the whole split); larger splits, 0, and multi-worker training stream it from the files",
    )
    enable_tuning: bool = option(
        True, "run the KerasTuner search before training (--no-enable-tuning: the Trainer uses the defaults)"
    )
    tuner_trials: int = option(3, "hyperparameter sets the Tuner tries")
    tuner_epochs: int = option(2, "full passes over the training split per Tuner trial")
    strategy: str = option(
        "mirrored",
        "distribution strategy: 'mirrored' (all local devices) or 'multi_worker_mirrored' (several hosts, "
        "configured by the orchestrator's TF_CONFIG)",
        choices=("mirrored", "multi_worker_mirrored"),
    )
    mixed_precision: bool = option(True, "mixed precision: bfloat16 on CPU, float16 on GPU")
    min_auc: float = option(0.6, "the blessing gate's floor on test AUC")
    max_auc_drop: float = option(
        0.02,
        "the change gate against the last blessed model refuses a drop in test AUC larger than the test "
        "split's noise explains (paired lot bootstrap, one-sided 95%), and any drop over this cap",
    )
    operating_threshold: float = option(0.1, "the probability at which precision and recall are reported")
    escape_cost: float = option(
        50.0,
        "cost of an escape (a final-test fail not inked), in any unit; the Trainer picks the ink threshold "
        "that minimises escapes x escape cost + overkills x overkill cost on validation",
    )
    overkill_cost: float = option(1.0, "cost of an overkill (a good die inked), in the same unit as --escape-cost")
    export_tflite: bool = option(True, "export the blessed model to TF Lite beside the Pusher (float32)")
    tflite_int8: bool = option(False, "also an int8 post-training-quantized TF Lite model")
    export_onnx: bool = option(True, "export the blessed model to ONNX beside the Pusher")
    report: bool = option(
        True, "write the HTML run report (wafer maps, bins, yield, sites, the model, data health; about a minute)"
    )

    def __post_init__(self) -> None:
        if self.span_window < 1:
            raise ValueError(f"span_window must be at least 1, got {self.span_window}")
        if not self.pipeline_name:
            own = self.data_dir or self.product == RunConfig.product
            name = "waferflow" if own else f"waferflow-{self.product.lower()}"
            object.__setattr__(self, "pipeline_name", name)

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


@dataclasses.dataclass(frozen=True)
class PatternRunConfig(DataConfig):
    """A local run of the wafer-map pattern pipeline (pipeline/pattern_pipeline.py, docs/patterns.md)."""

    pipeline_name: str = option(
        "",
        "one pipeline per product (MLMD contexts, blessed-model baseline, serving directory; default: "
        "'waferflow-patterns' for your own files, 'waferflow-patterns-<product>' for a synthetic product)",
    )
    lots: int = option(80, "lots in the generated synthetic dataset (used only when it is not there yet)")
    wafers_per_lot: int = option(25, "wafers per lot in the generated synthetic dataset (maps only: fast)")
    labels_pattern: str = option(
        "patterns/*.csv", "glob of the pattern-labels sidecar(s) under the data dir (docs/patterns.md)"
    )
    edge_exclusion_mm: float = option(3.0, "the band at the wafer's rim without dies (a WCR does not record it)")
    base_model: str = option(
        "",
        "a pattern model trained on another product (its serving directory, the newest version is taken, or "
        "a SavedModel or .keras file) to transfer from, through the Trainer's base_model input (default: none)",
    )
    transfer: str = option(
        "fine_tune",
        "with --base-model: 'feature_extraction' (frozen backbone), 'fine_tune' (every layer, discriminative "
        "learning rates) or 'gradual_unfreeze'; without one the model trains from scratch",
        choices=("feature_extraction", "fine_tune", "gradual_unfreeze"),
    )
    epochs: int = option(40, "the most training epochs (passes over the training split); early stopping ends it sooner")
    patience: int = option(
        10,
        "epochs without a better validation AUC before training stops (best weights kept); the CNN's "
        "validation AUC is noisy over its first epochs (batch-norm statistics still settling)",
    )
    batch_size: int = option(32, "training batch size per replica")
    augment: bool = option(True, "train on the wafer's symmetries: rotations by 90 degrees and mirror flips")
    loss: str = option("bce", "training loss: binary cross-entropy or focal", choices=("bce", "focal"))
    enable_tuning: bool = option(False, "run the KerasTuner search (width, depth, learning rate) before training")
    tuner_trials: int = option(3, "hyperparameter sets the Tuner tries")
    tuner_epochs: int = option(3, "full passes over the training split per Tuner trial")
    strategy: str = option(
        "mirrored",
        "distribution strategy: 'mirrored' (all local devices) or 'multi_worker_mirrored'",
        choices=("mirrored", "multi_worker_mirrored"),
    )
    mixed_precision: bool = option(
        False,
        "mixed precision (float16 on GPU, bfloat16 on CPU); off by default: on a CPU the CNN trains 4-12x "
        "slower under bfloat16 (benchmarks/pattern_model_choice.py)",
    )
    min_macro_f1: float = option(0.5, "the blessing gate's floor on test macro-F1 (9 classes: 8 patterns and none)")
    max_macro_f1_drop: float = option(
        0.05, "the change gate: the most test macro-F1 may fall below the last blessed pattern model's"
    )
    export: bool = option(True, "export the blessed model to TF Lite (float32 and int8) and ONNX beside the Pusher")
    report: bool = option(True, "write the HTML pattern report (per-product scores, Grad-CAM heat maps)")

    def __post_init__(self) -> None:
        if not self.pipeline_name:
            name = "waferflow-patterns" if self.data_dir else f"waferflow-patterns-{self.product.lower()}"
            object.__setattr__(self, "pipeline_name", name)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, config_class: type = RunConfig) -> None:
    """Flags for every RunConfig field (`--epochs 20`, `--no-enable-tuning`, `--beam-arg X`), each
    with the field's help and default. A field declared without `option(default, help)` is a
    TypeError here, so a new field cannot reach the command line undocumented."""
    for field in dataclasses.fields(config_class):
        if not field.metadata.get("help"):
            raise TypeError(f"RunConfig.{field.name} has no help text: declare it with option(default, help)")
        help_text = field.metadata["help"].replace("%", "%%")
        extra = {k: v for k, v in field.metadata.items() if k != "help"}
        if field.name == "beam_args":
            action = parser.add_argument(
                "--beam-arg", dest="beam_args", action="append", default=[], help=help_text, **extra
            )
        elif field.type == "bool":
            kwargs = dict(action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
            action = parser.add_argument(_flag(field.name), dest=field.name, **kwargs, **extra)
        else:
            kind = {"int": int, "float": float}.get(field.type, str)
            kwargs = dict(type=kind, default=field.default, help=help_text)
            action = parser.add_argument(_flag(field.name), dest=field.name, **kwargs, **extra)
        # An empty default ("", ()) means "derived" and its help says from what.
        if field.default not in ("", ()) and "%(default)" not in action.help:
            action.help += " (default: %(default)s)"


def config_from_args(args: argparse.Namespace, config_class: type = RunConfig) -> DataConfig:
    """The config of parsed flags (other attributes of `args` are ignored)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(config_class)}
    values["beam_args"] = tuple(values["beam_args"])
    return config_class(**values)


def parse_args(argv: list[str] | None = None, description: str = "") -> RunConfig:
    """RunConfig from command-line flags; a bad value is one line on stderr and exit status 2."""
    parser = ArgumentParser(description=description)
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))
