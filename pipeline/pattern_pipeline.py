"""The wafer-map pattern pipeline (issue 11, docs/patterns.md). Wiring only, like pipeline/pipeline.py.

WaferMapExampleGen (one example per wafer, from the same tester files as the die pipeline) ->
statistics, schema, validation -> Transform (a reshape) -> Tuner (optional) -> Trainer (the CNN,
from scratch or from a base model of another product) -> Evaluator (macro-F1 and per-class recall,
sliced by product, gated against a floor and the last blessed pattern model) -> Pusher, with the
TF Lite and ONNX exports and the report (Grad-CAM) beside it.
"""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx

from components.pattern_exporter.component import PatternExporter
from components.pattern_report.component import PatternReport
from components.wafer_map_example_gen.component import WaferMapExampleGen
from data.patterns import LABEL_KEY, PRODUCT_KEY, SCORED_CLASSES
from models.pattern_metrics import MACRO_F1, recall_name
from models.pattern_trainer import (
    AUGMENT_KEY,
    BATCH_SIZE_KEY,
    EPOCHS_KEY,
    LOSS_KEY,
    MIXED_PRECISION_KEY,
    PATIENCE_KEY,
    PATTERNS_KEY,
    SEED_KEY,
    STRATEGY_KEY,
    TRANSFER_KEY,
)
from pipeline.beam_args import with_worker_setup
from pipeline.code_version import CODE_VERSION_KEY, models_code_version
from pipeline.config import PatternRunConfig
from pipeline.pipeline import BASELINE_STRATEGIES, baseline_model_resolver

PREPROCESSING_FN = "models.pattern_preprocessing.preprocessing_fn"
TUNER_FN = "models.pattern_trainer.tuner_fn"
RUN_FN = "models.pattern_trainer.run_fn"
METRICS_MODULE = "models.pattern_metrics"


def pattern_eval_config(min_macro_f1: float, max_macro_f1_drop: float) -> tfma.EvalConfig:
    """TFMA over the model's `patterns` output (the decisions at the thresholds the Trainer chose on
    validation): macro-F1 and each class's recall, overall and per product; the gate is macro-F1
    on the overall slice, a floor and a change threshold against the last blessed pattern model."""
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_macro_f1}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_macro_f1_drop}
        ),
    )
    recalls = [
        tfma.MetricConfig(
            class_name="PatternRecall",
            module=METRICS_MODULE,
            # TFMA names a metric by its class unless the config names it.
            config=json.dumps({"class_name": name, "name": recall_name(name)}),
        )
        for name in SCORED_CLASSES
    ]
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(signature_name="serving_default", label_key=LABEL_KEY, prediction_key=PATTERNS_KEY)
        ],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[PRODUCT_KEY])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="PatternMacroF1",
                        module=METRICS_MODULE,
                        config=json.dumps({"name": MACRO_F1}),
                        per_slice_thresholds=[
                            config_pb2.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)
                        ],
                    ),
                    *recalls,
                ]
            )
        ],
    )


def create_pattern_pipeline(
    config: PatternRunConfig,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
    beam_pipeline_args: list[str],
    base_model_uri: str = "",
    baseline_strategy: str = "latest_blessed_other",
) -> tfx.dsl.Pipeline:
    """The pattern pipeline. `base_model_uri` is a Model artifact's URI (a folder holding
    Format-Serving/, see pipeline/pattern_runner.stage_base_model): the Trainer transfers from it by
    `config.transfer`; without it the CNN trains from scratch. `baseline_strategy` as in
    pipeline/pipeline.py: Kubeflow's V2 compiler takes only TFX's `latest_blessed`."""
    c = config
    if baseline_strategy not in BASELINE_STRATEGIES:
        raise ValueError(f"baseline_strategy must be one of {BASELINE_STRATEGIES}, not {baseline_strategy!r}")
    example_gen = WaferMapExampleGen(
        input_base=data_root,
        input_format=c.input_format,
        input_pattern=c.file_pattern,
        labels_pattern=c.labels_pattern,
        bad_file_policy=c.bad_file_policy,
        split_by=c.split_by,
        edge_exclusion_mm=c.edge_exclusion_mm,
    )
    examples = example_gen.outputs["examples"]
    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    schema = schema_gen.outputs["schema"]
    example_validator = tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"], schema=schema)
    # Train is analysed (nothing to analyse: the Transform is a reshape), train and validation
    # transformed; the Evaluator feeds the raw test maps through the model's own Transform graph.
    code_version = models_code_version()
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema,
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train", "validation"]),
        # Edited model code is a changed setting, not a cache hit (pipeline/code_version.py).
        custom_config={CODE_VERSION_KEY: code_version},
    )
    components = [example_gen, statistics_gen, schema_gen, example_validator, transform]

    hyperparameters = None
    if c.enable_tuning:
        tuner = tfx.components.Tuner(
            tuner_fn=TUNER_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(splits=["train"]),
            eval_args=tfx.proto.EvalArgs(splits=["validation"]),
            custom_config={
                "max_trials": c.tuner_trials,
                EPOCHS_KEY: c.tuner_epochs,
                BATCH_SIZE_KEY: c.batch_size,
                SEED_KEY: c.seed,
                CODE_VERSION_KEY: code_version,
            },
        )
        hyperparameters = tuner.outputs["best_hyperparameters"]
        components.append(tuner)

    base_model = None
    if base_model_uri:
        # The base model, trained by another product's pattern pipeline, as an artifact of this
        # one: its lineage is in MLMD, and a changed base model is a changed Trainer input.
        importer = tfx.dsl.Importer(
            source_uri=base_model_uri, artifact_type=tfx.types.standard_artifacts.Model
        ).with_id("base_model_importer")
        base_model = importer.outputs["result"]
        components.append(importer)

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        hyperparameters=hyperparameters,
        base_model=base_model,
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["validation"]),
        custom_config={
            TRANSFER_KEY: c.transfer if base_model_uri else "scratch",
            EPOCHS_KEY: c.epochs,
            PATIENCE_KEY: c.patience,
            BATCH_SIZE_KEY: c.batch_size,
            STRATEGY_KEY: c.strategy,
            MIXED_PRECISION_KEY: c.mixed_precision,
            AUGMENT_KEY: c.augment,
            LOSS_KEY: c.loss,
            SEED_KEY: c.seed,
            CODE_VERSION_KEY: code_version,
        },
    )
    model_resolver = baseline_model_resolver(baseline_strategy, trainer.outputs["model"])
    evaluator = tfx.components.Evaluator(
        examples=examples,
        example_splits=["test"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=pattern_eval_config(c.min_macro_f1, c.max_macro_f1_drop),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
    )
    components += [trainer, model_resolver, evaluator, pusher]
    if c.report:
        # Per-product figures with intervals, confusions, Grad-CAM heat maps of a sample of test wafers.
        components.append(
            PatternReport(
                examples=examples,
                model=trainer.outputs["model"],
                evaluation=evaluator.outputs["evaluation"],
                model_blessing=evaluator.outputs["blessing"],
                seed=c.seed,
            )
        )
    if c.export:
        # Beside the Pusher, and like it only for a blessed model.
        components.append(
            PatternExporter(
                model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"], examples=examples
            )
        )
    return tfx.dsl.Pipeline(
        pipeline_name=c.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=c.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=with_worker_setup(beam_pipeline_args),
    )
