"""Wafer-map defect patterns: the class names and the example format shared by the map builder
(data side) and the pattern model (models side).

The classes are WM-811K's (Wu et al., 2015), the public wafer-map set yield engineers know; a wafer
may carry two at once (MixedWM38's mixed types), so a label is a set of classes, stored multi-hot.
"none" is not a class of its own: it is the empty set, and is scored as a ninth class (a wafer
predicted with no pattern). The synthetic generator's pattern names map onto these classes through
`GENERATOR_CLASSES`; a real fab's labels arrive in a sidecar with these names.

A map is a fixed-size image of the wafer in physical coordinates (the wafer's diameter spans the
image), so products with different die sizes and grids give maps that look alike: the premise of
transfer between products. Its channels are `MAP_CHANNELS`.
"""

from __future__ import annotations

PATTERN_CLASSES = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Random", "Scratch")
NONE_CLASS = "none"
# Scored classes: the eight patterns and "none" (no pattern at all).
SCORED_CLASSES = (*PATTERN_CLASSES, NONE_CLASS)

# The synthetic generator's names (data/synthetic.py DEFECT_PATTERNS) for the same signatures.
GENERATOR_CLASSES = {
    "center": "Center",
    "donut": "Donut",
    "edge_local": "Edge-Loc",
    "edge_ring": "Edge-Ring",
    "local": "Loc",
    "near_full": "Near-full",
    "random": "Random",
    "scratch": "Scratch",
}

MAP_SIZE = 32  # pixels per side of the fixed-size map
# 0: the die exists on this product's wafer (1 inside the die grid, 0 outside or between dies);
# 1: the die failed wafer sort (a bad bin).
MAP_CHANNELS = ("on_wafer", "fail")

# tf.Example features of one wafer's map example.
MAP_KEY = "wafer_map"  # float list, MAP_SIZE * MAP_SIZE * len(MAP_CHANNELS), row-major (H, W, C)
LABEL_KEY = "pattern_labels"  # int64 list, len(PATTERN_CLASSES), multi-hot; all zero = "none"
PRODUCT_KEY = "product"  # bytes: the product (program) name from the file
LOT_KEY = "lot_id"  # bytes
WAFER_KEY = "wafer_id"  # bytes


def labels_to_multi_hot(classes: list[str] | tuple[str, ...] | set[str]) -> list[int]:
    """Multi-hot vector over PATTERN_CLASSES; an unknown class name is an error, "none" means empty."""
    unknown = set(classes) - set(PATTERN_CLASSES) - {NONE_CLASS}
    if unknown:
        raise ValueError(f"unknown pattern class(es) {sorted(unknown)}; known: {', '.join(SCORED_CLASSES)}")
    if NONE_CLASS in classes and len(set(classes)) > 1:
        raise ValueError(f"'{NONE_CLASS}' cannot be combined with a pattern: {sorted(classes)}")
    return [int(name in classes) for name in PATTERN_CLASSES]


def multi_hot_to_labels(vector: list[int] | tuple[int, ...]) -> tuple[str, ...]:
    """The class names of a multi-hot vector; ("none",) when no pattern is set."""
    if len(vector) != len(PATTERN_CLASSES):
        raise ValueError(f"a pattern label has {len(PATTERN_CLASSES)} entries, got {len(vector)}")
    names = tuple(name for name, on in zip(PATTERN_CLASSES, vector, strict=True) if on)
    return names or (NONE_CLASS,)
