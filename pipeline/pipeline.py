"""The waferflow TFX pipeline. Wiring only: every path, threshold and Beam argument comes in."""

from __future__ import annotations

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx

from components.baseline_model_strategy import LatestBlessedOtherModelStrategy
from components.onnx_exporter.component import OnnxExporter
from components.tflite_exporter.component import TFLiteExporter
from components.wafer_example_gen.component import WaferExampleGen
from models import features
from pipeline.beam_args import with_worker_setup

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
TUNER_FN = "models.tuner.tuner_fn"
RUN_FN = "models.trainer.run_fn"
# Evaluator baseline: "latest_blessed_other" (default) excludes the candidate, see
# components/baseline_model_strategy.py; "latest_blessed" is TFX's own strategy on model and
# blessing only, the one resolver the Kubeflow V2 compiler can express (KFP resolves it by
# querying before the Trainer runs, so the candidate cannot be picked there anyway).
BASELINE_STRATEGIES = ("latest_blessed_other", "latest_blessed")


def eval_config(min_auc: float, max_auc_drop: float, operating_threshold: float) -> tfma.EvalConfig:
    """TFMA: headline metrics sliced by lot, wafer and site; AUC gates against floor and baseline."""
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_auc}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_auc_drop}
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_key=features.LABEL_KEY,
                prediction_key=features.PROBABILITY_KEY,
                preprocessing_function_names=["transform_features"],
            )
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[k]) for k in features.SLICE_FEATURES],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # The gate is on the overall slice only: per-lot, per-wafer and per-site AUCs
                    # are for looking at (a 60-die wafer slice is noisy), not for vetoing a model.
                    tfma.MetricConfig(
                        class_name="AUC",
                        per_slice_thresholds=[
                            config_pb2.PerSliceMetricThreshold(
                                slicing_specs=[tfma.SlicingSpec()], threshold=auc_threshold
                            )
                        ],
                    ),
                    tfma.MetricConfig(class_name="AUCPrecisionRecall", config='{"name": "pr_auc"}'),
                    tfma.MetricConfig(
                        class_name="Precision", config=f'{{"thresholds": [{operating_threshold}]}}'
                    ),
                    tfma.MetricConfig(class_name="Recall", config=f'{{"thresholds": [{operating_threshold}]}}'),
                    tfma.MetricConfig(class_name="Calibration"),
                    tfma.MetricConfig(class_name="MeanLabel"),
                    tfma.MetricConfig(class_name="MeanPrediction"),
                    tfma.MetricConfig(class_name="CalibrationPlot"),
                ]
            )
        ],
    )


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str | tfx.dsl.experimental.RuntimeParameter,
    serving_model_dir: str,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
    beam_pipeline_args: list[str],
    input_format: str = "parquet",
    input_pattern: str = "wafers/*/*.parquet",
    labels_pattern: str = "labels/*.parquet",
    bad_file_policy: str = "fail",
    train_steps: int = 1000,
    eval_steps: int = 100,
    epochs: int = 10,
    batch_size: int = 256,
    enable_tuning: bool = True,
    tuner_trials: int = 3,
    tuner_steps: int = 200,
    tuner_epochs: int = 2,
    strategy: str = "mirrored",
    mixed_precision: bool = True,
    min_auc: float = 0.6,
    max_auc_drop: float = 0.01,
    operating_threshold: float = 0.1,
    enable_cache: bool = True,
    baseline_strategy: str = "latest_blessed_other",
    export_tflite: bool = True,
    tflite_int8: bool = False,
    export_onnx: bool = True,
) -> tfx.dsl.Pipeline:
    """ExampleGen -> statistics, schema, validation -> Transform -> Tuner -> Trainer -> Evaluator -> Pusher,
    plus TF Lite and ONNX exports of the blessed model beside the Pusher."""
    example_gen = WaferExampleGen(
        input_base=data_root,
        input_format=input_format,
        input_pattern=input_pattern,
        labels_pattern=labels_pattern,
        bad_file_policy=bad_file_policy,
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
    )
    components = [example_gen, statistics_gen, schema_gen, example_validator, transform]

    hyperparameters = None
    if enable_tuning:
        tuner = tfx.components.Tuner(
            tuner_fn=TUNER_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(num_steps=tuner_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=max(1, eval_steps // 2)),
            custom_config={"max_trials": tuner_trials, "epochs": tuner_epochs, "batch_size": batch_size},
        )
        hyperparameters = tuner.outputs["best_hyperparameters"]
        components.append(tuner)

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=hyperparameters,
        train_args=tfx.proto.TrainArgs(num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
        custom_config={
            "epochs": epochs,
            "batch_size": batch_size,
            "strategy": strategy,
            "mixed_precision": mixed_precision,
        },
    )
    if baseline_strategy not in BASELINE_STRATEGIES:
        raise ValueError(f"baseline_strategy must be one of {BASELINE_STRATEGIES}, not {baseline_strategy!r}")
    baseline_inputs = {
        "model": tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        "model_blessing": tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    }
    if baseline_strategy == "latest_blessed_other":
        model_resolver = tfx.dsl.Resolver(
            strategy_class=LatestBlessedOtherModelStrategy, candidate=trainer.outputs["model"], **baseline_inputs
        ).with_id("latest_blessed_model_resolver")
    else:
        model_resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy, **baseline_inputs
        ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(min_auc, max_auc_drop, operating_threshold),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
    )
    components += [trainer, model_resolver, evaluator, pusher]
    # Side exports of the blessed model; like the Pusher, each exports nothing unless it is blessed.
    if export_tflite:
        components.append(TFLiteExporter(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            examples=example_gen.outputs["examples"],
            quantize_int8=tflite_int8,
        ))
    if export_onnx:
        components.append(OnnxExporter(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            examples=example_gen.outputs["examples"],
        ))
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        # Every Beam worker process must install the tfx-bsl stand-in first: pipeline/beam_worker_setup.py.
        beam_pipeline_args=with_worker_setup(beam_pipeline_args),
    )
