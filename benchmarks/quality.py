"""Escape-screening quality: the pushed model against gradient boosting, logistic regression, the
industry's screens and the generator's own probability, on the test lots of several datasets.

    python benchmarks/quality.py [--product WF7N] [--lots 40] [--wafers-per-lot 5] [--seeds 1 2 3]
                                 [--out output/bench_quality] [--n-boot 500]

For each seed: generate a dataset, run the real pipeline on it (`make run` settings), then score the
test split (the lots the ingest held out; neither the Tuner, early stopping, calibration nor the
ink threshold saw them) with:

- `model`: the pushed model, through `serving_default` on the serialized examples;
- `hist_gbm`, `logistic` (models/comparison.py): scikit-learn HistGradientBoostingClassifier with
  its defaults (its own early stopping on 10% of what it is given) and logistic regression
  (median-imputed, standardised), fitted on the train split's raw model inputs (the dense serving
  columns: every test, context, screen, coordinate, head and site; NaN where not measured);
- each screen alone (data/screens.py: DPAT tests outside, DPAT largest |z|, NNR, GDBN 3x3 and
  weighted 5x5, ZPAT) and `screens_any`: the fab's combination, ink when any screen fires, each
  screen's threshold at the same quantile so that the union inks the budget;
- `ceiling` and `observable_ceiling`: the generator's probability with and without its hidden
  per-die noise (from the labels sidecar, never given to a model).

Figures: AUC, PR-AUC, and the share of final-test fails caught when 0.5, 1, 2 and 5% of dies are
inked (every score at the same ink budget, so the same overkill), on the test lots of all seeds
pooled, with 95% intervals from a bootstrap over those lots; per-seed AUCs show the spread between
datasets; the targets of issue 9 as paired differences with intervals.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from components.model_export import serving_default_probabilities
from data.synthetic import GeneratorConfig
from data.writers import write_dataset
from models import comparison, dense_signature, evaluation
from models.features import LABEL_KEY
from pipeline import local_runner
from pipeline.config import RunConfig
from pipeline.summary import OBSERVABLE_ORACLE_KEY, ORACLE_KEY, _split_frame

BASELINES = comparison.REFERENCE_MODELS
SCREENS = comparison.SCREENS
KEYS = ["lot_id", "wafer_id", "x", "y"]


def examples_uri(config: RunConfig) -> str:
    uris = glob.glob(os.path.join(config.pipeline_root, "WaferExampleGen", "examples", "*"))
    return max(uris, key=os.path.getmtime)


def split_matrix(uri: str, split: str, columns) -> tuple[pd.DataFrame, list[bytes], np.ndarray]:
    frame, records = _split_frame(uri, split)
    return frame, records, dense_signature.dense_matrix_from_examples(records, columns)


def score_seed(args, seed: int) -> pd.DataFrame:
    """Generate, run the pipeline, score the test split with every contender."""
    root = os.path.join(args.out, f"seed{seed}")
    data_dir = os.path.join(root, "data")
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        write_dataset(
            GeneratorConfig(product=args.product, lots=args.lots, wafers_per_lot=args.wafers_per_lot, seed=seed),
            data_dir,
            fmt="stdf",
        )
    config = RunConfig(
        output_dir=root, data_dir=data_dir, seed=seed, export_tflite=False, export_onnx=False, report=False
    )
    started = time.time()
    summary = local_runner.run(config)
    print(f"seed {seed}: pipeline {time.time() - started:.0f} s, blessed={summary['blessed']}", flush=True)
    if not summary.get("pushed_model"):
        raise SystemExit(f"seed {seed}: the pipeline pushed no model (see {root})")
    loaded = tf.saved_model.load(summary["pushed_model"])
    columns = dense_signature.loaded_columns(loaded)
    uri = examples_uri(config)
    train, _, x_train = split_matrix(uri, "train", columns)
    test, records, x_test = split_matrix(uri, "test", columns)
    test["model"] = serving_default_probabilities(loaded, records)
    y_train = train[LABEL_KEY].to_numpy()
    for name, scores in {
        **comparison.reference_scores(x_train, y_train, x_test, seed),
        **comparison.screen_scores(x_test, columns),
    }.items():
        test[name] = scores
    truth = pd.concat([pd.read_parquet(f) for f in glob.glob(os.path.join(data_dir, "labels", "*.parquet"))])
    truth = truth.astype({"x": "int64", "y": "int64"}).drop_duplicates(KEYS, keep="last")
    test = test.merge(
        truth[[*KEYS, ORACLE_KEY, OBSERVABLE_ORACLE_KEY]].rename(
            columns={ORACLE_KEY: "ceiling", OBSERVABLE_ORACLE_KEY: "observable_ceiling"}
        ),
        on=KEYS,
        how="left",
    )
    test["lot_id"] = f"s{seed}:" + test["lot_id"]
    test["seed"] = seed
    return test


def paired(frame: pd.DataFrame, a: str, b: str, metric: str, n_boot: int, factor: float = 1.0) -> dict:
    """`a`'s metric minus `factor` times `b`'s, resampling the same lots for both."""

    def diff(sample: pd.DataFrame) -> dict[str, float]:
        y = sample[LABEL_KEY].to_numpy()
        return {
            "d": evaluation.headline(y, sample[a].to_numpy())[metric]
            - factor * evaluation.headline(y, sample[b].to_numpy())[metric]
        }

    return evaluation.bootstrap_by_lot(frame, diff, n_boot)["d"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--product", default="WF7N", help="built-in synthetic product (default WF7N)")
    parser.add_argument("--lots", type=int, default=40, help="lots per dataset (default 40)")
    parser.add_argument("--wafers-per-lot", type=int, default=5, help="wafers per lot (default 5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one dataset per seed (default 1 2 3)")
    parser.add_argument("--n-boot", type=int, default=500, help="lot-bootstrap resamples (default 500)")
    parser.add_argument("--out", default="output/bench_quality", help="work and result directory")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    frame = pd.concat([score_seed(args, seed) for seed in args.seeds], ignore_index=True)
    columns = ["model", *BASELINES, *SCREENS, "screens_any", "ceiling", "observable_ceiling"]
    table = evaluation.scores_table(frame, columns, args.n_boot)
    per_seed = {
        c: [
            float(evaluation.headline(p[LABEL_KEY].to_numpy(), p[c].to_numpy())["auc"])
            for _, p in frame.groupby("seed")
        ]
        for c in columns
    }
    targets = {
        "model - hist_gbm, AUC (>= 0)": paired(frame, "model", "hist_gbm", "auc", args.n_boot),
        "model - hist_gbm, catch@2% (>= 0)": paired(frame, "model", "hist_gbm", "catch@2.0%", args.n_boot),
        "model - 2 x screens_any, catch@2% (>= 0)": paired(
            frame, "model", "screens_any", "catch@2.0%", args.n_boot, factor=2.0
        ),
        "model - observable_ceiling, AUC (>= -0.02)": paired(frame, "model", "observable_ceiling", "auc", args.n_boot),
    }
    result = {
        "product": args.product,
        "lots_per_seed": args.lots,
        "wafers_per_lot": args.wafers_per_lot,
        "seeds": args.seeds,
        "test_dies": len(frame),
        "test_fails": int(frame[LABEL_KEY].sum()),
        "test_lots": int(frame["lot_id"].nunique()),
        "n_boot": args.n_boot,
        "table": table,
        "per_seed_auc": per_seed,
        "targets": targets,
    }
    with open(os.path.join(args.out, "quality.json"), "w") as f:
        json.dump(result, f, indent=1)

    def cell(v: dict) -> str:
        return f"{v['value']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]"

    print(
        f"\nTest split: {result['test_lots']} lots, {result['test_dies']} dies, {result['test_fails']} final-test "
        f"fails ({len(args.seeds)} datasets of {args.lots} lots x {args.wafers_per_lot} wafers, {args.product}); "
        f"95% lot-bootstrap intervals ({args.n_boot} resamples)\n"
    )
    shares = [k for k in table["model"] if k.startswith("catch@")]
    print(
        "| score | AUC | PR-AUC | " + " | ".join(f"fails caught, {s[6:]} inked" for s in shares) + " | AUC per seed |"
    )
    print("| --- " * (4 + len(shares)) + "|")
    for c in columns:
        t = table[c]
        print(
            f"| {c} | {cell(t['auc'])} | {cell(t['pr_auc'])} | "
            + " | ".join(cell(t[s]) for s in shares)
            + " | "
            + ", ".join(f"{v:.3f}" for v in per_seed[c])
            + " |"
        )
    print("\nTargets (paired differences over the same lot resamples):")
    for name, v in targets.items():
        bound = float(name.rsplit(">= ", 1)[1].rstrip(")"))
        verdict = "met" if v["value"] >= bound else "missed"
        print(f"  {name}: {cell(v)} -> {verdict}")


if __name__ == "__main__":
    main()
