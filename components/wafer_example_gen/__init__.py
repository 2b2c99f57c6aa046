"""WaferExampleGen: wafer-test files + final-test labels -> die tf.Examples."""
