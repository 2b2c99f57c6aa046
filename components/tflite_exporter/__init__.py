"""TFLiteExporter: a blessed model's dense signature -> TF Lite (float32, optional int8)."""
