"""OnnxExporter: after the Evaluator, a side export of the blessed model as ONNX (tf2onnx).

Inputs: the Trainer's `model`, the Evaluator's `model_blessing` (nothing is exported unless it
is blessed) and, optionally, `examples` (the test split checks the export against
`serving_default`). Output: an `ONNXModel` artifact with model.onnx and export_report.json.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, system_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components import model_export
from components.onnx_exporter import executor


class ONNXModel(artifact.Artifact):
    """An ONNX conversion of a blessed model (file: model.onnx)."""

    TYPE_NAME = "components.ONNXModel"  # <namespace>.<Name>, importable: components/__init__.py
    TYPE_ANNOTATION = system_artifacts.Model


class OnnxExporterSpec(ComponentSpec):
    PARAMETERS = {
        executor.OPSET_KEY: ExecutionParameter(type=int),
        executor.PARITY_EXAMPLES_KEY: ExecutionParameter(type=int),
    }
    INPUTS = model_export.EXPORT_INPUTS
    OUTPUTS = {executor.ONNX_MODEL_KEY: ChannelParameter(type=ONNXModel)}


class OnnxExporter(base_component.BaseComponent):
    """A blessed model as ONNX, loadable by onnxruntime, Transform inside the graph."""

    SPEC_CLASS = OnnxExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        examples: types.BaseChannel | None = None,
        opset: int = executor.DEFAULT_OPSET,
        parity_examples: int = 2000,
    ):
        """
        Args:
          model: the Trainer's Model channel (a SavedModel with the `serve_dense` signature).
          model_blessing: the Evaluator's blessing for that model.
          examples: ExampleGen output; its test split checks the export (unchecked without it).
          opset: ONNX opset to target.
          parity_examples: eval dies scored by serving_default and onnxruntime to compare them.
        """
        if parity_examples < 0:
            raise ValueError("parity_examples must be >= 0")
        spec = OnnxExporterSpec(
            model=model,
            model_blessing=model_blessing,
            examples=examples,
            opset=opset,
            parity_examples=parity_examples,
            onnx_model=types.Channel(type=ONNXModel),
        )
        super().__init__(spec=spec)
