"""tf.Transform preprocessing for die examples."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from models import features


def _as_dense_nan(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """A [batch] float tensor with NaN where the die has no value (test not measured)."""
    if isinstance(x, tf.SparseTensor):
        batch = x.dense_shape[0]
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32), [batch, 1]),
            default_value=float("nan"),
        )
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=float("nan"), shape=[None, 1])
    return tf.reshape(tf.cast(x, tf.float32), [-1])


def _z_score_ignoring_missing(x: tf.Tensor) -> tf.Tensor:
    """Z-score with mean/variance over present values only; missing values become 0 (the mean).

    tft.scale_to_z_score on a SparseTensor computes its statistics over the present values, so a
    NaN (an unmeasured test) neither poisons the mean nor pretends to be a measured zero.
    """
    present = tf.logical_not(tf.math.is_nan(x))
    indices = tf.where(present)
    sparse = tf.SparseTensor(
        tf.concat([indices, tf.zeros_like(indices)], axis=1),
        tf.boolean_mask(x, present),
        tf.stack([tf.shape(x, out_type=tf.int64)[0], 1]),
    )
    scaled = tft.scale_to_z_score(sparse)
    return tf.reshape(tf.sparse.to_dense(scaled, default_value=0.0), [-1])


# Called by the Transform component (and reused by the serving graph through the TFT layer).
def preprocessing_fn(inputs: dict) -> dict:
    """Raw die features -> model features, plus the label."""
    outputs = {}
    n_missing = tf.zeros_like(_as_dense_nan(inputs[features.PARAMETRIC[0]]))
    for key in features.PARAMETRIC:
        value = _as_dense_nan(inputs[key])
        n_missing += tf.cast(tf.math.is_nan(value), tf.float32)
        outputs[features.transformed_name(key)] = _z_score_ignoring_missing(value)
    outputs[features.transformed_name(features.N_MISSING)] = n_missing

    for key in features.CONTEXT + features.COORDINATES:
        outputs[features.transformed_name(key)] = _z_score_ignoring_missing(_as_dense_nan(inputs[key]))

    geometry = features.GEOMETRY
    x_mm = _as_dense_nan(inputs["x"]) * geometry.die_width_mm
    y_mm = _as_dense_nan(inputs["y"]) * geometry.die_height_mm
    radius = tf.sqrt(x_mm * x_mm + y_mm * y_mm) / geometry.usable_radius_mm
    outputs[features.transformed_name(features.RADIUS)] = radius
    outputs[features.transformed_name(features.ZONE)] = tf.cast(
        tf.raw_ops.Bucketize(input=radius, boundaries=list(features.ZONE_BOUNDARIES)), tf.int64
    )

    for key in features.CATEGORICAL:
        as_string = tf.strings.as_string(tf.reshape(inputs[key], [-1])) if inputs[key].dtype.is_integer \
            else tf.reshape(inputs[key], [-1])
        outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            as_string,
            num_oov_buckets=features.NUM_OOV_BUCKETS,
            vocab_filename=features.vocabulary_name(key),
        )

    if features.LABEL_KEY in inputs:
        outputs[features.LABEL_KEY] = tf.reshape(tf.cast(inputs[features.LABEL_KEY], tf.int64), [-1])
    return outputs
