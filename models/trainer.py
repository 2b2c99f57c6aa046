"""Trainer entry point: train under MirroredStrategy and mixed precision, export for serving."""

from __future__ import annotations

import dataclasses
import tempfile

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx

from models import dense_signature, features, model, operating_point, training

# Trainer custom_config keys.
EPOCHS_KEY = "epochs"
BATCH_SIZE_KEY = "batch_size"
STRATEGY_KEY = "strategy"
MIXED_PRECISION_KEY = "mixed_precision"
GUARD_BAND_KEY = "guard_band"  # must equal the Transform's (pipeline/pipeline.py passes both)
SEED_KEY = "seed"
ESCAPE_COST_KEY = "escape_cost"
OVERKILL_COST_KEY = "overkill_cost"


def validation_probabilities(keras_model, dataset: tf.data.Dataset, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels, calibrated probabilities) of every die of a finite (features, label) dataset."""
    names = [t.name for t in keras_model.inputs]
    labels, probabilities = [], []
    for batch, label in dataset:
        logit = keras_model({n: tf.reshape(batch[n], [-1, 1]) for n in names}, training=False)
        probabilities.append(tf.sigmoid(tf.cast(logit, tf.float32) - shift).numpy().reshape(-1))
        labels.append(np.asarray(label).reshape(-1))
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(labels), np.concatenate(probabilities)


def serving_raw_feature_spec(tf_transform_output: tft.TFTransformOutput, columns) -> dict:
    """What `serving_default` parses: the model's raw inputs only, a missing test parsed as NaN.

    Ids, bins and the label are not needed to score a die.
    """
    spec = {}
    for key, value in tf_transform_output.raw_feature_spec().items():
        if key not in columns:
            continue
        if isinstance(value, tf.io.FixedLenFeature) and value.dtype == tf.float32:
            missing = np.full(value.shape, np.nan, np.float32).tolist()
            value = tf.io.FixedLenFeature(value.shape, tf.float32, default_value=missing)
        spec[key] = value
    return spec


class ServingModule(tf.Module):
    """The exported graph: parse tf.Examples -> TFT layer -> model -> calibrated probability.

    `serve_dense` is the same model behind the Transform re-expressed for one dense float32
    matrix of raw features (models/dense_signature.py): the input TF Lite and ONNX export. Its
    column order is saved with the model as `assets/dense_columns.json`; the test program the
    model was built from rides along as `assets/test_program.json` (the transform graph's asset).
    """

    def __init__(
        self,
        keras_model: keras.Model,
        tf_transform_output: tft.TFTransformOutput,
        shift: float,
        guard_band: float = features.DEFAULT_GUARD_BAND,
        op: operating_point.OperatingPoint | None = None,
    ):
        super().__init__()
        self.model = keras_model
        self.input_names = [t.name for t in keras_model.inputs]
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.shift = tf.constant(shift, tf.float32)
        self.transform_constants = dense_signature.TransformConstants.from_transform_output(
            tf_transform_output, guard_band
        )
        self.columns = self.transform_constants.columns
        self.raw_spec = serving_raw_feature_spec(tf_transform_output, self.columns)
        self.dense_transform = dense_signature.DenseTransform(self.transform_constants)
        self.dense_columns_asset = tf.saved_model.Asset(
            dense_signature.write_columns(self.columns, tempfile.mkdtemp(prefix="dense_columns"))
        )
        # The ink decision chosen on validation (models/operating_point.py): a second output of
        # serving_default, and `assets/operating_point.json` for every other client.
        self.threshold = tf.constant(op.threshold if op else 2.0, tf.float32)  # 2: never ink
        if op is not None:
            self.operating_point_asset = tf.saved_model.Asset(
                operating_point.write(op, tempfile.mkdtemp(prefix="operating_point"))
            )
        self.serve_dense = tf.function(
            self._serve_dense,
            input_signature=[tf.TensorSpec([None, len(self.columns)], tf.float32, name=dense_signature.DENSE_INPUT)],
        )

    def probability(self, transformed: dict) -> tf.Tensor:
        inputs = {n: tf.reshape(transformed[n], [-1, 1]) for n in self.input_names}
        logit = tf.cast(self.model(inputs, training=False), tf.float32)
        return tf.sigmoid(logit - self.shift)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, serialized):
        parsed = tf.io.parse_example(serialized, self.raw_spec)
        probability = self.probability(self.tft_layer(parsed))
        ink = tf.cast(probability >= self.threshold, tf.int64)
        return {features.PROBABILITY_KEY: probability, features.INK_KEY: ink}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(self, serialized):
        parsed = tf.io.parse_example(serialized, self.raw_spec)
        return self.tft_layer(parsed)

    def _serve_dense(self, dies):
        return {features.PROBABILITY_KEY: self.probability(self.dense_transform(dies))}


def float32_copy(keras_model: keras.Model, hp: keras_tuner.HyperParameters, spec: model.ModelInputs) -> keras.Model:
    """The trained network rebuilt under the float32 policy, holding the same weights.

    A model trained under mixed precision runs its layers in bfloat16/float16; exported as is, every
    signature would score in reduced precision and TF Lite would need Flex ops for the bf16 casts
    (TF issue 46380). All signatures serve this float32 copy, so TF Serving, TF Lite and ONNX
    compute the same numbers from the same trained weights.
    """
    keras.mixed_precision.set_global_policy("float32")
    copy = model.build_model(hp, spec)
    copy.set_weights(keras_model.get_weights())
    return copy


def export_serving_model(
    keras_model,
    tf_transform_output,
    shift: float,
    path: str,
    guard_band: float = features.DEFAULT_GUARD_BAND,
    op: operating_point.OperatingPoint | None = None,
) -> None:
    module = ServingModule(keras_model, tf_transform_output, shift, guard_band, op)
    worst = dense_signature.check_against_transform(
        module.dense_transform, module.tft_layer, module.raw_spec, module.transform_constants
    )
    logging.info("serve_dense transform matches the Transform graph (max diff %.3g)", worst)
    tf.saved_model.save(
        module,
        path,
        signatures={
            "serving_default": module.serve_examples.get_concrete_function(),
            "transform_features": module.transform_features.get_concrete_function(),
            dense_signature.DENSE_SIGNATURE: module.serve_dense.get_concrete_function(),
        },
    )


def _hyperparameters(fn_args) -> keras_tuner.HyperParameters:
    if fn_args.hyperparameters:
        return keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
    return model.get_hyperparameters()


# Called by the Trainer component.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Train the model on transformed examples and export it with the Transform graph inside."""
    config = fn_args.custom_config or {}
    # Seeded initialisation, dropout and shuffling: the same data and config train the same model.
    keras.utils.set_random_seed(int(config.get(SEED_KEY, 0)))
    epochs = int(config.get(EPOCHS_KEY, 10))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = training.make_strategy(config.get(STRATEGY_KEY, "mirrored"))
    batch_size = int(config.get(BATCH_SIZE_KEY, 256)) * strategy.num_replicas_in_sync

    finite_train = training.input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                                     batch_size, num_epochs=1, shuffle=False)
    rate = training.positive_rate(finite_train)
    weights = training.class_weights(rate)
    train = training.input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, batch_size)
    # The validation split, each die exactly once per evaluation (a finite, unshuffled pass).
    evaluation = training.input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, batch_size,
                                   num_epochs=1, shuffle=False)

    policy = training.mixed_precision_policy() if config.get(MIXED_PRECISION_KEY, True) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    hp, spec = _hyperparameters(fn_args), training.model_inputs_spec(tf_transform_output)
    try:
        with strategy.scope():
            keras_model = model.build_model(hp, spec)
        logging.info("Training on %d replica(s), policy %s, positive rate %.4f, class weights %s",
                     strategy.num_replicas_in_sync, policy, rate, weights)
        keras_model.fit(
            train,
            validation_data=evaluation,
            epochs=epochs,
            steps_per_epoch=max(1, fn_args.train_steps // epochs),
            class_weight=weights,
            callbacks=[
                keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=3,
                                              restore_best_weights=True),
                keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5, patience=2),
                keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
            ],
            verbose=2,
        )
        served = float32_copy(keras_model, hp, spec)
        shift = training.prior_shift(weights)
        # The ink threshold is chosen on validation, never on test (pipeline/pipeline.py).
        labels, probabilities = validation_probabilities(served, evaluation, shift)
        costs = float(config.get(ESCAPE_COST_KEY, 50.0)), float(config.get(OVERKILL_COST_KEY, 1.0))
        op = operating_point.fit(labels, probabilities, *costs)
        op = dataclasses.replace(op, extra={"split": "validation", "ink_rate": float(np.mean(op.ink(probabilities)))})
        logging.info("Operating point on %d validation dies: %s", len(labels), op.to_dict())
        export_serving_model(served, tf_transform_output, shift, fn_args.serving_model_dir,
                             float(config.get(GUARD_BAND_KEY, features.DEFAULT_GUARD_BAND)), op)
    finally:
        training.reset_policy()
