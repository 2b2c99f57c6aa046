"""The run report's content, as one plain dict, and its rendering through a Jinja2 template.

`build(...)` takes what the WaferReport executor gathered (the test split scored by the model, the
dies read back from the tester files with their bins, the train and test matrices of raw model
inputs, the run's records) and computes every table and figure; `render(context)` fills
`template.html.j2`. The numbers a reader compares with the run summary come from the same functions
the summary uses (models/evaluation.py, with the same bootstrap seed and size), so they agree.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import jinja2
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from components.wafer_report import plots
from data import yield_views
from models import comparison, evaluation, operating_point
from models.features import LABEL_KEY

KEYS = ["lot_id", "wafer_id", "x", "y"]
N_BOOT = 300  # the run summary's (pipeline/summary.py test_figures)
MAX_WAFER_MAPS = 24  # test wafers drawn as maps; the rest are counts only (wafer_section)
IMPORTANCE_DIES = 20_000  # permutation importance on at most this many test dies
RISKIEST = 10
CALIBRATION_BINS = 10


@dataclasses.dataclass
class ReportInputs:
    test: pd.DataFrame  # test split: lot_id, wafer_id, x, y, ft_fail, model (probability)
    x_test: np.ndarray  # raw model inputs of the same dies, in `columns` order
    x_train: np.ndarray
    y_train: np.ndarray
    columns: Sequence[str]
    dies: pd.DataFrame  # every die read from the files: bins and sort_pass, sort fails included
    score_dense: Callable[[np.ndarray], np.ndarray]  # the model on a dense matrix (serve_dense)
    margins: pd.DataFrame  # test dies x per-test margins (the Transform's), for the riskiest dies
    op: operating_point.OperatingPoint | None
    test_names: dict[str, str]  # feature -> TEST_TXT (the learned program)
    run: dict  # ingest, program, training, gate, tfma metrics, blessing, pushes, exports, anomalies
    seed: int = 0


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.replace({np.nan: None}).to_dict("records")


def outcome_codes(dies: pd.DataFrame) -> np.ndarray:
    """plots.STATES index of each die: pass, final-test fail, sort fail."""
    passing = dies["sort_pass"].to_numpy(bool)
    ft_fail = dies[LABEL_KEY].fillna(0).to_numpy(int) == 1
    return np.where(~passing, 2, np.where(ft_fail, 1, 0))


def ink_codes(dies: pd.DataFrame, threshold: float) -> np.ndarray:
    """plots.INK_STATES index: pass, inked, inked and a final-test fail, escape, sort fail."""
    passing = dies["sort_pass"].to_numpy(bool)
    ft_fail = dies[LABEL_KEY].fillna(0).to_numpy(int) == 1
    inked = dies["model"].fillna(-1).to_numpy() >= threshold
    code = np.where(inked, np.where(ft_fail, 2, 1), np.where(ft_fail, 3, 0))
    return np.where(passing, code, 4)


def wafer_section(dies: pd.DataFrame, test: pd.DataFrame, op) -> tuple[list[dict], list[dict]]:
    """One entry per test-split wafer (its maps and counts) and one per test lot (its stacked maps)."""
    scored = dies.merge(test[[*KEYS, LABEL_KEY, "model"]], on=KEYS, how="left")
    lots = sorted(test["lot_id"].unique())
    threshold = op.threshold if op is not None else np.inf
    # One colour scale for every risk map, so that wafers compare at a glance.
    risk_max = float(np.quantile(test["model"], 0.995)) if len(test) else 1.0
    hard_bins = sorted(scored.loc[scored["lot_id"].isin(lots), "hard_bin"].unique().tolist())
    wafers, stacked, frames = [], [], {}
    for lot in lots:
        lot_dies = scored[scored["lot_id"] == lot]
        for wafer_id, wafer in lot_dies.groupby("wafer_id", sort=True):
            wafer = wafer.reset_index(drop=True)
            passing = wafer["sort_pass"].to_numpy(bool)
            outcome, ink = outcome_codes(wafer), ink_codes(wafer, threshold)
            grid, _ = plots.grid_of(wafer, np.ones(len(wafer)))
            frames[wafer_id] = (wafer, outcome, ink)
            wafers.append(
                {
                    "lot_id": lot,
                    "wafer_id": wafer_id,
                    "dies": len(wafer),
                    "grid_dies": int(np.isfinite(grid).sum()),
                    "sort_pass": int(passing.sum()),
                    "ft_fails": int((outcome == 1).sum()),
                    "inked": int(np.isin(ink, (1, 2)).sum()),
                    "escapes": int((ink == 3).sum()),
                    "maps": [],
                }
            )
        # Stacked over the lot's wafers: at each x/y, the share of wafers where the die failed
        # (sort or final test).
        failed = lot_dies.assign(_fail=(outcome_codes(lot_dies) > 0).astype(float))
        rate = failed.groupby(["x", "y"], as_index=False)["_fail"].mean()
        stacked.append(
            {
                "lot_id": lot,
                "wafers": int(lot_dies["wafer_id"].nunique()),
                "map": plots.value_map(
                    rate, rate["_fail"].to_numpy(), f"{lot}: stacked fails", "share of wafers failing", vmax=1.0
                ),
            }
        )
    # Maps for the wafers with the most final-test fails (escapes first): four images a wafer for
    # every test wafer made the report grow with the data (660 images at 312k dies, a third of its
    # time); every wafer keeps its counts.
    for record in sorted(wafers, key=lambda w: (-w["escapes"], -w["ft_fails"], w["wafer_id"]))[:MAX_WAFER_MAPS]:
        wafer, outcome, ink = frames[record["wafer_id"]]
        record["maps"] = [
            plots.bin_map(wafer, "hard_bin", f"{record['wafer_id']}: sort hard bins", hard_bins),
            plots.state_map(wafer, outcome, "sort and final test"),
            plots.value_map(wafer, wafer["model"].to_numpy(float), "predicted risk", "P(final-test fail)", risk_max),
            plots.state_map(wafer, ink, "ink decision", plots.INK_STATES, plots.INK_COLOURS),
        ]
    return wafers, stacked


def calibration_table(labels: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Dies in equal-count bins of predicted probability: mean prediction against fail rate."""
    order = np.argsort(p, kind="stable")
    parts = np.array_split(order, bins)
    return pd.DataFrame(
        [
            {"dies": len(i), "mean_prediction": float(p[i].mean()), "fail_rate": float(labels[i].mean())}
            for i in parts
            if len(i)
        ]
    )


