"""The `waferflow.*` artifact types by the names Kubeflow gives them: `waferflow.ONNXModel`, ...

On Kubeflow, TFX's container entry point (kubeflow_v2_run_executor) rebuilds a custom artifact
type from its KFP schema title, which is the type's TYPE_NAME (`waferflow.ONNXModel`, the
`<namespace>.<Name>` form the V2 compiler requires), by importing that title as a class path:
module `waferflow`, attribute `ONNXModel`. This module is that path. Lazy, so importing it costs
nothing until a type is asked for.
"""

from __future__ import annotations

import importlib

# TYPE_NAME "waferflow.<Name>" -> the module defining the class <Name>.
_TYPES = {
    "ONNXModel": "components.onnx_exporter.component",
    "TFLiteModel": "components.tflite_exporter.component",
    "WaferReport": "components.wafer_report.component",
}


def __getattr__(name: str):
    if name not in _TYPES:
        raise AttributeError(f"module 'waferflow' has no artifact type {name!r}")
    module = importlib.import_module(_TYPES[name])
    (cls,) = (c for c in vars(module).values() if getattr(c, "TYPE_NAME", None) == f"waferflow.{name}")
    return cls
