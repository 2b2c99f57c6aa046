"""The waferflow TFX pipeline. Wiring only: every path, threshold and Beam argument comes in."""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import config_pb2
from tfx import v1 as tfx
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY

from components.baseline_model_strategy import LatestBlessedOtherModelStrategy
from components.drift_check.component import DriftCheck, DriftReport
from components.noise_aware_evaluator.component import NoiseAwareEvaluator
from components.onnx_exporter.component import OnnxExporter
from components.resolver_strategies import EarlierReportsStrategy, LatestSpansStrategy
from components.tflite_exporter.component import TFLiteExporter
from components.transform_config.component import TransformConfig
from components.wafer_example_gen.component import WaferExampleGen
from components.wafer_report.component import WaferReport
from models import features
from pipeline.beam_args import with_worker_setup
from pipeline.code_version import CODE_VERSION_KEY, models_code_version
from pipeline.config import RunConfig

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
TUNER_FN = "models.tuner.tuner_fn"
RUN_FN = "models.trainer.run_fn"
# Evaluator baseline: "latest_blessed_other" (default) excludes the candidate, see
# components/baseline_model_strategy.py; "latest_blessed" is TFX's own strategy on model and
# blessing only, the one resolver the Kubeflow V2 compiler can express (KFP resolves it by
# querying before the Trainer runs, so the candidate cannot be picked there anyway).
BASELINE_STRATEGIES = ("latest_blessed_other", "latest_blessed")


def baseline_model_resolver(baseline_strategy: str, candidate: tfx.dsl.Channel) -> tfx.dsl.Resolver:
    """The Evaluator's baseline: the latest blessed model, by one of BASELINE_STRATEGIES
    (`candidate`, the Trainer's model, is what "other" excludes). Node id
    "latest_blessed_model_resolver" in both pipelines."""
    baseline_inputs = {
        "model": tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        "model_blessing": tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    }
    if baseline_strategy == "latest_blessed_other":
        resolver = tfx.dsl.Resolver(
            strategy_class=LatestBlessedOtherModelStrategy, candidate=candidate, **baseline_inputs
        )
    else:
        resolver = tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy, **baseline_inputs)
    return resolver.with_id("latest_blessed_model_resolver")


def eval_config(
    min_auc: float,
    max_auc_drop: float,
    operating_threshold: float,
    escape_cost: float = 50.0,
    overkill_cost: float = 1.0,
) -> tfma.EvalConfig:
    """TFMA: headline metrics sliced by lot, wafer and probe slot; AUC gates against floor and baseline.

    `max_auc_drop` is the cap of the change gate: the NoiseAwareEvaluator lowers it to what the
    test split's noise explains (components/noise_aware_evaluator/executor.py).

    Expected cost per die is measured at the threshold the costs imply for a calibrated model,
    overkill / (overkill + escape) (models/metrics.py); the Trainer's own operating point, chosen on
    validation, is stored with the model and reported by the summary."""
    cost_threshold = overkill_cost / (overkill_cost + escape_cost)
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
                # No preprocessing function: the slices are raw features and serving_default
                # transforms inside the model. TFMA would otherwise carry every transformed feature
                # of every example through its per-example extracts (13% of its time at 312k dies).
            )
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=list(k)) for k in features.SLICES],
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
                    tfma.MetricConfig(class_name="Precision", config=f'{{"thresholds": [{operating_threshold}]}}'),
                    tfma.MetricConfig(class_name="Recall", config=f'{{"thresholds": [{operating_threshold}]}}'),
                    tfma.MetricConfig(class_name="Calibration"),
                    tfma.MetricConfig(class_name="MeanLabel"),
                    tfma.MetricConfig(class_name="MeanPrediction"),
                    tfma.MetricConfig(class_name="CalibrationPlot"),
                    tfma.MetricConfig(
                        class_name="ExpectedCost",
                        module="models.metrics",
                        config=json.dumps(
                            {"threshold": cost_threshold, "escape_cost": escape_cost, "overkill_cost": overkill_cost}
                        ),
                    ),
                ]
            )
        ],
    )


