"""Trainer and Tuner entry points of the pattern pipeline, with transfer between products.

`run_fn` trains the pattern CNN (models/pattern_model.py) under the distribution strategy and
precision policy of models/training.py, from scratch or from `fn_args.base_model` (the serving
model directory of a pattern model trained on another product, or a `.keras` file), by the
custom_config `transfer` strategy:

- `scratch`: fresh weights (a base model, if given, is ignored).
- `feature_extraction`: the base model's backbone, frozen (its batch-norm statistics too); a new
  head trained alone. The cheapest, and the safest with a few dozen target wafers.
- `fine_tune`: the base model's backbone and head, every layer trained, with discriminative learning
  rates: the head at the base rate, each block below it `lr_decay` times the one above (the stem
  lowest), since early blocks hold generic edge/blob filters a new die grid should not overwrite.
  Keras 3 has no per-layer learning rate nor MultiOptimizer: `LayerScaledAdam` scales Adam's step
  per variable (scaling the gradient would not do it: Adam's step is invariant to gradient scale).
- `gradual_unfreeze`: the base model's weights; the head trained first with the backbone frozen,
  then one more block unfrozen per stage, top-down (ULMFiT), each stage with a linear warm-up and a
  cosine decay of the learning rate (the warm-up keeps the first large updates of a stage from
  wrecking the newly unfrozen block's features).

Exports: a SavedModel with `serving_default` (serialized tf.Examples, through the Transform graph),
`serve_map` (a raw float32 map tensor, the input for TF Lite and ONNX) and `transform_features`
(for TFMA), each returning eight class probabilities and the multi-hot decision at the per-class
thresholds chosen on validation; and the float32 Keras model at `KERAS_MODEL_PATH` inside it, which
a later run reads as its base model.
"""

from __future__ import annotations

import json
import os
import tempfile

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from data.patterns import LABEL_KEY, MAP_KEY, PATTERN_CLASSES
from models import pattern_metrics, pattern_model, pattern_preprocessing, training

# Trainer custom_config keys.
TRANSFER_KEY = "transfer"
EPOCHS_KEY = "epochs"  # the most passes over the training split (gradual_unfreeze: shared by its stages)
PATIENCE_KEY = "patience"
BATCH_SIZE_KEY = "batch_size"
STRATEGY_KEY = "strategy"
MIXED_PRECISION_KEY = "mixed_precision"
AUGMENT_KEY = "augment"
LOSS_KEY = "loss"  # "bce" or "focal"
LR_DECAY_KEY = "lr_decay"  # fine_tune: each block's learning rate over the one above it
SEED_KEY = "seed"

TRANSFER_STRATEGIES = ("scratch", "feature_extraction", "fine_tune", "gradual_unfreeze")
# The Keras model inside the serving model directory (assets.extra: TF Serving's place for extra files).
KERAS_MODEL_PATH = os.path.join("assets.extra", "pattern_model.keras")
THRESHOLDS_PATH = os.path.join("assets.extra", "pattern_thresholds.json")
BUDGET_FILE = "pattern_training.json"  # in the model_run directory
PROBABILITIES_KEY = "probabilities"
PATTERNS_KEY = "patterns"


def pattern_dataset(
    file_pattern,
    data_accessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    num_epochs: int | None = None,
    shuffle: bool = True,
    augment_seed: int | None = None,
) -> tf.data.Dataset:
    """(map, multi-hot label) batches of transformed examples; D4-augmented when `augment_seed` is set
    (the training input only: validation and serving see the maps as they are)."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=LABEL_KEY, num_epochs=num_epochs, shuffle=shuffle
        ),
        tf_transform_output.transformed_metadata.schema,
    ).map(lambda features, label: (features[pattern_preprocessing.MAP_XF], label))
    if augment_seed is None:
        return dataset
    augmented = pattern_preprocessing.augment(dataset.unbatch(), augment_seed)
    return augmented.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def count_examples(dataset: tf.data.Dataset) -> tuple[int, np.ndarray]:
    """Examples and positives per class in one pass over a finite dataset."""
    total, positives = 0, np.zeros(len(PATTERN_CLASSES), np.int64)
    for _, label in dataset:
        label = np.asarray(label)
        total += len(label)
        positives += label.sum(axis=0).astype(np.int64)
    if total == 0:
        raise ValueError("no training examples: the train split is empty")
    return total, positives


def predict_dataset(keras_model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) over a finite dataset."""
    labels, probabilities = [], []
    for maps, label in dataset:
        probabilities.append(tf.sigmoid(tf.cast(keras_model(maps, training=False), tf.float32)).numpy())
        labels.append(np.asarray(label))
    return np.concatenate(labels).astype(np.int64), np.concatenate(probabilities)


