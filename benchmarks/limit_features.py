"""Do limits as features help? The same pipeline with and without the per-test margins, on the same lots.

    python benchmarks/limit_features.py [--product WF7N] [--lots 16] [--wafers-per-lot 4] [--seed 42]
                                        [--out output/bench_limits]

Generates one synthetic dataset, then runs the real pipeline twice on it (`make run` settings with
the Tuner off, so both arms train the default network with the same seed and budget): once as it
ships, once with `--no-limit-features` (no margins, no smallest margin, no near-limit count; the
robust z-scores of the values stay). Both pushed models score the test lots (the lot split the
ingest made) through the predict client; the table shows AUC, PR-AUC and the share of final-test
fails caught when 2% of dies are inked, with 95% intervals from a bootstrap over lots, and the
paired difference (with limits minus without), resampling the same lots for both arms.

Baseline: the pipeline without limit features. The generator's true probability is shown as the
ceiling (read from its labels sidecar, never given to a model).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import average_precision_score, roc_auc_score

from data.synthetic import GeneratorConfig
from data.writers import write_dataset
from pipeline import local_runner, predict
from pipeline.config import RunConfig

N_BOOT = 500
INK_SHARE = 0.02


def catch_at(labels: np.ndarray, scores: np.ndarray, share: float = INK_SHARE) -> float:
    """Share of the fails among the `share` highest-scored dies (ties broken by order)."""
    k = max(1, int(round(share * len(scores))))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(labels[top].sum() / max(labels.sum(), 1))


def metrics(frame: pd.DataFrame, column: str) -> dict[str, float]:
    y, s = frame["ft_fail"].to_numpy(), frame[column].to_numpy()
    return {"auc": roc_auc_score(y, s), "pr_auc": average_precision_score(y, s), "catch@2%": catch_at(y, s)}


def bootstrap(frame: pd.DataFrame, columns: list[str], seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Each metric of each column over N_BOOT resamples of the lots (the same resample for all)."""
    rng = np.random.default_rng(seed)
    lots = frame["lot_id"].unique()
    groups = {lot: part for lot, part in frame.groupby("lot_id")}
    out = {c: {m: [] for m in ("auc", "pr_auc", "catch@2%")} for c in columns}
    for _ in range(N_BOOT):
        sample = pd.concat([groups[lot] for lot in rng.choice(lots, size=len(lots))], ignore_index=True)
        if sample["ft_fail"].nunique() < 2:
            continue
        for c in columns:
            for m, v in metrics(sample, c).items():
                out[c][m].append(v)
    return {c: {m: np.asarray(v) for m, v in ms.items()} for c, ms in out.items()}


def test_lots(config: RunConfig) -> set[str]:
    (uri,) = glob.glob(os.path.join(config.pipeline_root, "WaferExampleGen", "examples", "*"))
    files = tf.io.gfile.glob(os.path.join(uri, "Split-test", "*"))
    lots = set()
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        lots.add(tf.train.Example.FromString(record.numpy()).features.feature["lot_id"].bytes_list.value[0].decode())
    return lots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--product", default="WF7N", help="built-in synthetic product (default WF7N)")
    parser.add_argument("--lots", type=int, default=16, help="lots to generate (default 16)")
    parser.add_argument("--wafers-per-lot", type=int, default=4, help="wafers per lot (default 4)")
    parser.add_argument("--seed", type=int, default=42, help="generator and training seed (default 42)")
    parser.add_argument("--out", default="output/bench_limits", help="working directory")
    args = parser.parse_args(argv)

    data = os.path.join(args.out, "data")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        write_dataset(
            GeneratorConfig(product=args.product, lots=args.lots, wafers_per_lot=args.wafers_per_lot, seed=args.seed),
            data,
            "stdf",
        )
    scored = {}
    for arm, with_limits in (("with limits", True), ("without limits", False)):
        config = RunConfig(
            output_dir=os.path.join(args.out, "with" if with_limits else "without"),
            data_dir=data,
            seed=args.seed,
            report=False,
            enable_tuning=False,
            export_tflite=False,
            export_onnx=False,
            min_auc=0.0,
            limit_features=with_limits,
        )
        summary = local_runner.run(config)
        lots = sorted(test_lots(config))
        files = [f for lot in lots for f in glob.glob(os.path.join(data, "wafers", lot, "*.stdf*"))]
        dies = predict.score(predict.read_dies(files, "stdf"), predict.load_scorer(summary["pushed_model"]))
        scored[arm] = dies.rename(columns={"probability": arm})
        print(f"{arm}: pushed {summary['pushed_model']}, {len(dies)} test dies in lots {lots}")

    keys = ["lot_id", "wafer_id", "x", "y"]
    labels = pd.concat([pd.read_parquet(f) for f in glob.glob(os.path.join(data, "labels", "*.parquet"))])
    frame = scored["with limits"][[*keys, "with limits"]].merge(
        scored["without limits"][[*keys, "without limits"]], on=keys
    )
    frame = frame.merge(labels[[*keys, "ft_fail", "ft_fail_prob"]].rename(columns={"ft_fail_prob": "ceiling"}), on=keys)
    columns = ["without limits", "with limits", "ceiling"]
    boot = bootstrap(frame, columns)
    print(
        f"\ntest lots: {frame.lot_id.nunique()}, dies: {len(frame)}, final-test fails: {int(frame.ft_fail.sum())}; "
        f"95% intervals: bootstrap over lots ({N_BOOT} resamples)"
    )
    print(f"{'score':<40} {'AUC':>22} {'PR-AUC':>22} {'fails caught at 2% inked':>26}")
    result = {}
    for c in columns:
        point = metrics(frame, c)
        cells = [
            f"{point[m]:.3f} [{np.percentile(boot[c][m], 2.5):.3f}, {np.percentile(boot[c][m], 97.5):.3f}]"
            for m in ("auc", "pr_auc", "catch@2%")
        ]
        label = {"ceiling": "generator's true probability (ceiling)"}.get(c, f"pipeline {c}")
        print(f"{label:<40} {cells[0]:>22} {cells[1]:>22} {cells[2]:>26}")
        result[c] = point
    print("\npaired difference, with minus without (same lots resampled):")
    for m in ("auc", "pr_auc", "catch@2%"):
        diff = boot["with limits"][m] - boot["without limits"][m]
        point = result["with limits"][m] - result["without limits"][m]
        print(f"  {m:<10} {point:+.3f} [{np.percentile(diff, 2.5):+.3f}, {np.percentile(diff, 97.5):+.3f}]")
    with open(os.path.join(args.out, "limit_features.json"), "w") as f:
        json.dump({"eval_dies": len(frame), "fails": int(frame.ft_fail.sum()), "metrics": result}, f, indent=1)


if __name__ == "__main__":
    main()
