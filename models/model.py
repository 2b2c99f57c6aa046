"""The Keras 3 model: a functional MLP over transformed die features, returning a logit.

Pure functions, no I/O. The input width follows the test program: `ModelInputs` names the
Transform's dense outputs (one robust z and one margin per test, the per-die summaries, context,
coordinates) and its categorical outputs with their sizes, so `build_model(get_hyperparameters(),
ModelInputs(dense=("t1_xf", "t2_xf"), categorical={"slot_xf": 5}))` is testable alone.
"""

from __future__ import annotations

import dataclasses

import keras
import keras_tuner


@dataclasses.dataclass(frozen=True)
class HyperParameters:
    """Defaults, and the search space the Tuner explores around them."""

    units: int = 128  # first hidden layer; each next layer halves it (128-64-32)
    depth: int = 3
    dropout: float = 0.2
    learning_rate: float = 1e-3

    UNITS_CHOICES = (64, 128, 256)
    DEPTH_RANGE = (2, 4)
    DROPOUT_RANGE = (0.0, 0.4)
    LEARNING_RATE_RANGE = (1e-4, 1e-2)


def get_hyperparameters() -> keras_tuner.HyperParameters:
    """One search space for the Tuner; its defaults are what the Trainer uses without a Tuner."""
    d = HyperParameters()
    hp = keras_tuner.HyperParameters()
    hp.Choice("units", list(d.UNITS_CHOICES), default=d.units)
    hp.Int("depth", *d.DEPTH_RANGE, default=d.depth)
    hp.Float("dropout", *d.DROPOUT_RANGE, step=0.1, default=d.dropout)
    hp.Float("learning_rate", *d.LEARNING_RATE_RANGE, sampling="log", default=d.learning_rate)
    return hp


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """The Transform's outputs the model reads: dense float features, and categorical ids with
    their number of values (vocabulary size plus out-of-vocabulary buckets)."""

    dense: tuple[str, ...]
    categorical: dict[str, int]


def model_inputs(spec: ModelInputs) -> dict[str, keras.KerasTensor]:
    inputs = {name: keras.Input(shape=(1,), name=name, dtype="float32") for name in spec.dense}
    inputs.update({name: keras.Input(shape=(1,), name=name, dtype="int64") for name in spec.categorical})
    return inputs


def build_model(hp: keras_tuner.HyperParameters, spec: ModelInputs, output_bias: float = 0.0) -> keras.Model:
    """Dense MLP with batch norm and dropout; one float32 logit out (even under mixed precision).

    `output_bias`: the logit's initial bias. The Trainer and the Tuner pass log(p / (1 - p)) of the
    training split's fail rate, so the untrained network already predicts the base rate: with 3%
    positives and no class weights, a head starting at p = 0.5 spends its first hundreds of steps
    only learning the base rate (the Keras guide on imbalanced classification does the same)."""
    inputs = model_inputs(spec)
    dense = keras.layers.Concatenate(name="dense_features")([inputs[n] for n in spec.dense])
    one_hots = [
        keras.layers.CategoryEncoding(num_tokens=size, output_mode="one_hot", name=f"{name}_onehot")(inputs[name])
        for name, size in spec.categorical.items()
    ]
    x = keras.layers.Concatenate(name="all_features")([dense, *one_hots])
    units = hp.get("units")
    for i in range(hp.get("depth")):
        x = keras.layers.Dense(max(units // (2**i), 8), use_bias=False, name=f"dense_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu_{i}")(x)
        x = keras.layers.Dropout(hp.get("dropout"), name=f"dropout_{i}")(x)
    # float32 head: under a mixed policy the logit and loss stay in full precision.
    logit = keras.layers.Dense(
        1, dtype="float32", name="logit", bias_initializer=keras.initializers.Constant(output_bias)
    )(x)
    model = keras.Model(inputs=inputs, outputs=logit, name="ft_fail_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=hp.get("learning_rate")),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.AUC(name="auc", from_logits=True),
            keras.metrics.AUC(name="pr_auc", curve="PR", from_logits=True),
        ],
    )
    return model
