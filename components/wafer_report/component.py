"""WaferReport: the page a yield engineer opens after every run, as a TFX artifact.

Runs last (after the Pusher and the exporters, so it can say where the model went), is cached like
every other component, and on Kubeflow is one more container task. Inputs: the ExampleGen's
examples (the test split and the learned program), the Trainer's model and model_run, the
Evaluator's evaluation and blessing, the ExampleValidator's anomalies, the Pusher's pushed model,
the TF Lite and ONNX exports, this run's and the previous run's statistics with the schema (for
drift), the DriftCheck's report (the drift gate; all optional). Parameters: where the tester files are (the ExampleGen's
own input_base, pattern and format: the bins of sort fails are only in the files) and, on local
runs, the SQLite MLMD path (each component's time and cache hit). Output: a
`WaferReport` artifact holding report.html and report.json.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.drift_check.component import DriftReport
from components.onnx_exporter.component import ONNXModel
from components.tflite_exporter.component import TFLiteModel
from components.wafer_report import executor as ex


class WaferReportArtifact(artifact.Artifact):
    """A rendered run report (report.html, report.json)."""

    TYPE_NAME = "components.WaferReport"  # <namespace>.<Name>, importable: components/__init__.py


class WaferReportSpec(ComponentSpec):
    PARAMETERS = {
        ex.INPUT_BASE_KEY: ExecutionParameter(type=str),
        ex.INPUT_PATTERN_KEY: ExecutionParameter(type=str),
        ex.INPUT_FORMAT_KEY: ExecutionParameter(type=str),
        ex.PIPELINE_NAME_KEY: ExecutionParameter(type=str),
        ex.SEED_KEY: ExecutionParameter(type=int),
        ex.METADATA_PATH_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        ex.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        ex.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        ex.MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun, optional=True),
        ex.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        ex.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        ex.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies, optional=True),
        ex.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
        ex.TFLITE_KEY: ChannelParameter(type=TFLiteModel, optional=True),
        ex.ONNX_KEY: ChannelParameter(type=ONNXModel, optional=True),
        ex.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        ex.BASELINE_STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        ex.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
        ex.DRIFT_REPORT_KEY: ChannelParameter(type=DriftReport, optional=True),
    }
    OUTPUTS = {ex.REPORT_KEY: ChannelParameter(type=WaferReportArtifact)}


class WaferReport(base_component.BaseComponent):
    """One self-contained HTML report of the run: wafer maps, bins, yield, sites, the model, data health."""

    SPEC_CLASS = WaferReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ex.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        evaluation: types.BaseChannel,
        model_blessing: types.BaseChannel,
        input_base,
        input_pattern: str,
        input_format: str,
        pipeline_name: str,
        model_run: types.BaseChannel | None = None,
        anomalies: types.BaseChannel | None = None,
        pushed_model: types.BaseChannel | None = None,
        tflite_model: types.BaseChannel | None = None,
        onnx_model: types.BaseChannel | None = None,
        statistics: types.BaseChannel | None = None,
        baseline_statistics: types.BaseChannel | None = None,
        schema: types.BaseChannel | None = None,
        drift_report: types.BaseChannel | None = None,
        seed: int = 0,
        metadata_path: str = "",
    ):
        spec = WaferReportSpec(
            examples=examples,
            model=model,
            model_run=model_run,
            evaluation=evaluation,
            model_blessing=model_blessing,
            anomalies=anomalies,
            pushed_model=pushed_model,
            tflite_model=tflite_model,
            onnx_model=onnx_model,
            statistics=statistics,
            baseline_statistics=baseline_statistics,
            schema=schema,
            drift_report=drift_report,
            report=types.Channel(type=WaferReportArtifact),
            input_base=input_base,
            input_pattern=input_pattern,
            input_format=input_format,
            pipeline_name=pipeline_name,
            seed=seed,
            metadata_path=metadata_path,
        )
        super().__init__(spec=spec)
