"""Shared by the Tuner and the Trainer: datasets, class weights, precision policy, strategy."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from models import features
from models.model import ModelInputs


def input_fn(file_pattern, data_accessor, tf_transform_output: tft.TFTransformOutput, batch_size: int,
             num_epochs: int | None = None, shuffle: bool = True) -> tf.data.Dataset:
    """Transformed examples as (features, label) batches, repeating unless `num_epochs` is set."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size,
            label_key=features.LABEL_KEY,
            num_epochs=num_epochs,
            shuffle=shuffle,
        ),
        tf_transform_output.transformed_metadata.schema,
    )


def positive_rate(dataset: tf.data.Dataset) -> float:
    """Share of positive labels in one pass over a finite (features, label) dataset."""
    positives = total = 0
    for _, label in dataset:
        label = np.asarray(label)
        positives += int(label.sum())
        total += label.size
    if total == 0:
        raise ValueError("no training examples: cannot compute the class balance")
    return positives / total


def class_weights(rate: float) -> dict[int, float]:
    """Balanced class weights: each class contributes half of the loss."""
    rate = min(max(rate, 1e-6), 1 - 1e-6)
    return {0: 0.5 / (1.0 - rate), 1: 0.5 / rate}


def prior_shift(weights: dict[int, float]) -> float:
    """Logit offset that undoes class weighting: p = sigmoid(logit - shift) is calibrated again.

    Weighting positives by w1 and negatives by w0 multiplies the fitted odds by w1 / w0
    (King & Zeng, 2001), so subtracting log(w1 / w0) from the logit restores the true odds.
    """
    return math.log(weights[1] / weights[0])


def mixed_precision_policy() -> str:
    """float16 where a GPU runs the math, bfloat16 on CPU (no loss scaling needed)."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def make_strategy(name: str = "mirrored") -> tf.distribute.Strategy:
    """The Trainer's distribution strategy: `mirrored` (one host, all local devices) or
    `multi_worker_mirrored` (several hosts, configured through TF_CONFIG by the orchestrator)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}")


def model_inputs_spec(tf_transform_output: tft.TFTransformOutput) -> ModelInputs:
    """What the model reads, from the Transform's outputs: its width follows the test program."""
    keys = [k for k in tf_transform_output.transformed_feature_spec() if k != features.LABEL_KEY]
    dense, categorical = features.model_input_names(keys)
    sizes = {
        features.transformed_name(features.SLOT_FEATURE): tf_transform_output.vocabulary_size_by_name(
            features.vocabulary_name(features.SLOT_FEATURE)
        )
        + features.NUM_OOV_BUCKETS,
        features.transformed_name(features.ZONE): features.N_ZONES,
    }
    return ModelInputs(dense=tuple(dense), categorical={k: sizes[k] for k in categorical})


def reset_policy() -> None:
    keras.mixed_precision.set_global_policy("float32")
