"""OnnxExporter: a blessed model's dense signature -> ONNX (tf2onnx)."""
