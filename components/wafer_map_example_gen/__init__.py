"""WaferMapExampleGen: one wafer-map tf.Example per wafer from the same tester files (data/patterns.py)."""