def cost_table(labels: np.ndarray, p: np.ndarray, op) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.unique(np.quantile(p, np.linspace(0.0, 0.999, 200)))
    costs = np.array(
        [operating_point.expected_cost(labels, p, t, op.escape_cost, op.overkill_cost) for t in thresholds]
    )
    return thresholds, costs


def per_lot(test: pd.DataFrame, op, n_boot: int = 200, seed: int = 0) -> list[dict]:
    """Per test lot: dies, fails, mean prediction / fail rate, AUC with a 95% interval over
    resampled dies (within one lot there are no lots to resample), and the ink decision's catch."""
    rng = np.random.default_rng(seed)
    rows = []
    for lot, part in test.groupby("lot_id", sort=True):
        y, p = part[LABEL_KEY].to_numpy(), part["model"].to_numpy()
        row = {
            "lot_id": lot,
            "dies": len(part),
            "fails": int(y.sum()),
            "calibration": float(p.mean() / y.mean()) if y.sum() else None,
            "auc": None,
            "lo": None,
            "hi": None,
        }
        if 0 < y.sum() < len(y):
            row["auc"] = float(roc_auc_score(y, p))
            # Die resamples as die weights over the lot's dies sorted once (evaluation.RankedScores).
            ranked = evaluation.RankedScores(y, p)
            draws = []
            for _ in range(n_boot):
                weights = np.bincount(rng.integers(len(y), size=len(y)), minlength=len(y))
                if (figures := ranked.headline(weights)) is not None:
                    draws.append(figures["auc"])
            row["lo"], row["hi"] = float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))
        if op is not None:
            inked = op.ink(p)
            row["ink_rate"] = float(inked.mean())
            row["catch"] = float(inked[y == 1].mean()) if y.sum() else None
        rows.append(row)
    return rows


def permutation_importance(inputs: ReportInputs) -> pd.DataFrame:
    """Test AUC lost when one raw input column is shuffled across the test dies (seeded), per column."""
    rng = np.random.default_rng(inputs.seed)
    n = len(inputs.x_test)
    index = rng.choice(n, size=min(n, IMPORTANCE_DIES), replace=False) if n > IMPORTANCE_DIES else np.arange(n)
    x, y = inputs.x_test[index], inputs.test[LABEL_KEY].to_numpy()[index]
    base = roc_auc_score(y, inputs.score_dense(x))
    rows = []
    for j, column in enumerate(inputs.columns):
        shuffled = x.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        name = inputs.test_names.get(column)
        rows.append(
            {
                "column": column,
                "label": f"{column} {name}" if name else column,
                "auc_drop": float(base - roc_auc_score(y, inputs.score_dense(shuffled))),
            }
        )
    return pd.DataFrame(rows).sort_values("auc_drop", ascending=False).reset_index(drop=True)


