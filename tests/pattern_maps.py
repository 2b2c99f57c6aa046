"""Synthetic wafer maps for the pattern model's tests and benchmarks, drawn with the generator's own
defect densities (data/synthetic.py `_defect_density`) over a disc of dies.

A stand-in for the data side's map builder, kept small and independent of it: each product is a
die grid (dies per wafer diameter), each die covers a square of pixels of the MAP_SIZE map, so two
products give maps of the same wafer at two resolutions (the premise of transfer between them).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.patterns import (
    GENERATOR_CLASSES,
    LABEL_KEY,
    LOT_KEY,
    MAP_KEY,
    MAP_SIZE,
    PATTERN_CLASSES,
    PRODUCT_KEY,
    WAFER_KEY,
)
from data.synthetic import _defect_density

GENERATOR_NAME = {v: k for k, v in GENERATOR_CLASSES.items()}
# dies across the wafer's diameter: product A a fine grid (one die a pixel), B a coarse one.
PRODUCTS = {"A": 32, "B": 16}


def _density(name: str, rx: np.ndarray, ry: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The generator's density; "Loc" (not drawn by data/synthetic.py at this commit) is a blob inside."""
    if name == "Loc":
        r, angle = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi)
        cx, cy = r * np.cos(angle), r * np.sin(angle)
        return 0.9 * np.exp(-(((rx - cx) ** 2 + (ry - cy) ** 2) / rng.uniform(0.01, 0.03)))
    return _defect_density(GENERATOR_NAME[name], rx, ry, rng)


def draw_map(classes: tuple[str, ...], dies_across: int, rng: np.random.Generator) -> np.ndarray:
    """One (MAP_SIZE, MAP_SIZE, 2) map: on_wafer, fail; `classes` are PATTERN_CLASSES names."""
    centres = (np.arange(dies_across) + 0.5) / dies_across * 2 - 1  # die centres in [-1, 1]
    ry, rx = np.meshgrid(centres, centres, indexing="ij")
    half = 1.0 / dies_across
    on = np.hypot(np.abs(rx) + half, np.abs(ry) + half) <= 1.0  # the whole die inside the wafer
    density = np.full(on.shape, 0.02)
    for name in classes:
        d = _density(name, rx.ravel() / 0.95, ry.ravel() / 0.95, rng).reshape(on.shape)
        density = 1 - (1 - density) * (1 - d)
    fail = (rng.random(on.shape) < density) & on
    scale = MAP_SIZE // dies_across
    grid = np.stack([on, fail], axis=-1).astype(np.float32)
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def draw_labels(n: int, rng: np.random.Generator, none_rate: float = 0.3, mixed_rate: float = 0.1) -> np.ndarray:
    """(n, 8) multi-hot labels: `none_rate` without pattern, `mixed_rate` with two (not Near-full)."""
    labels = np.zeros((n, len(PATTERN_CLASSES)), np.int64)
    weights = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0])
    for i in range(n):
        u = rng.random()
        if u < none_rate:
            continue
        first = rng.choice(len(PATTERN_CLASSES), p=weights / weights.sum())
        labels[i, first] = 1
        if u > 1 - mixed_rate and PATTERN_CLASSES[first] != "Near-full":
            others = [c for c in range(len(PATTERN_CLASSES)) if c != first and PATTERN_CLASSES[c] != "Near-full"]
            labels[i, rng.choice(others)] = 1
    return labels


def make_maps(n: int, product: str = "A", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, MAP_SIZE, MAP_SIZE, 2) float32 maps and (n, 8) int64 labels, seeded."""
    rng = np.random.default_rng(seed)
    labels = draw_labels(n, rng)
    maps = np.stack(
        [draw_map(tuple(np.array(PATTERN_CLASSES)[row.astype(bool)]), PRODUCTS[product], rng) for row in labels]
    )
    return maps, labels


def write_examples(path: str, maps: np.ndarray, labels: np.ndarray, product: str) -> None:
    """The maps as tf.Examples in the data/patterns.py format, one TFRecord file."""
    with tf.io.TFRecordWriter(path) as writer:
        for i, (m, y) in enumerate(zip(maps, labels, strict=True)):
            feature = {
                MAP_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=m.reshape(-1).tolist())),
                LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=y.tolist())),
                PRODUCT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[product.encode()])),
                LOT_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"L1"])),
                WAFER_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(i).encode()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
