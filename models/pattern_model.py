"""The wafer-map pattern CNN (Keras 3): a backbone of named blocks and a multi-label head.

Pure functions, no I/O. Two backbones, the same head:

- `resnet`: a stem convolution, then `depth` residual blocks (two 3x3 convolutions with batch norm
  and a skip), each after the first halving the resolution and doubling the width.
- `mobilenet`: the same stages built from depthwise-separable convolutions (MobileNet v1 style).

Each backbone stage is its own nested `keras.Model` named `stem`, `block_0`, ... `block_{depth-1}`;
the head is the layers whose names start with `head_` (pooling, dropout, the float32 `head_logits`
Dense over the eight PATTERN_CLASSES). Transfer strategies freeze and unfreeze by these names
(`backbone_blocks`, `head_layers`). The model outputs one logit per class: a sigmoid of each is
that class's probability (multi-label: a wafer may carry two patterns; none above threshold = "none").

Default: `resnet`, width 16, depth 3, binary cross-entropy. Measured by
`PYTHONPATH=$PWD .venv/bin/python benchmarks/pattern_model_choice.py` (2,000 train / 500 validation /
1,000 test synthetic maps of one product, D4 augmentation, 15 epochs, batch 32, per-class thresholds
chosen on validation; float32 on the shared 2-core CPU, one seed, no intervals):

    model          params  macro-F1  lowest recall  p50 / p99 ms per map  maps/s (batch 256)
    resnet/bce     78,584     0.949     0.74 (Loc)          1.38 / 1.99          3,135
    mobilenet/bce  12,392     0.934     0.77 (Loc)          1.29 / 1.83          4,258
    resnet/focal   78,584     0.935     0.71 (Loc)          1.47 / 2.18          2,968

The ResNet wins on macro-F1 by 1.5 points (Edge-Loc recall 0.95 against 0.91, Random 0.99 against
0.95) at the same single-map latency, far under the 5 ms target either way; the MobileNet's
6x fewer parameters buy nothing here (0.3 MB against 0.05 MB). Focal loss (gamma 2) scored lower than
plain binary cross-entropy: per-class thresholds chosen on validation already handle the imbalance.
Differences of a point are within one seed's noise on 1,000 test maps: the choice is a lean, not a proof.
"""

from __future__ import annotations

import dataclasses

import keras
import keras_tuner

from data.patterns import MAP_CHANNELS, MAP_SIZE, PATTERN_CLASSES
from models import pattern_preprocessing

ARCHITECTURES = ("resnet", "mobilenet")
HEAD_PREFIX = "head_"


@dataclasses.dataclass(frozen=True)
class PatternHyperParameters:
    """Defaults, and the search space the Tuner explores around them."""

    architecture: str = "resnet"
    width: int = 16  # channels of the stem and the first block; each next block doubles it
    depth: int = 3  # backbone blocks after the stem
    dropout: float = 0.2
    learning_rate: float = 3e-3

    WIDTH_CHOICES = (8, 16, 32)
    DEPTH_RANGE = (2, 4)
    LEARNING_RATE_RANGE = (3e-4, 1e-2)


def get_hyperparameters() -> keras_tuner.HyperParameters:
    """One search space for the Tuner (width, depth, learning rate); its defaults are the Trainer's."""
    d = PatternHyperParameters()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("architecture", d.architecture)
    hp.Choice("width", list(d.WIDTH_CHOICES), default=d.width)
    hp.Int("depth", *d.DEPTH_RANGE, default=d.depth)
    hp.Fixed("dropout", d.dropout)
    hp.Float("learning_rate", *d.LEARNING_RATE_RANGE, sampling="log", default=d.learning_rate)
    return hp


@keras.saving.register_keras_serializable(package="waferflow")
class RadiusChannel(keras.layers.Layer):
    """Appends each pixel's distance from the wafer centre (0 at the centre, 1 at the map's edge).

    The pattern classes are defined by where fails sit relative to the centre (Center, Donut,
    Edge-Ring, Edge-Loc against Loc), and a convolutional backbone ending in global pooling is blind
    to absolute position: it could only infer it from the on_wafer disc's border. Handing it the
    radius (CoordConv, Liu et al. 2018, reduced to the one coordinate the classes use) makes those
    classes learnable from far fewer maps. The radius is D4-invariant, like the classes."""

    def call(self, maps):
        centre = (MAP_SIZE - 1) / 2
        grid = keras.ops.arange(MAP_SIZE, dtype="float32") - centre
        radius = keras.ops.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) / (MAP_SIZE / 2)
        radius = keras.ops.cast(radius, maps.dtype)[None, :, :, None]
        batch = keras.ops.shape(maps)[0]
        return keras.ops.concatenate([maps, keras.ops.tile(radius, [batch, 1, 1, 1])], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)