def create_pipeline(
    config: RunConfig,
    pipeline_root: str,
    data_root: str | tfx.dsl.experimental.RuntimeParameter,
    serving_model_dir: str,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
    beam_pipeline_args: list[str],
    baseline_strategy: str = "latest_blessed_other",
) -> tfx.dsl.Pipeline:
    """ExampleGen -> statistics, schema, validation -> Transform -> Tuner -> Trainer -> Evaluator -> Pusher,
    plus TF Lite and ONNX exports of the blessed model beside the Pusher.

    Every knob comes from `config` (pipeline/config.py, the one place defaults live); the runner
    supplies where things are (roots, MLMD, Beam arguments) and, on Kubeflow, the baseline strategy.
    """
    c = config
    if baseline_strategy not in BASELINE_STRATEGIES:
        raise ValueError(f"baseline_strategy must be one of {BASELINE_STRATEGIES}, not {baseline_strategy!r}")
    # Kubeflow's V2 compiler takes TFX's latest-artifact resolvers only (see the spans and drift below).
    local = baseline_strategy == "latest_blessed_other"
    example_gen = WaferExampleGen(
        input_base=data_root,
        input_format=c.input_format,
        input_pattern=c.file_pattern,
        labels_pattern=c.labels_file_pattern,
        bad_file_policy=c.bad_file_policy,
        split_by=c.split_by,
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    if c.schema_file:
        # The curated schema, kept with the project: every new span is validated against it.
        schema_gen = tfx.components.ImportSchemaGen(schema_file=c.schema_file)
    else:
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    schema = schema_gen.outputs["schema"]
    example_validator = tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"], schema=schema)
    components = [example_gen, statistics_gen, schema_gen, example_validator]

    # The training data: this run's examples, or with spans the newest `span_window` spans (this
    # run's ExampleGen ingests only the newest; the others come from MLMD).
    training_examples = example_gen.outputs["examples"]
    if c.spans and local:
        window = tfx.dsl.Resolver(
            strategy_class=LatestSpansStrategy,
            config={"num_spans": c.span_window},
            newest=example_gen.outputs["examples"],
            examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples),
        ).with_id("span_window_resolver")
        training_examples = window.outputs["examples"]
        components.append(window)

    # The models package's source fingerprint: edited model code is a changed setting of the
    # Transform, the Tuner and the Trainer, which TFX would otherwise serve from its cache.
    code_version = models_code_version()
    transform_config = TransformConfig(
        examples=example_gen.outputs["examples"],
        guard_band=float(c.guard_band),
        limit_features=int(c.limit_features),
        code_version=code_version,
    )
    # Analyze train, transform what the Tuner and the Trainer read. The test split is never
    # materialised: the Evaluator and the exporters feed raw examples through the model's own
    # transform graph, and a third of the dies is a third of the Transform's work.
    transform = tfx.components.Transform(
        examples=training_examples,
        schema=schema,
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train", "validation"]),
    )
    # The Transform builds its features from the test program the ingest learned (the newest span's),
    # which exists only once the ExampleGen has run: its custom_config is made at run time
    # (components/transform_config).
    transform.exec_properties[CUSTOM_CONFIG_KEY] = transform_config.outputs["config"].future()[0].value
    components += [transform_config, transform]

    # Drift: the newest data against the earlier spans of the training window (without spans, the
    # previous run's data), each kept by the DriftCheck that first saw it. Local runs only: a Kubeflow
    # V2 resolver can only be TFX's latest-artifact query (docs/kubeflow.md); there the check records
    # the newest data's statistics without a comparison.
    earlier_reports = None
    if local:
        earlier_reports = tfx.dsl.Resolver(
            strategy_class=EarlierReportsStrategy,
            config={"num_spans": max(c.span_window - 1, 1)},
            newest=example_gen.outputs["examples"],
            reports=tfx.dsl.Channel(type=DriftReport),
        ).with_id("earlier_drift_reports_resolver")
        components.append(earlier_reports)
    drift_check = DriftCheck(
        examples=example_gen.outputs["examples"],
        schema=schema,
        reference_reports=earlier_reports.outputs["reports"] if earlier_reports else None,
        js_bound=c.drift_bound,
    )
    components.append(drift_check)

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
                "epochs": c.tuner_epochs,
                "batch_size": c.batch_size,
                "train_memory_mib": c.train_memory_mib,
                "seed": c.seed,
                CODE_VERSION_KEY: code_version,
            },
        )
        hyperparameters = tuner.outputs["best_hyperparameters"]
        components.append(tuner)

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        hyperparameters=hyperparameters,
        # Validation, read once per epoch in full, early-stops and schedules; test is never seen here.
        # The budget is in epochs over the train split (models/trainer.py), not a step count.
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["validation"]),
        custom_config={
            "epochs": c.epochs,
            "patience": c.patience,
            "batch_size": c.batch_size,
            "train_memory_mib": c.train_memory_mib,
            "strategy": c.strategy,
            "mixed_precision": c.mixed_precision,
            "guard_band": float(c.guard_band),
            "seed": c.seed,
            "escape_cost": float(c.escape_cost),
            "overkill_cost": float(c.overkill_cost),
            CODE_VERSION_KEY: code_version,
        },
    )
    model_resolver = baseline_model_resolver(baseline_strategy, trainer.outputs["model"])
    # TFX's Evaluator whose AUC change threshold is min(max_auc_drop, what the test split's noise
    # explains): components/noise_aware_evaluator. Node id "Evaluator" as before.
    evaluator = NoiseAwareEvaluator(
        examples=example_gen.outputs["examples"],
        example_splits=["test"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(c.min_auc, c.max_auc_drop, c.operating_threshold, c.escape_cost, c.overkill_cost),
        drift_report=drift_check.outputs["drift"],
    ).with_id("Evaluator")
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
    )
    components += [trainer, model_resolver, evaluator, pusher]
    # Side exports of the blessed model; like the Pusher, each exports nothing unless it is blessed.
    exports = {}
    if c.export_tflite:
        exports["tflite_model"] = TFLiteExporter(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            examples=example_gen.outputs["examples"],
            quantize_int8=c.tflite_int8,
        )
    if c.export_onnx:
        exports["onnx_model"] = OnnxExporter(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            examples=example_gen.outputs["examples"],
        )
    components += list(exports.values())
    # Last: the run report, which says where the model went (components/wafer_report). Drift needs
    # the previous run's statistics: a local run's report finds them in MLMD itself (by the SQLite
    # path); on Kubeflow a LatestArtifactStrategy resolver, which KFP resolves before the run starts,
    # brings them.
    if c.report:
        sqlite = metadata_connection_config.sqlite.filename_uri if metadata_connection_config else ""
        previous_statistics = None
        if baseline_strategy == "latest_blessed":
            previous_statistics = tfx.dsl.Resolver(
                strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
                # StatisticsGen's own output only: the Transform writes ExampleStatistics too.
                statistics=tfx.dsl.Channel(
                    type=tfx.types.standard_artifacts.ExampleStatistics,
                    producer_component_id=statistics_gen.id,
                    output_key="statistics",
                ),
            ).with_id("previous_statistics_resolver")
            components.append(previous_statistics)
        components.append(
            WaferReport(
                examples=example_gen.outputs["examples"],
                model=trainer.outputs["model"],
                model_run=trainer.outputs["model_run"],
                evaluation=evaluator.outputs["evaluation"],
                model_blessing=evaluator.outputs["blessing"],
                anomalies=example_validator.outputs["anomalies"],
                pushed_model=pusher.outputs["pushed_model"],
                input_base=data_root,
                input_pattern=c.file_pattern,
                input_format=c.input_format,
                pipeline_name=c.pipeline_name,
                seed=c.seed,
                statistics=statistics_gen.outputs["statistics"],
                baseline_statistics=previous_statistics.outputs["statistics"] if previous_statistics else None,
                schema=schema,
                drift_report=drift_check.outputs["drift"],
                metadata_path=sqlite,
                **{key: component.outputs[key] for key, component in exports.items()},
            )
        )
    return tfx.dsl.Pipeline(
        pipeline_name=c.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=c.enable_cache,
        metadata_connection_config=metadata_connection_config,
        # Every Beam worker process must install the tfx-bsl stand-in first: pipeline/beam_worker_setup.py.
        beam_pipeline_args=with_worker_setup(beam_pipeline_args),
    )
