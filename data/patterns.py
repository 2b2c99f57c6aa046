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

import csv
import io

from data import fs

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


# The pattern-labels sidecar: one CSV per lot (`patterns/<lot_id>.csv` in a dataset, beside the
# wafer files), a header row then one row per wafer. `patterns` is the wafer's classes joined by
# ";" (e.g. "Center;Scratch") or "none". The generator writes it; for real data a yield engineer's
# review (or a labelling tool) writes the same columns.
SIDECAR_COLUMNS = ("lot_id", "wafer_id", "patterns")
SIDECAR_SEPARATOR = ";"
SIDECAR_PATTERN = "patterns/*.csv"  # glob of the sidecar files, relative to the dataset directory


def format_patterns(classes: tuple[str, ...] | list[str]) -> str:
    """A wafer's classes as a sidecar cell: sorted names joined by ";", or "none"."""
    labels_to_multi_hot(classes)  # validates the names
    names = sorted(set(classes) - {NONE_CLASS})
    return SIDECAR_SEPARATOR.join(names) or NONE_CLASS


def sidecar_text(rows: list[tuple[str, str, tuple[str, ...]]]) -> str:
    """A sidecar file's text from (lot_id, wafer_id, classes) rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SIDECAR_COLUMNS)
    for lot_id, wafer_id, classes in rows:
        writer.writerow((lot_id, wafer_id, format_patterns(classes)))
    return buffer.getvalue()


class SidecarError(ValueError):
    """A pattern-labels sidecar that cannot be used: names the file, the line and what is wrong."""


def parse_sidecar(text: str, path: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(lot_id, wafer_id) -> the wafer's classes (() for "none") from a sidecar file's text.

    SidecarError (naming `path` and the line) for a missing column, an unknown class, an empty
    cell, or a wafer listed twice."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in SIDECAR_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SidecarError(f"{path}: pattern sidecar lacks column(s) {missing}; it needs {list(SIDECAR_COLUMNS)}")
    labels: dict[tuple[str, str], tuple[str, ...]] = {}
    for row in reader:
        line = reader.line_num
        key = (row["lot_id"] or "").strip(), (row["wafer_id"] or "").strip()
        cell = (row["patterns"] or "").strip()
        if not all(key) or not cell:
            raise SidecarError(f"{path} line {line}: empty lot_id, wafer_id or patterns ({dict(row)})")
        names = tuple(name.strip() for name in cell.split(SIDECAR_SEPARATOR))
        try:
            labels_to_multi_hot(names)
        except ValueError as error:
            raise SidecarError(f"{path} line {line}: wafer {key[1]} of lot {key[0]}: {error}") from None
        if key in labels:
            raise SidecarError(f"{path} line {line}: wafer {key[1]} of lot {key[0]} is listed twice")
        labels[key] = tuple(sorted(set(names) - {NONE_CLASS}))
    return labels


def read_sidecar(path: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """A pattern-labels sidecar file (any path data/fs.py reads: local, gs://, .gz) by wafer."""
    try:
        raw = fs.read_input(path)
    except OSError as error:
        raise SidecarError(f"{path}: cannot read the pattern sidecar ({error})") from error
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SidecarError(f"{path}: pattern sidecar is not UTF-8 text ({error})") from None
    return parse_sidecar(text, path)


def labels_for(
    labels: dict[tuple[str, str], tuple[str, ...]], lot_id: str, wafer_id: str, where: str = "the pattern sidecar"
) -> tuple[str, ...]:
    """One wafer's classes; SidecarError naming the wafer and `where` if the sidecar has no row for it."""
    try:
        return labels[(lot_id, wafer_id)]
    except KeyError:
        raise SidecarError(f"wafer {wafer_id} of lot {lot_id} has no row in {where}") from None
