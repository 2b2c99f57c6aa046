"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

import pytest

from data.synthetic import GeneratorConfig
from data.writers import write_dataset

SMALL = GeneratorConfig(lots=4, wafers_per_lot=2, seed=7)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> str:
    """4 lots x 2 wafers (about 5,000 dies) in the columnar format."""
    out = str(tmp_path_factory.mktemp("dataset"))
    write_dataset(SMALL, out)
    return out


@pytest.fixture(scope="session")
def small_stdf_dataset(tmp_path_factory) -> str:
    """The same 4 lots x 2 wafers as STDF V4 files (the pipeline's default input format)."""
    out = str(tmp_path_factory.mktemp("stdf_dataset"))
    write_dataset(SMALL, out, "stdf")
    return out


@pytest.fixture(scope="session")
def served_model(small_dataset, tmp_path_factory):
    """One small real pipeline run, exports included (TF Lite float32 + int8, ONNX), shared by the
    serving tests: the pushed SavedModel, the artifacts around it and the input files.

    The AUC gate is opened (min_auc 0) so that the short training run is always blessed: these
    tests are about what is exported and served, the blessing gate has its own e2e test.

    Deterministic: the same data trains the same weights on every run (checked: byte-identical
    variables from two runs under different PYTHONHASHSEEDs), so tolerances are tested against one
    model, not a draw. The Trainer seeds Keras, TF and NumPy from RunConfig.seed; what remains is
    the order of the examples on disk, which the Trainer's seeded shuffle starts from: TFX writes
    each split through a Reshuffle, and with more than one Beam worker (threads, in memory) the
    records land in the shards in a racy order. One worker writes them in the same order every time.
    """
    import glob
    import json
    import os
    import types

    from pipeline import local_runner
    from pipeline.config import RunConfig

    with open(os.path.join(small_dataset, "manifest.json")) as f:
        input_format = json.load(f).get("format", "parquet")
    config = RunConfig(
        output_dir=str(tmp_path_factory.mktemp("served")),
        data_dir=small_dataset,
        input_format=input_format,
        epochs=8,
        enable_tuning=False,
        report=False,  # the exporters need a model, not the run report
        min_auc=0.0,
        tflite_int8=True,
        direct_running_mode="in_memory",  # 5,000 dies: worker processes would cost more than they save
        direct_num_workers=1,  # examples written in the same order every run (see above)
    )
    summary = local_runner.run(config)
    assert summary["blessed"] and summary["pushed_model"], summary

    def only(pattern: str) -> str:
        (path,) = glob.glob(os.path.join(config.pipeline_root, pattern))
        return path

    return types.SimpleNamespace(
        config=config,
        summary=summary,
        saved_model=summary["pushed_model"],
        model_uri=only("Trainer/model/*"),
        examples_uri=only("WaferExampleGen/examples/*"),
        transform_graph=only("Transform/transform_graph/*"),
        blessing_uri=only("Evaluator/blessing/*"),
        tflite_dir=only("TFLiteExporter/tflite_model/*"),
        onnx_dir=only("OnnxExporter/onnx_model/*"),
        input_format=input_format,
        input_files=sorted(glob.glob(os.path.join(small_dataset, "wafers", "*", f"*.{input_format}"))),
    )
