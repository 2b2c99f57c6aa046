"""PatternReport: the pattern model on the test split, per product, with Grad-CAM, as a TFX artifact.

Inputs: the map ExampleGen's wafer-map examples (the test split), the pattern Trainer's model, and
optionally the Evaluator's evaluation and blessing (shown when given). Parameters: the seed of the
bootstrap and of the wafer sample, and how many wafers the Grad-CAM sample shows. Output: a
`PatternReport` artifact holding report.html, report.json and the sample's PNGs (images/).
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.pattern_report import executor as ex
from components.pattern_report.report import SAMPLE_SIZE


class PatternReportArtifact(artifact.Artifact):
    """A rendered pattern report (report.html, report.json, images/)."""

    TYPE_NAME = "components.PatternReport"  # <namespace>.<Name>, importable: components/__init__.py


class PatternReportSpec(ComponentSpec):
    PARAMETERS = {
        ex.SEED_KEY: ExecutionParameter(type=int),
        ex.SAMPLE_SIZE_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {
        ex.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        ex.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        ex.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
        ex.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
    }
    OUTPUTS = {ex.REPORT_KEY: ChannelParameter(type=PatternReportArtifact)}


class PatternReport(base_component.BaseComponent):
    """Macro-F1 (with a bootstrap interval), recall and confusions per product, and Grad-CAM maps."""

    SPEC_CLASS = PatternReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ex.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        evaluation: types.BaseChannel | None = None,
        model_blessing: types.BaseChannel | None = None,
        seed: int = 0,
        sample_size: int = SAMPLE_SIZE,
    ):
        if sample_size < 1:
            raise ValueError(f"PatternReport: sample_size must be at least 1, got {sample_size}")
        spec = PatternReportSpec(
            examples=examples,
            model=model,
            evaluation=evaluation,
            model_blessing=model_blessing,
            report=types.Channel(type=PatternReportArtifact),
            seed=seed,
            sample_size=sample_size,
        )
        super().__init__(spec=spec)
