"""The code TFX components call (preprocessing_fn, tuner_fn, run_fn) and the Keras model."""