def _conv_bn(x, filters: int, kernel: int, strides: int, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _separable_bn(x, filters: int, strides: int, name: str):
    x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    return _conv_bn(x, filters, 1, 1, f"{name}_pw")


def _residual_block(shape, filters: int, strides: int, name: str) -> keras.Model:
    inputs = keras.Input(shape)
    x = _conv_bn(inputs, filters, 3, strides, "a")
    x = _conv_bn(x, filters, 3, 1, "b", relu=False)
    skip = inputs
    if strides != 1 or shape[-1] != filters:
        skip = _conv_bn(inputs, filters, 1, strides, "proj", relu=False)
    out = keras.layers.ReLU(name="out_relu")(keras.layers.Add(name="add")([x, skip]))
    return keras.Model(inputs, out, name=name)


def _separable_block(shape, filters: int, strides: int, name: str) -> keras.Model:
    inputs = keras.Input(shape)
    x = _separable_bn(inputs, filters, strides, "a")
    x = _separable_bn(x, filters, 1, "b")
    return keras.Model(inputs, x, name=name)


def build_pattern_model(hp: keras_tuner.HyperParameters, compile_model: bool = True) -> keras.Model:
    """The CNN from map (MAP_SIZE, MAP_SIZE, channels) to one float32 logit per pattern class.

    The float32 `head_logits` keeps the loss in full precision under a mixed policy; everything
    before it computes in the policy's dtype. Compiled with multi-label binary cross-entropy (one
    sigmoid per class) unless `compile_model` is False (the Trainer compiles per transfer strategy).
    """
    architecture, width, depth = hp.get("architecture"), hp.get("width"), hp.get("depth")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    inputs = keras.Input((MAP_SIZE, MAP_SIZE, len(MAP_CHANNELS)), name=pattern_preprocessing.MAP_XF)
    x = RadiusChannel(name="radius")(inputs)
    stem_in = keras.Input(x.shape[1:])
    stem = keras.Model(stem_in, _conv_bn(stem_in, width, 3, 1, "stem"), name="stem")
    x = stem(x)
    block = _residual_block if architecture == "resnet" else _separable_block
    for i in range(depth):
        x = block(tuple(x.shape[1:]), width * 2**i, 1 if i == 0 else 2, f"block_{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(x)
    x = keras.layers.Dropout(hp.get("dropout"), name=f"{HEAD_PREFIX}dropout")(x)
    logits = keras.layers.Dense(len(PATTERN_CLASSES), dtype="float32", name=f"{HEAD_PREFIX}logits")(x)
    model = keras.Model(inputs, logits, name=f"pattern_{architecture}")
    if compile_model:
        compile_pattern_model(model, keras.optimizers.Adam(hp.get("learning_rate")))
    return model


def compile_pattern_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: str = "bce") -> None:
    """Multi-label loss on the logits: binary cross-entropy, or its focal form (`focal`, gamma 2)."""
    if loss == "bce":
        loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
    elif loss == "focal":
        loss_fn = keras.losses.BinaryFocalCrossentropy(gamma=2.0, from_logits=True)
    else:
        raise ValueError(f"unknown loss {loss!r}; known: bce, focal")
    model.compile(
        optimizer=optimizer,
        loss=loss_fn,
        metrics=[keras.metrics.AUC(name="auc", from_logits=True, multi_label=True)],
    )


def backbone_blocks(model: keras.Model) -> list[str]:
    """The backbone's stages, input side first: ["stem", "block_0", ...]."""
    return [layer.name for layer in model.layers if layer.name == "stem" or layer.name.startswith("block_")]


def head_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if layer.name.startswith(HEAD_PREFIX)]


def hyperparameters_of(model: keras.Model) -> dict:
    """The architecture of a built model, read back from its layers (to rebuild it for transfer)."""
    blocks = [n for n in backbone_blocks(model) if n.startswith("block_")]
    return {
        "architecture": model.name.removeprefix("pattern_"),
        "width": model.get_layer("stem").output.shape[-1],
        "depth": len(blocks),
    }
