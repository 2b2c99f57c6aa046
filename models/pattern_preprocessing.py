"""Transform for wafer maps, and the training-only augmentation by the wafer's symmetries.

The maps arrive already 0/1 in physical coordinates (data/patterns.py), so the Transform only gives
the flat float list its image shape, turns the multi-hot label into floats for the loss and keeps
the product for slicing (the Evaluator's per-product metrics). No statistics are computed: a map
needs no scaling, and the serving graph stays a reshape.

Augmentation: the dihedral group D4 of the square (the four rotations by 90 degrees, each with or
without a mirror flip), applied to the training input only. Why these keep a pattern's meaning: the
WM-811K classes are defined by radial and angular structure relative to the wafer centre (a disc at
the centre, a ring at the edge, a blob somewhere near the edge, a line anywhere), never by absolute
orientation, and a rotation about the centre or a mirror through it maps the disc of the wafer onto
itself and a centre blob to a centre blob, an edge ring to an edge ring, a scratch to a scratch. On a
square grid centred on the wafer, these eight maps are exact permutations of pixels: no interpolation,
no pixel invented or lost, the on-wafer channel moves with the fail channel. Nothing else is used:
brightness, contrast, colour, crops or scaling would change what a pixel means (a die's pass/fail,
or where the wafer's edge is). What D4 loses: orientation relative to the notch. A fab whose scratches
always run one way (one handler's arm), or whose edge-local fails sit at the notch, carries that in the
absolute direction, which the augmented model is taught to ignore. Where that matters, train without
augmentation (Trainer custom_config `augment: false`).
"""

from __future__ import annotations

import tensorflow as tf

from data.patterns import LABEL_KEY, MAP_CHANNELS, MAP_KEY, MAP_SIZE, PRODUCT_KEY

MAP_XF = "wafer_map_xf"  # the transformed map: float32 (MAP_SIZE, MAP_SIZE, channels)
MAP_SHAPE = (MAP_SIZE, MAP_SIZE, len(MAP_CHANNELS))


# Called by the Transform component.
def preprocessing_fn(inputs: dict) -> dict:
    """Flat map -> (MAP_SIZE, MAP_SIZE, channels) float32; labels as float multi-hot; product kept."""
    return {
        MAP_XF: tf.reshape(tf.cast(inputs[MAP_KEY], tf.float32), (-1, *MAP_SHAPE)),
        LABEL_KEY: tf.cast(inputs[LABEL_KEY], tf.float32),
        PRODUCT_KEY: inputs[PRODUCT_KEY],
    }


def dihedral(image: tf.Tensor, k: int | tf.Tensor, flip: bool | tf.Tensor) -> tf.Tensor:
    """One element of D4 on an (H, W, C) image: rotate by k * 90 degrees, then mirror left-right."""
    image = tf.image.rot90(image, k)
    return tf.cond(tf.cast(flip, tf.bool), lambda: tf.image.flip_left_right(image), lambda: image)


def random_dihedral(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A uniformly drawn element of D4, from a stateless seed (the same seed, the same map)."""
    k = tf.random.stateless_uniform([], seed, 0, 4, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], seed + 1, 0, 2, dtype=tf.int32)
    return dihedral(image, k, flip)


def augment(dataset: tf.data.Dataset, seed: int = 0) -> tf.data.Dataset:
    """Each (map, label) of an unbatched dataset under a random D4 element; labels unchanged."""
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip((dataset, seeds)).map(
        lambda pair, s: (random_dihedral(pair[0], s), pair[1]), num_parallel_calls=tf.data.AUTOTUNE
    )
