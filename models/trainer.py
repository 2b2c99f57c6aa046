"""Trainer entry point: train under MirroredStrategy and mixed precision, export for serving."""

from __future__ import annotations

import dataclasses
import json
import logging as pylogging
import os
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
EPOCHS_KEY = "epochs"  # the most passes over the training split; early stopping usually ends sooner
PATIENCE_KEY = "patience"  # epochs without a better validation AUC before stopping
BATCH_SIZE_KEY = "batch_size"
STRATEGY_KEY = "strategy"
MIXED_PRECISION_KEY = "mixed_precision"
GUARD_BAND_KEY = "guard_band"  # must equal the Transform's (pipeline/pipeline.py passes both)
SEED_KEY = "seed"
ESCAPE_COST_KEY = "escape_cost"
OVERKILL_COST_KEY = "overkill_cost"


def validation_logits(keras_model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(labels, raw logits) of every die of a finite (features, label) dataset."""
    names = [t.name for t in keras_model.inputs]
    labels, logits = [], []
    for batch, label in dataset:
        logit = keras_model({n: tf.reshape(batch[n], [-1, 1]) for n in names}, training=False)
        logits.append(tf.cast(logit, tf.float32).numpy().reshape(-1))
        labels.append(np.asarray(label).reshape(-1))
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(labels), np.concatenate(logits)


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
    """The exported graph: parse tf.Examples -> TFT layer -> model -> calibrated probability
    (`sigmoid(scale * logit + bias)`, the Platt calibration fitted on validation).

    `serve_dense` is the same model behind the Transform re-expressed for one dense float32
    matrix of raw features (models/dense_signature.py): the input TF Lite and ONNX export. Its
    column order is saved with the model as `assets/dense_columns.json`; the test program the
    model was built from rides along as `assets/test_program.json` (the transform graph's asset).
    """

    def __init__(
        self,
        keras_model: keras.Model,
        tf_transform_output: tft.TFTransformOutput,
        calibration: training.Calibration,
        guard_band: float = features.DEFAULT_GUARD_BAND,
        op: operating_point.OperatingPoint | None = None,
        *,
        assets_dir: str,
    ):
        """`assets_dir`: where the asset files are written before `tf.saved_model.save` copies them
        into the SavedModel (export_serving_model passes a directory it deletes after saving)."""
        super().__init__()
        self.model = keras_model
        self.input_names = [t.name for t in keras_model.inputs]
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.calibration_scale = tf.constant(calibration.scale, tf.float32)
        self.calibration_bias = tf.constant(calibration.bias, tf.float32)
        self.transform_constants = dense_signature.TransformConstants.from_transform_output(
            tf_transform_output, guard_band
        )
        self.columns = self.transform_constants.columns
        self.raw_spec = serving_raw_feature_spec(tf_transform_output, self.columns)
        self.dense_transform = dense_signature.DenseTransform(self.transform_constants)
        self.dense_columns_asset = tf.saved_model.Asset(
            dense_signature.write_columns(self.columns, _subdirectory(assets_dir, "dense_columns"))
        )
        # The ink decision chosen on validation (models/operating_point.py): a second output of
        # serving_default, and `assets/operating_point.json` for every other client.
        self.threshold = tf.constant(op.threshold if op else 2.0, tf.float32)  # 2: never ink
        if op is not None:
            self.operating_point_asset = tf.saved_model.Asset(
                operating_point.write(op, _subdirectory(assets_dir, "operating_point"))
            )
        self.serve_dense = tf.function(
            self._serve_dense,
            input_signature=[tf.TensorSpec([None, len(self.columns)], tf.float32, name=dense_signature.DENSE_INPUT)],
        )

    def probability(self, transformed: dict) -> tf.Tensor:
        inputs = {n: tf.reshape(transformed[n], [-1, 1]) for n in self.input_names}
        logit = tf.cast(self.model(inputs, training=False), tf.float32)
        return tf.sigmoid(self.calibration_scale * logit + self.calibration_bias)

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
    calibration: training.Calibration,
    path: str,
    guard_band: float = features.DEFAULT_GUARD_BAND,
    op: operating_point.OperatingPoint | None = None,
) -> None:
    # The asset files only need to live until the save has copied them (they were left in /tmp).
    with tempfile.TemporaryDirectory(prefix="serving_assets") as assets_dir:
        module = ServingModule(keras_model, tf_transform_output, calibration, guard_band, op, assets_dir=assets_dir)
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


def _subdirectory(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    os.makedirs(path, exist_ok=True)
    return path


def _hyperparameters(fn_args) -> keras_tuner.HyperParameters:
    if fn_args.hyperparameters:
        return keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
    return model.get_hyperparameters()


class EpochProgress(keras.callbacks.Callback):
    """One record per epoch on the `waferflow.progress` logger, with `step`, `total` and `unit`
    attributes: `waferflow run` shows them as a progress bar or a line per epoch (pipeline/console.py).
    The logger stays below INFO, so silent, unless a console listens."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        pylogging.getLogger("waferflow.progress").info(
            "Trainer epoch %d/%d: loss %.4f, val_auc %.4f",
            epoch + 1,
            self.epochs,
            logs.get("loss", float("nan")),
            logs.get("val_auc", float("nan")),
            extra={"step": epoch + 1, "total": self.epochs, "unit": "epoch"},
        )


# Called by the Trainer component.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Train the model on transformed examples and export it with the Transform graph inside.

    The budget follows the data: an epoch is one pass over the training split, at most
    `epochs` of them, stopped early when validation AUC has not improved for `patience` epochs
    (the best epoch's weights are kept). Validation also schedules the learning rate, fits the
    calibration and chooses the ink threshold; the test split is never read here."""
    config = fn_args.custom_config or {}
    # Seeded initialisation, dropout and shuffling: the same data and config train the same model.
    keras.utils.set_random_seed(int(config.get(SEED_KEY, 0)))
    max_epochs = int(config.get(EPOCHS_KEY, 30))
    patience = int(config.get(PATIENCE_KEY, 3))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy_name = config.get(STRATEGY_KEY, "mirrored")
    strategy = training.make_strategy(strategy_name)
    # multi_worker_mirrored: every worker trains and saves, but only the chief's files are kept
    # (training.is_chief); the others write to a scratch directory deleted at the end.
    chief = training.is_chief(os.environ.get("TF_CONFIG"))
    scratch = None if chief else tempfile.mkdtemp(prefix="non_chief_worker")
    model_dir = fn_args.serving_model_dir if chief else os.path.join(scratch, "model")
    run_dir = fn_args.model_run_dir if chief else scratch
    batch_size = int(config.get(BATCH_SIZE_KEY, 256)) * strategy.num_replicas_in_sync

    clock = training.Stopwatch()
    memory_mib = int(config.get(training.TRAIN_MEMORY_KEY, training.DEFAULT_TRAIN_MEMORY_MIB))
    with clock.phase("read_train_split"):
        # Multi-worker training streams: each worker reads its own shard of the files.
        split = training.train_split(
            fn_args.train_files,
            fn_args.data_accessor,
            tf_transform_output,
            batch_size,
            seed=int(config.get(SEED_KEY, 0)),
            max_in_memory_bytes=memory_mib * 2**20 if strategy_name == "mirrored" else 0,
        )
    counts, steps, train = split.counts, split.steps, split.dataset
    # The validation split, each die exactly once per evaluation, held in memory after the first.
    evaluation = training.validation_dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, batch_size)

    policy = training.mixed_precision_policy() if config.get(MIXED_PRECISION_KEY, True) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    hp, spec = _hyperparameters(fn_args), training.model_inputs_spec(tf_transform_output)
    try:
        with strategy.scope(), clock.phase("build"):
            keras_model = model.build_model(hp, spec, output_bias=counts.base_logit)
        logging.info(
            "Training on %d replica(s), policy %s: %d dies (%d fails), %d steps per epoch, at most %d epochs",
            strategy.num_replicas_in_sync,
            policy,
            counts.examples,
            counts.positives,
            steps,
            max_epochs,
        )
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=patience, restore_best_weights=True
        )
        with clock.phase("fit"):
            history = keras_model.fit(
                train,
                validation_data=evaluation,
                epochs=max_epochs,
                steps_per_epoch=steps,
                callbacks=[
                    stopper,
                    keras.callbacks.ReduceLROnPlateau(
                        monitor="val_auc", mode="max", factor=0.5, patience=max(1, patience - 1)
                    ),
                    keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
                    EpochProgress(max_epochs),
                ],
                verbose=2,
            )
        with clock.phase("calibrate"):
            served = float32_copy(keras_model, hp, spec)
            labels, logits = validation_logits(served, evaluation)
            calibration = training.fit_calibration(labels, logits)
            probabilities = calibration.apply(logits)
            # The ink threshold is chosen on validation, never on test (pipeline/pipeline.py).
            costs = float(config.get(ESCAPE_COST_KEY, 50.0)), float(config.get(OVERKILL_COST_KEY, 1.0))
            op = operating_point.fit(labels, probabilities, *costs)
            op = dataclasses.replace(
                op, extra={"split": "validation", "ink_rate": float(np.mean(op.ink(probabilities)))}
            )
        logging.info(
            "Calibration %s, operating point on %d validation dies: %s",
            calibration.to_dict(),
            len(labels),
            op.to_dict(),
        )
        with clock.phase("export"):
            export_serving_model(
                served,
                tf_transform_output,
                calibration,
                model_dir,
                float(config.get(GUARD_BAND_KEY, features.DEFAULT_GUARD_BAND)),
                op,
            )
        val_auc = history.history.get("val_auc", [])
        budget = {
            "train_examples": counts.examples,
            "train_in_memory": split.in_memory,
            "train_bytes_in_memory": split.bytes_held,
            "train_positives": counts.positives,
            "batch_size": batch_size,
            "steps_per_epoch": steps,
            "max_epochs": max_epochs,
            "epochs_run": len(val_auc),
            "best_epoch": int(np.argmax(val_auc)) + 1 if val_auc else 0,
            "best_val_auc": float(np.max(val_auc)) if val_auc else float("nan"),
            "validation_examples": int(len(labels)),
            "calibration": calibration.to_dict(),
            "validation_mean_prediction_over_mean_label": float(probabilities.mean() / max(labels.mean(), 1e-12)),
            # Wall seconds of run_fn's phases (fit includes the validation pass after each epoch).
            "seconds": {name: round(value, 2) for name, value in clock.seconds.items()},
        }
        with tf.io.gfile.GFile(os.path.join(run_dir, training.BUDGET_FILE), "w") as f:
            json.dump(budget, f, indent=2)
    finally:
        training.reset_policy()
        if scratch:
            tf.io.gfile.rmtree(scratch)