class LayerScaledAdam(keras.optimizers.Adam):
    """Adam whose step for each variable is the learning rate times that variable's scale.

    `scales` maps id(variable) to its factor (1.0 for any variable not named); resolved against the
    variable list when the optimizer is built, then looked up by Keras's own variable index."""

    def __init__(self, scales: dict[int, float], **kwargs):
        super().__init__(**kwargs)
        self._scales_by_id = scales
        self._lr_scales: list[float] = []

    def build(self, var_list):
        super().build(var_list)
        self._lr_scales = [self._scales_by_id.get(id(v), 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * scale)


def discriminative_scales(model: keras.Model, decay: float) -> dict[int, float]:
    """Head at 1; the top block at `decay`, the next `decay`**2, ..., the stem lowest."""
    scales = {}
    for depth, name in enumerate(reversed(pattern_model.backbone_blocks(model)), start=1):
        for variable in model.get_layer(name).trainable_variables:
            scales[id(variable)] = decay**depth
    return scales


def load_base_model(path: str) -> keras.Model:
    """A previously trained pattern model: a `.keras` file, or a serving model directory holding one."""
    candidates = [path] if path.endswith(".keras") else [os.path.join(path, KERAS_MODEL_PATH)]
    for candidate in candidates:
        if tf.io.gfile.exists(candidate):
            return keras.models.load_model(candidate, compile=False)
    raise FileNotFoundError(
        f"base_model {path!r}: no pattern Keras model at {candidates[0]!r} (is it a pattern Trainer's output?)"
    )


def transfer_model(base: keras.Model, hp: keras_tuner.HyperParameters, keep_head: bool) -> keras.Model:
    """A new model of the base's architecture holding its backbone weights (and head, if `keep_head`)."""
    for name, value in pattern_model.hyperparameters_of(base).items():
        hp.Fixed(name, value)
    model = pattern_model.build_pattern_model(hp, compile_model=False)
    names = pattern_model.backbone_blocks(model) + (pattern_model.head_layers(model) if keep_head else [])
    for name in names:
        model.get_layer(name).set_weights(base.get_layer(name).get_weights())
    return model


def set_frozen_blocks(model: keras.Model, trainable_blocks: int) -> None:
    """Freeze the backbone except its top `trainable_blocks` stages (0: the head trains alone)."""
    blocks = pattern_model.backbone_blocks(model)
    for i, name in enumerate(blocks):
        model.get_layer(name).trainable = i >= len(blocks) - trainable_blocks


def warmup_cosine(learning_rate: float, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up over the first tenth of the steps (at least one), then cosine decay to zero."""
    warmup = max(1, total_steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total_steps - warmup), warmup_target=learning_rate, warmup_steps=warmup
    )


class PatternServingModule(tf.Module):
    """parse tf.Examples -> TFT layer -> model -> sigmoid; or a raw map tensor -> model -> sigmoid.

    The raw-map signature skips the Transform graph: the Transform is a reshape of maps already 0/1
    (models/pattern_preprocessing.py), so the tensor the client sends is the transformed map."""

    def __init__(self, keras_model: keras.Model, tf_transform_output: tft.TFTransformOutput, thresholds):
        super().__init__()
        self.model = keras_model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.raw_spec = {MAP_KEY: tf_transform_output.raw_feature_spec()[MAP_KEY]}
        self.thresholds = tf.constant(np.asarray(thresholds, np.float32))

    def _outputs(self, maps):
        probabilities = tf.sigmoid(tf.cast(self.model(maps, training=False), tf.float32))
        patterns = tf.cast(probabilities >= self.thresholds, tf.int64)
        return {PROBABILITIES_KEY: probabilities, PATTERNS_KEY: patterns}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, serialized):
        parsed = tf.io.parse_example(serialized, self.raw_spec)
        return self._outputs(self.tft_layer(parsed)[pattern_preprocessing.MAP_XF])

    @tf.function(input_signature=[tf.TensorSpec([None, *pattern_preprocessing.MAP_SHAPE], tf.float32, name=MAP_KEY)])
    def serve_map(self, maps):
        return self._outputs(maps)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(self, serialized):
        return self.tft_layer(tf.io.parse_example(serialized, self.raw_spec))


def export(keras_model: keras.Model, tf_transform_output, thresholds: np.ndarray, model_dir: str) -> None:
    """The SavedModel with its three signatures, the Keras model and the thresholds beside it."""
    module = PatternServingModule(keras_model, tf_transform_output, thresholds)
    tf.saved_model.save(
        module,
        model_dir,
        signatures={
            "serving_default": module.serve_examples.get_concrete_function(),
            "serve_map": module.serve_map.get_concrete_function(),
            "transform_features": module.transform_features.get_concrete_function(),
        },
    )
    keras_path = os.path.join(model_dir, KERAS_MODEL_PATH)
    tf.io.gfile.makedirs(os.path.dirname(keras_path))
    # Keras writes .keras through a local file; copy it to the model directory (which may be gs://).
    with tempfile.TemporaryDirectory(prefix="pattern_keras") as scratch:
        local = os.path.join(scratch, "pattern_model.keras")
        keras_model.save(local)
        tf.io.gfile.copy(local, keras_path, overwrite=True)
    with tf.io.gfile.GFile(os.path.join(model_dir, THRESHOLDS_PATH), "w") as f:
        json.dump(dict(zip(PATTERN_CLASSES, map(float, thresholds), strict=True)), f, indent=2)


def _hyperparameters(fn_args) -> keras_tuner.HyperParameters:
    if fn_args.hyperparameters:
        return keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
    return pattern_model.get_hyperparameters()


def float32_copy(keras_model: keras.Model) -> keras.Model:
    """The trained network rebuilt under float32 with the same weights (see models/trainer.py)."""
    keras.mixed_precision.set_global_policy("float32")
    hp = keras_tuner.HyperParameters()
    for name, value in pattern_model.hyperparameters_of(keras_model).items():
        hp.Fixed(name, value)
    hp.Fixed("dropout", keras_model.get_layer(f"{pattern_model.HEAD_PREFIX}dropout").rate)
    copy = pattern_model.build_pattern_model(hp, compile_model=False)
    copy.set_weights(keras_model.get_weights())
    return copy


def train_pattern_model(
    transfer: str,
    hp: keras_tuner.HyperParameters,
    train: tf.data.Dataset,
    evaluation: tf.data.Dataset,
    steps: int,
    epochs: int,
    patience: int,
    loss: str = "bce",
    lr_decay: float = 0.3,
    base: keras.Model | None = None,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: list | tuple = (),
) -> tuple[keras.Model, list[dict]]:
    """Build the CNN (from scratch, or from `base` by the `transfer` strategy) and train it on
    `train` (repeating, `steps` per epoch), early-stopped on `evaluation`'s AUC; the model and the
    per-stage history. What run_fn trains, and what benchmarks/wafer_patterns.py compares."""
    strategy = strategy or tf.distribute.get_strategy()
    lr = hp.get("learning_rate")
    with strategy.scope():
        if transfer == "scratch":
            model = pattern_model.build_pattern_model(hp, compile_model=False)
        else:
            model = transfer_model(base, hp, keep_head=transfer != "feature_extraction")
    fit = dict(x=train, validation_data=evaluation, steps_per_epoch=steps, verbose=2)
    stages = []
    if transfer == "gradual_unfreeze":
        # The epoch budget shared between the stages: the head alone, then one more block each.
        n_stages = len(pattern_model.backbone_blocks(model)) + 1
        stage_epochs = max(1, epochs // n_stages)
        for unfrozen in range(n_stages):
            with strategy.scope():
                set_frozen_blocks(model, unfrozen)
                optimizer = keras.optimizers.Adam(warmup_cosine(lr, stage_epochs * steps))
                pattern_model.compile_pattern_model(model, optimizer, loss)
            history = model.fit(epochs=stage_epochs, callbacks=list(callbacks), **fit)
            stages.append({"trainable_blocks": unfrozen, "val_auc": history.history["val_auc"]})
        return model, stages
    with strategy.scope():
        if transfer == "feature_extraction":
            set_frozen_blocks(model, 0)
            optimizer = keras.optimizers.Adam(lr)
        elif transfer == "fine_tune":
            optimizer = LayerScaledAdam(
                discriminative_scales(model, lr_decay), learning_rate=warmup_cosine(lr, epochs * steps)
            )
        else:
            optimizer = keras.optimizers.Adam(warmup_cosine(lr, epochs * steps))
        pattern_model.compile_pattern_model(model, optimizer, loss)
    stopper = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience, restore_best_weights=True)
    history = model.fit(epochs=epochs, callbacks=[stopper, *callbacks], **fit)
    stages.append({"trainable_blocks": "all" if transfer != "feature_extraction" else 0, **history.history})
    return model, stages


# Called by the Trainer component.
def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Train the pattern CNN by the `transfer` strategy and export it (see the module docstring)."""
    config = fn_args.custom_config or {}
    transfer = config.get(TRANSFER_KEY, "scratch")
    if transfer not in TRANSFER_STRATEGIES:
        raise ValueError(f"custom_config transfer={transfer!r}; known: {', '.join(TRANSFER_STRATEGIES)}")
    if transfer != "scratch" and not fn_args.base_model:
        raise ValueError(f"custom_config transfer={transfer!r} needs the Trainer's base_model input")
    seed = int(config.get(SEED_KEY, 0))
    keras.utils.set_random_seed(seed)
    epochs, patience = int(config.get(EPOCHS_KEY, 30)), int(config.get(PATIENCE_KEY, 5))
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = training.make_strategy(config.get(STRATEGY_KEY, "mirrored"))
    chief = training.is_chief(os.environ.get("TF_CONFIG"))
    scratch = None if chief else tempfile.mkdtemp(prefix="non_chief_worker")
    model_dir = fn_args.serving_model_dir if chief else os.path.join(scratch, "model")
    run_dir = fn_args.model_run_dir if chief else scratch
    batch_size = int(config.get(BATCH_SIZE_KEY, 32)) * strategy.num_replicas_in_sync

    def data(files, **kwargs):
        return pattern_dataset(files, fn_args.data_accessor, tf_transform_output, batch_size, **kwargs)

    examples, positives = count_examples(data(fn_args.train_files, num_epochs=1, shuffle=False))
    steps = training.steps_per_epoch(examples, batch_size)
    train = data(fn_args.train_files, augment_seed=seed if config.get(AUGMENT_KEY, True) else None)
    evaluation = data(fn_args.eval_files, num_epochs=1, shuffle=False)
    policy = training.mixed_precision_policy() if config.get(MIXED_PRECISION_KEY, True) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    hp = _hyperparameters(fn_args)
    callbacks = [keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)]
    try:
        base = None
        if transfer != "scratch":
            with strategy.scope():
                base = load_base_model(fn_args.base_model)
        logging.info(
            "Pattern model, transfer %s, %d replica(s), policy %s: %d maps (per class %s), %d steps per epoch",
            transfer,
            strategy.num_replicas_in_sync,
            policy,
            examples,
            positives.tolist(),
            steps,
        )
        model, stages = train_pattern_model(
            transfer,
            hp,
            train,
            evaluation,
            steps,
            epochs,
            patience,
            loss=config.get(LOSS_KEY, "bce"),
            lr_decay=float(config.get(LR_DECAY_KEY, 0.3)),
            base=base,
            strategy=strategy,
            callbacks=callbacks,
        )
        del base
        served = float32_copy(model)
        labels, probabilities = predict_dataset(served, evaluation)
        # Per-class thresholds on validation, never on test.
        thresholds = pattern_metrics.fit_thresholds(labels, probabilities)
        scores = pattern_metrics.report(labels, probabilities, thresholds)
        logging.info("Validation at the chosen thresholds: %s", scores)
        summary = {
            "transfer": transfer,
            "base_model": fn_args.base_model,
            "architecture": pattern_model.hyperparameters_of(served),
            "train_examples": examples,
            "train_positives": dict(zip(PATTERN_CLASSES, positives.tolist(), strict=True)),
            "batch_size": batch_size,
            "steps_per_epoch": steps,
            "stages": [{k: v for k, v in s.items() if k in ("trainable_blocks", "val_auc")} for s in stages],
            "thresholds": thresholds.tolist(),
            "validation": scores,
        }
        with tf.io.gfile.GFile(os.path.join(run_dir, BUDGET_FILE), "w") as f:
            json.dump(summary, f, indent=2)
        export(served, tf_transform_output, thresholds, model_dir)
    finally:
        training.reset_policy()
        if scratch:
            tf.io.gfile.rmtree(scratch)


# Called by the Tuner component.
def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """Bayesian search over width, depth and learning rate on validation AUC; each trial trains
    `epochs` full passes over the (augmented) training split, as the Trainer counts them."""
    config = fn_args.custom_config or {}
    seed = int(config.get(SEED_KEY, 7))
    keras.utils.set_random_seed(seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    batch_size = int(config.get(BATCH_SIZE_KEY, 32))

    def data(files, **kwargs):
        return pattern_dataset(files, fn_args.data_accessor, tf_transform_output, batch_size, **kwargs)

    examples, _ = count_examples(data(fn_args.train_files, num_epochs=1, shuffle=False))
    tuner = keras_tuner.BayesianOptimization(
        hypermodel=pattern_model.build_pattern_model,
        objective=keras_tuner.Objective("val_auc", direction="max"),
        max_trials=int(config.get("max_trials", 3)),
        hyperparameters=pattern_model.get_hyperparameters(),
        seed=seed,
        directory=fn_args.working_dir,
        project_name="pattern_tuning",
        overwrite=True,
    )
    return tfx.components.TunerFnResult(
        tuner=tuner,
        fit_kwargs={
            "x": data(fn_args.train_files, augment_seed=seed),
            "validation_data": data(fn_args.eval_files, num_epochs=1, shuffle=False),
            "epochs": int(config.get(EPOCHS_KEY, 2)),
            "steps_per_epoch": training.steps_per_epoch(examples, batch_size),
        },
    )
