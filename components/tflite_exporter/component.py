"""TFLiteExporter: after the Evaluator, convert the blessed model to TF Lite (builtin ops only).

Inputs: the Trainer's `model`, the Evaluator's `model_blessing` (nothing is exported unless it
is blessed, as with the Pusher) and `examples` (ExampleGen output: the train split calibrates the
int8 variant, the test split checks each export against `serving_default`).
Output: a `TFLiteModel` artifact holding model.tflite, model_int8.tflite (optional) and
export_report.json. Its own artifact type keeps it out of channels and resolvers that look for
the Trainer's `Model`.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, system_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components import model_export
from components.tflite_exporter import executor


class TFLiteModel(artifact.Artifact):
    """A TF Lite conversion of a blessed model (files: model.tflite, model_int8.tflite)."""

    TYPE_NAME = "components.TFLiteModel"  # <namespace>.<Name>, importable: components/__init__.py
    TYPE_ANNOTATION = system_artifacts.Model


class TFLiteExporterSpec(ComponentSpec):
    PARAMETERS = {
        executor.QUANTIZE_INT8_KEY: ExecutionParameter(type=int),
        executor.CALIBRATION_EXAMPLES_KEY: ExecutionParameter(type=int),
        executor.PARITY_EXAMPLES_KEY: ExecutionParameter(type=int),
        executor.INT8_MAX_AUC_CHANGE_KEY: ExecutionParameter(type=float),
    }
    INPUTS = model_export.EXPORT_INPUTS
    OUTPUTS = {executor.TFLITE_MODEL_KEY: ChannelParameter(type=TFLiteModel)}


class TFLiteExporter(base_component.BaseComponent):
    """A blessed model as TF Lite: float32, plus an int8 post-training-quantized variant on request."""

    SPEC_CLASS = TFLiteExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        examples: types.BaseChannel | None = None,
        quantize_int8: bool = False,
        calibration_examples: int = 5000,
        parity_examples: int = 2000,
        int8_max_auc_change: float = 0.01,
    ):
        """
        Args:
          model: the Trainer's Model channel (a SavedModel with the `serve_dense` signature).
          model_blessing: the Evaluator's blessing for that model.
          examples: ExampleGen output with `train` and `eval` splits; needed for int8 and for the
            parity check (without it the export is not checked).
          quantize_int8: also write the int8 post-training-quantized model.
          calibration_examples: training dies sampled to calibrate the int8 ranges.
          parity_examples: eval dies scored by serving_default and the export to compare them.
          int8_max_auc_change: the int8 file is kept only if its eval AUC is within this of the
            SavedModel's on the same dies.
        """
        if quantize_int8 and examples is None:
            raise ValueError("quantize_int8 needs examples to calibrate on")
        if calibration_examples < 1 or parity_examples < 0:
            raise ValueError("calibration_examples must be >= 1 and parity_examples >= 0")
        spec = TFLiteExporterSpec(
            model=model,
            model_blessing=model_blessing,
            examples=examples,
            quantize_int8=int(quantize_int8),
            calibration_examples=calibration_examples,
            parity_examples=parity_examples,
            int8_max_auc_change=int8_max_auc_change,
            tflite_model=types.Channel(type=TFLiteModel),
        )
        super().__init__(spec=spec)
