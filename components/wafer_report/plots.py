"""The report's figures, drawn with matplotlib and embedded as PNG data URIs (the page opens offline).

Each function takes plain frames or arrays and returns `data:image/png;base64,...`. Wafer maps are
drawn on the grid the dies themselves span (nothing assumes a die size or a wafer diameter); x grows
to the right and y upwards, in the tester's coordinates.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

DPI = 80
# Die states on the outcome and ink maps, in legend order, and their colours.
STATES = ("pass", "final-test fail", "sort fail")
STATE_COLOURS = ("#4caf50", "#d32f2f", "#9e9e9e")
INK_STATES = ("pass", "inked", "inked, final-test fail", "escape (final-test fail, not inked)", "sort fail")
INK_COLOURS = ("#4caf50", "#1565c0", "#6a1b9a", "#d32f2f", "#9e9e9e")


def to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grid_of(dies: pd.DataFrame, values: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A (rows, columns) array over the dies' x/y extent, NaN where there is no die."""
    x, y = dies["x"].to_numpy(int), dies["y"].to_numpy(int)
    grid = np.full((y.max() - y.min() + 1, x.max() - x.min() + 1), np.nan)
    grid[y - y.min(), x - x.min()] = values
    return grid, (x.min() - 0.5, x.max() + 0.5, y.min() - 0.5, y.max() + 0.5)


def _map_axes(title: str, size: float = 2.6):
    fig, ax = plt.subplots(figsize=(size, size))
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
    return fig, ax


def state_map(dies: pd.DataFrame, codes: np.ndarray, title: str, states=STATES, colours=STATE_COLOURS) -> str:
    """A categorical wafer map: `codes[i]` is the index in `states` of die i."""
    fig, ax = _map_axes(title)
    grid, extent = grid_of(dies, np.asarray(codes, float))
    cmap = ListedColormap(colours)
    ax.imshow(
        grid,
        origin="lower",
        extent=extent,
        cmap=cmap,
        norm=BoundaryNorm(np.arange(len(states) + 1) - 0.5, len(states)),
        interpolation="nearest",
    )
    return to_data_uri(fig)


def bin_map(dies: pd.DataFrame, column: str, title: str, all_bins: Sequence[int] | None = None) -> str:
    """Sort bins on the wafer. Each bin of `all_bins` (default: this wafer's) keeps one colour on
    every map of the report; the legend lists the bins present on this wafer."""
    bins = sorted(all_bins) if all_bins is not None else sorted(dies[column].unique().tolist())
    index = {b: i for i, b in enumerate(bins)}
    fig, ax = _map_axes(title, 3.2)
    grid, extent = grid_of(dies, dies[column].map(index).to_numpy(float))
    cmap = plt.get_cmap("tab20", max(len(bins), 2))
    ax.imshow(
        grid, origin="lower", extent=extent, cmap=cmap, vmin=-0.5, vmax=max(len(bins), 2) - 0.5, interpolation="nearest"
    )
    present = sorted(dies[column].unique().tolist())
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(index[b])) for b in present]
    ax.legend(
        handles,
        [str(b) for b in present],
        fontsize=6,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        title=column,
        title_fontsize=6,
        frameon=False,
    )
    return to_data_uri(fig)


def value_map(dies: pd.DataFrame, values: np.ndarray, title: str, label: str, vmax: float | None = None) -> str:
    """A continuous wafer map (predicted risk, stacked fail rate) with a colour bar."""
    fig, ax = _map_axes(title, 3.0)
    grid, extent = grid_of(dies, values)
    image = ax.imshow(grid, origin="lower", extent=extent, cmap="magma_r", vmin=0.0, vmax=vmax, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return to_data_uri(fig)


def pareto(table: pd.DataFrame, title: str, top: int = 12) -> str:
    """Bars: dies per failing bin, largest first; line: cumulative share of fails."""
    table = table.head(top)
    fig, ax = plt.subplots(figsize=(5, 2.6))
    labels = [str(b) for b in table["bin"]]
    ax.bar(labels, table["dies"], color="#5c6bc0")
    ax.set_ylabel("dies", fontsize=8)
    ax.set_xlabel("bin", fontsize=8)
    ax.set_title(title, fontsize=9)
    twin = ax.twinx()
    twin.plot(labels, table["cumulative_share_of_fails"], color="#d32f2f", marker="o", markersize=3)
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("cumulative share of fails", fontsize=8)
    for axis in (ax, twin):
        axis.tick_params(labelsize=7)
    return to_data_uri(fig)


def roc_and_pr(labels: np.ndarray, scores: dict[str, np.ndarray]) -> str:
    """ROC and precision-recall curves of several scores on the same dies."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(8, 3.4))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        roc.plot(fpr, tpr, label=name, linewidth=1)
        precision, recall, _ = precision_recall_curve(labels, s)
        pr.plot(recall, precision, label=name, linewidth=1)
    roc.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.8, linestyle="--")
    roc.set(xlabel="share of good dies inked (false positive rate)", ylabel="share of fails caught", title="ROC")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall")
    pr.axhline(labels.mean(), color="#bbbbbb", linewidth=0.8, linestyle="--")
    roc.legend(fontsize=6)
    for axis in (roc, pr):
        axis.title.set_fontsize(9)
        axis.tick_params(labelsize=7)
        axis.xaxis.label.set_fontsize(8)
        axis.yaxis.label.set_fontsize(8)
    return to_data_uri(fig)


def calibration(table: pd.DataFrame) -> str:
    """Observed fail rate against mean predicted probability per bin of prediction (log axes)."""
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.loglog(
        table["mean_prediction"],
        table["fail_rate"].clip(lower=1e-4),
        marker="o",
        markersize=3,
        linewidth=1,
        label="model",
    )
    low = max(min(table["mean_prediction"].min(), 1e-3), 1e-4)
    ax.plot([low, 1], [low, 1], color="#bbbbbb", linestyle="--", linewidth=0.8, label="calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed fail rate", title="calibration (test)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=7)
    return to_data_uri(fig)


def cost_curve(thresholds: np.ndarray, costs: np.ndarray, chosen: float, chosen_cost: float) -> str:
    """Expected cost per die against the ink threshold, with the one chosen on validation."""
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.semilogx(thresholds, costs, linewidth=1)
    ax.plot([chosen], [chosen_cost], marker="o", color="#d32f2f", label=f"chosen on validation ({chosen:.4f})")
    ax.set(xlabel="ink threshold (probability)", ylabel="expected cost per die (test)", title="cost curve")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=7)
    return to_data_uri(fig)


def importance(table: pd.DataFrame, top: int = 15) -> str:
    """Horizontal bars: AUC lost when a column is permuted."""
    table = table.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(4.6, 0.25 * len(table) + 0.8))
    ax.barh(table["label"], table["auc_drop"], color="#26a69a")
    ax.set_xlabel("test AUC lost when permuted", fontsize=8)
    ax.tick_params(labelsize=7)
    return to_data_uri(fig)
