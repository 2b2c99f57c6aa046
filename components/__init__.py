"""Custom TFX components, and the custom artifact types by the names Kubeflow gives them.

On Kubeflow, TFX's container entry point (kubeflow_v2_run_executor) rebuilds a custom artifact type
from its KFP schema title, which is the type's TYPE_NAME, by importing that title as a class path:
the V2 compiler requires the form `<namespace>.<Name>` (one lowercase namespace), so the types are
named `components.ONNXModel`, ... and this package resolves the attribute lazily (importing it costs
nothing until a type is asked for).
"""

from __future__ import annotations

import importlib

# TYPE_NAME "components.<Name>" -> the module defining the class whose TYPE_NAME it is.
_ARTIFACT_TYPES = {
    "DriftReport": "components.drift_check.component",
    "ONNXModel": "components.onnx_exporter.component",
    "PatternModelExports": "components.pattern_exporter.component",
    "PatternReport": "components.pattern_report.component",
    "TFLiteModel": "components.tflite_exporter.component",
    "WaferReport": "components.wafer_report.component",
}


def __getattr__(name: str):
    if name not in _ARTIFACT_TYPES:
        raise AttributeError(f"module 'components' has no attribute or artifact type {name!r}")
    module = importlib.import_module(_ARTIFACT_TYPES[name])
    (cls,) = (c for c in vars(module).values() if getattr(c, "TYPE_NAME", None) == f"components.{name}")
    return cls