def riskiest(inputs: ReportInputs, n: int = RISKIEST, tests: int = 3) -> list[dict]:
    """The highest-risk test dies and, for each, the tests nearest their limits (smallest margin)."""
    top = np.argsort(-inputs.test["model"].to_numpy(), kind="stable")[:n]
    rows = []
    for i in top:
        die = inputs.test.iloc[i]
        margins = inputs.margins.iloc[i].dropna().sort_values().head(tests)
        rows.append(
            {
                "lot_id": die["lot_id"],
                "wafer_id": die["wafer_id"],
                "x": int(die["x"]),
                "y": int(die["y"]),
                "probability": float(die["model"]),
                "ft_fail": int(die[LABEL_KEY]),
                "nearest": [
                    {"test": t, "name": inputs.test_names.get(t, ""), "margin": float(m)} for t, m in margins.items()
                ],
            }
        )
    return rows


def build(inputs: ReportInputs) -> dict:
    """Everything the template shows, computed once."""
    test, dies = inputs.test, inputs.dies
    labels, p = test[LABEL_KEY].to_numpy(), test["model"].to_numpy()
    wafers, stacked = wafer_section(dies, test, inputs.op)

    scores = {
        "model": p,
        **comparison.reference_scores(inputs.x_train, inputs.y_train, inputs.x_test, inputs.seed),
        **comparison.screen_scores(inputs.x_test, inputs.columns),
    }
    frame = test[["lot_id", LABEL_KEY]].assign(**scores)
    table = evaluation.scores_table(frame, list(scores), N_BOOT)

    model: dict = {
        "comparison": table,
        "curves": plots.roc_and_pr(labels, {k: scores[k] for k in ("model", "hist_gbm", comparison.SCREENS_ANY)}),
        "calibration_table": _records(calibration_table(labels, p)),
        "per_lot": per_lot(test, inputs.op, seed=inputs.seed),
        "calibration_ratio": float(p.mean() / labels.mean()) if labels.sum() else None,
    }
    model["calibration_plot"] = plots.calibration(calibration_table(labels, p))
    if inputs.op is not None:
        thresholds, costs = cost_table(labels, p, inputs.op)
        chosen = operating_point.expected_cost(
            labels, p, inputs.op.threshold, inputs.op.escape_cost, inputs.op.overkill_cost
        )
        model["operating_point"] = {
            **inputs.op.to_dict(),
            "cost_on_test": float(chosen),
            "ink_rate_on_test": float(inputs.op.ink(p).mean()),
        }
        model["cost_curve"] = plots.cost_curve(thresholds, costs, inputs.op.threshold, chosen)

    importance = permutation_importance(inputs)
    hard, soft = yield_views.bin_pareto(dies, "hard_bin"), yield_views.bin_pareto(dies, "soft_bin")
    with_labels = dies.merge(test[[*KEYS, LABEL_KEY]], on=KEYS, how="left")
    return {
        "run": inputs.run,
        "test_split": {
            "dies": len(test),
            "fails": int(labels.sum()),
            "lots": int(test["lot_id"].nunique()),
            "wafers": len(wafers),
        },
        "wafers": wafers,
        "stacked": stacked,
        "bins": {
            "hard_pareto": plots.pareto(hard, "hard-bin Pareto (sort fails)"),
            "soft_pareto": plots.pareto(soft, "soft-bin Pareto (sort fails)"),
            "hard": _records(hard.head(12)),
            "soft": _records(soft.head(12)),
            "dies": len(dies),
        },
        "yield": {
            "lots": _records(yield_views.yield_by(with_labels, ["lot_id"])),
            "wafers": _records(yield_views.yield_by(with_labels, ["lot_id", "wafer_id"])),
            "sites": _records(yield_views.site_comparison(dies)),
            "alpha": yield_views.SITE_ALPHA,
        },
        "model": model,
        "drivers": {
            "importance_plot": plots.importance(importance),
            "importance": _records(importance.head(15)),
            "importance_dies": int(min(len(test), IMPORTANCE_DIES)),
            "riskiest": riskiest(inputs),
        },
    }


def render(context: dict) -> str:
    """The self-contained HTML page (figures are data URIs, styles inline)."""
    return render_template(os.path.dirname(__file__), context)


def render_template(folder: str, context: dict) -> str:
    """`folder`/template.html.j2 rendered with `context`: HTML-escaped, and a missing key is an error."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template("template.html.j2").render(**context)
