"""The pattern report's figures and page: data (a dict of figures), PNGs, and a Jinja2 template.

Per product of the test split: wafers, macro-F1 and per-class recall at the model's own thresholds
(models/pattern_metrics.py, "none" as the ninth class), a 95% interval for macro-F1 from resampling
wafers with replacement (seeded), and a confusion summary: per scored class its support, predictions,
true and false positives and misses, and the most frequent (labelled -> predicted) mismatches. Then a
sample of test wafers, each map beside its Grad-CAM heat map (models/gradcam.py) for the predicted
class, both written as MAP_SIZE x MAP_SIZE PNGs beside the page.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.wafer_report.report import render_template  # noqa: E402
from data.patterns import MAP_CHANNELS, NONE_CLASS, PATTERN_CLASSES, SCORED_CLASSES  # noqa: E402
from models import pattern_metrics  # noqa: E402

BOOTSTRAP = 1000  # wafer resamples for the macro-F1 interval
SAMPLE_SIZE = 12  # wafers shown with their Grad-CAM
HEAT_COLORMAP = "inferno"
# Map pixel colours: off the wafer, a die that passed, a die that failed sort.
MAP_COLOURS = np.array([[1.0, 1.0, 1.0], [0.30, 0.69, 0.31], [0.83, 0.18, 0.18]])


def label_text(multi_hot: np.ndarray) -> str:
    """A multi-hot row as class names joined by ";" (PATTERN_CLASSES order), or "none"."""
    return ";".join(name for name, on in zip(PATTERN_CLASSES, multi_hot, strict=True) if on) or NONE_CLASS


def bootstrap_macro_f1(labels: np.ndarray, decisions: np.ndarray, seed: int, draws: int = BOOTSTRAP) -> list[float]:
    """[low, high]: the 2.5th and 97.5th percentiles of macro-F1 over `draws` resamples of the wafers."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    scores = [pattern_metrics.macro_f1(labels[i], decisions[i]) for i in (rng.integers(0, n, n) for _ in range(draws))]
    return [float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5))]


def confusion(labels: np.ndarray, decisions: np.ndarray, top: int = 10) -> dict:
    """Per scored class: support, predicted, TP, FP, FN; and the most frequent mismatches between a
    wafer's labelled and predicted class sets."""
    y, p = pattern_metrics.with_none(labels), pattern_metrics.with_none(decisions)
    per_class = [
        {
            "class": name,
            "support": int(y[:, i].sum()),
            "predicted": int(p[:, i].sum()),
            "true_positives": int((y[:, i] & p[:, i]).sum()),
            "false_positives": int((p[:, i] & ~y[:, i].astype(bool)).sum()),
            "missed": int((y[:, i] & ~p[:, i].astype(bool)).sum()),
        }
        for i, name in enumerate(SCORED_CLASSES)
    ]
    pairs = Counter(
        (label_text(a), label_text(b)) for a, b in zip(labels, decisions, strict=True) if not np.array_equal(a, b)
    )
    mismatches = [{"labelled": a, "predicted": b, "wafers": n} for (a, b), n in pairs.most_common(top)]
    return {"per_class": per_class, "exact_matches": int(len(labels) - sum(pairs.values())), "mismatches": mismatches}


def product_figures(labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray, seed: int) -> dict:
    """One product's figures at the model's thresholds (see the module docstring)."""
    decisions = pattern_metrics.predict(probabilities, thresholds)
    return {
        "wafers": int(len(labels)),
        "macro_f1": pattern_metrics.macro_f1(labels, decisions),
        "macro_f1_95": bootstrap_macro_f1(labels, decisions, seed),
        # None for a class absent from the labels (recall undefined; JSON has no NaN).
        "recall": {
            k: None if np.isnan(v) else v for k, v in pattern_metrics.per_class_recall(labels, decisions).items()
        },
        "confusion": confusion(labels, decisions),
    }


def sample_wafers(decisions: np.ndarray, seed: int, size: int = SAMPLE_SIZE) -> list[int]:
    """Indices of up to `size` wafers: one for each predicted scored class present (chosen at random
    among the wafers predicted with it), then random others; seeded, in index order."""
    rng = np.random.default_rng(seed)
    predicted = pattern_metrics.with_none(decisions)
    chosen: list[int] = []
    for c in range(predicted.shape[1]):
        candidates = [i for i in np.flatnonzero(predicted[:, c]) if i not in chosen]
        if candidates and len(chosen) < size:
            chosen.append(int(rng.choice(candidates)))
    rest = [i for i in range(len(decisions)) if i not in chosen]
    extra = rng.permutation(rest)[: max(0, size - len(chosen))]
    return sorted(chosen + [int(i) for i in extra])


def explained_class(probabilities: np.ndarray, decisions: np.ndarray) -> int:
    """The class a wafer's Grad-CAM explains: its most probable predicted class, or, predicted
    "none", its most probable class (below its threshold)."""
    if decisions.any():
        return int(np.flatnonzero(decisions)[np.argmax(probabilities[decisions.astype(bool)])])
    return int(np.argmax(probabilities))


def map_rgb(wafer_map: np.ndarray) -> np.ndarray:
    """(H, W, 3) colours of a map: off the wafer, passed, failed (MAP_COLOURS)."""
    on = wafer_map[..., MAP_CHANNELS.index("on_wafer")] > 0.5
    fail = wafer_map[..., MAP_CHANNELS.index("fail")] > 0.5
    return MAP_COLOURS[np.where(fail, 2, np.where(on, 1, 0))]


def write_pngs(directory: str, stem: str, wafer_map: np.ndarray, heat: np.ndarray) -> tuple[str, str]:
    """The map and its heat map as PNGs of the map's own size (one pixel per map pixel; the page
    scales them up); returns their file names inside `directory`."""
    os.makedirs(directory, exist_ok=True)
    names = f"{stem}_map.png", f"{stem}_gradcam.png"
    plt.imsave(os.path.join(directory, names[0]), map_rgb(wafer_map))
    plt.imsave(os.path.join(directory, names[1]), heat, cmap=HEAT_COLORMAP, vmin=0.0, vmax=1.0)
    return names


@dataclasses.dataclass
class SampleWafer:
    lot_id: str
    wafer_id: str
    product: str
    labelled: str
    predicted: str
    explained: str
    probability: float
    map_png: str
    gradcam_png: str


def render(context: dict) -> str:
    return render_template(os.path.dirname(__file__), context)
