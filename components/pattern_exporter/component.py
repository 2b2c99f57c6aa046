"""PatternExporter: after the pattern pipeline's Evaluator, the blessed pattern model as TF Lite
(float32 and int8) and ONNX, for a prober's or an edge box's runtime (executor.py says what is
converted and how parity is checked).

Inputs: the Trainer's `model`, the Evaluator's `model_blessing` (nothing is exported unless it is
blessed), `examples` (wafer maps: the test split checks parity, the train split calibrates int8).
Output: a `PatternModelExports` artifact with model.tflite, model_int8.tflite, model.onnx,
pattern_thresholds.json and export_report.json.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, system_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components import model_export
from components.pattern_exporter import executor


class PatternModelExports(artifact.Artifact):
    """TF Lite and ONNX conversions of a blessed pattern model."""

    TYPE_NAME = "components.PatternModelExports"  # <namespace>.<Name>: components/__init__.py
    TYPE_ANNOTATION = system_artifacts.Model


class PatternExporterSpec(ComponentSpec):
    PARAMETERS = {
        executor.QUANTIZE_INT8_KEY: ExecutionParameter(type=int),
        executor.PARITY_MAPS_KEY: ExecutionParameter(type=int),
        executor.CALIBRATION_MAPS_KEY: ExecutionParameter(type=int),
    }
    INPUTS = model_export.EXPORT_INPUTS
    OUTPUTS = {executor.EXPORTS_KEY: ChannelParameter(type=PatternModelExports)}


class PatternExporter(base_component.BaseComponent):
    """A blessed pattern model as TF Lite (float32, optionally int8) and ONNX, parity-checked."""

    SPEC_CLASS = PatternExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        examples: types.BaseChannel,
        quantize_int8: bool = True,
        parity_maps: int = 1000,
        calibration_maps: int = 200,
    ):
        """
        Args:
          model: the pattern Trainer's Model channel.
          model_blessing: the Evaluator's blessing for that model.
          examples: the WaferMapExampleGen's examples (test: parity; train: int8 calibration).
          quantize_int8: also write the full-integer int8 TF Lite model.
          parity_maps: test maps (at most) scored by the SavedModel and every export.
          calibration_maps: train maps (at most) that calibrate the int8 ranges.
        """
        if parity_maps < 1 or calibration_maps < 1:
            raise ValueError("parity_maps and calibration_maps must be at least 1")
        spec = PatternExporterSpec(
            model=model,
            model_blessing=model_blessing,
            examples=examples,
            quantize_int8=int(quantize_int8),
            parity_maps=parity_maps,
            calibration_maps=calibration_maps,
            pattern_exports=types.Channel(type=PatternModelExports),
        )
        super().__init__(spec=spec)
