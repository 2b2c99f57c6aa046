"""Grad-CAM (Selvaraju et al., 2017) for the pattern CNN: where on the wafer the predicted class's
evidence lies, as a MAP_SIZE x MAP_SIZE numpy heat map for the run report.

The heat map is taken at the output of the last backbone block (the last convolutional feature map,
4x4 for the default depth 3 at 32x32): each channel weighted by the mean gradient of the class logit
over it, summed, passed through ReLU (only evidence for the class), upsampled bilinearly to the map's
size and scaled to [0, 1].
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from data.patterns import MAP_SIZE
from models import pattern_model


def gradcam(model: keras.Model, wafer_map: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """(heat map (MAP_SIZE, MAP_SIZE) in [0, 1], class index) for one (H, W, C) map.

    `class_index`: the class to explain; by default the predicted one (the highest logit, which is
    also the highest probability). An all-zero map means no evidence for the class anywhere."""
    last = pattern_model.backbone_blocks(model)[-1]
    # The top level of a pattern model is a chain (radius, stem, blocks, head): run it layer by layer
    # to keep the last block's output (a nested block's own `.output` is not on this path). Only the
    # layers after that block go on the tape: the gradient wanted is the class logit's with respect
    # to the block's output, and nothing before it is needed. (Recording the backbone too made the
    # tape differentiate its convolutions for nothing, and oneDNN's filter gradient of the 1x1
    # stride-2 shortcut for one 32x32x8 map crashes the process on CPUs with AMX: TensorFlow 2.21.)
    layers = model.layers[1:]
    cut = [layer.name for layer in layers].index(last) + 1
    features = tf.convert_to_tensor(np.asarray(wafer_map, np.float32)[None])
    for layer in layers[:cut]:
        features = layer(features, training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)  # a tensor, not a variable: recorded even where the weights are frozen
        out = features
        for layer in layers[cut:]:
            out = layer(out, training=False)
        logits = tf.cast(out, tf.float32)
        if class_index is None:
            class_index = int(tf.argmax(logits[0]))
        score = logits[0, class_index]
    grads = tf.cast(tape.gradient(score, features), tf.float32)
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, (MAP_SIZE, MAP_SIZE), method="bilinear")[0, ..., 0].numpy()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).astype(np.float32), class_index
