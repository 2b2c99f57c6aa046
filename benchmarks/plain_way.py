"""The plain way: what a user would write without a pipeline, the baseline of pipeline_scaling.py.

    python benchmarks/plain_way.py --data-dir D --splits splits.json [--epochs 12] [--out result.json]

Read every wafer file of a dataset into memory with the project's own readers, join the final-test
labels, keep the sort-passing dies (those with a label), standardise the raw test values and x / y
with the train split's mean and standard deviation (a test not measured is 0, the mean), and fit the
pipeline's MLP (models/model.py, default hyperparameters, the same batch size) for at most `epochs`
epochs, early-stopped on validation AUC with the best weights kept. Score the test split: AUC
(scikit-learn) and calibration (mean prediction / mean label).

No Beam, no TFX, no statistics, schema, screens or exports: it is the floor the pipeline's cost is
measured against, not a competitor for its features. The splits (which lot is train, validation and
test) come from a JSON file of {split: [lot ids]}, the pipeline's own split, so both are scored on
the same test lots.

Prints one JSON object: wall seconds per step (read, prepare, fit, score), the total, epochs run,
dies per split and the test figures. Peak memory is measured by the caller (the whole process).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import pandas as pd


def read_dataset(data_dir: str) -> pd.DataFrame:
    """Every die of every wafer file under data_dir, joined with the labels; sort fails drop out."""
    from data import readers
    from data.program import is_test_feature

    paths = sorted(
        p
        for suffixes in readers.INPUT_SUFFIXES.values()
        for suffix in suffixes
        for p in glob.glob(os.path.join(data_dir, "**", f"*{suffix}"), recursive=True)
        if "labels" not in os.path.relpath(p, data_dir).split(os.sep)
    )
    if not paths:
        raise FileNotFoundError(f"{data_dir}: no wafer files")
    frames = []
    for path in paths:
        for wafer in readers.reader_for_path(path)(path):
            dies = wafer.dies
            tests = [c for c in dies.columns if is_test_feature(c)]
            frame = dies[["x", "y", *tests]].copy()
            frame["lot_id"], frame["wafer_id"] = wafer.lot_id, wafer.wafer_id
            frames.append(frame)
    dies = pd.concat(frames, ignore_index=True)
    label_files = sorted(glob.glob(os.path.join(data_dir, "**", "labels", "*.parquet"), recursive=True))
    labels = pd.concat([pd.read_parquet(p) for p in label_files], ignore_index=True)
    labels = labels[["lot_id", "wafer_id", "x", "y", "ft_fail"]]
    for key in ("lot_id", "wafer_id"):
        dies[key], labels[key] = dies[key].astype(str), labels[key].astype(str)
    return dies.merge(labels, on=["lot_id", "wafer_id", "x", "y"], how="inner")


def fit_and_score(joined: pd.DataFrame, splits: dict[str, list[str]], epochs: int, batch_size: int, seed: int) -> dict:
    """Standardise, fit the MLP with early stopping on validation, score the test split."""
    import keras
    from sklearn.metrics import roc_auc_score

    from data.program import is_test_feature
    from models.model import ModelInputs, build_model, get_hyperparameters

    keras.utils.set_random_seed(seed)
    columns = ["x", "y", *sorted(c for c in joined.columns if is_test_feature(c))]
    parts = {name: joined[joined["lot_id"].isin(set(lots))] for name, lots in splits.items()}
    train = parts["train"][columns].to_numpy(np.float32)
    mean, std = np.nanmean(train, axis=0), np.nanstd(train, axis=0)
    std = np.where(std > 0, std, 1.0)

    def inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        x = np.nan_to_num((frame[columns].to_numpy(np.float32) - mean) / std, nan=0.0)
        return {name: x[:, i : i + 1] for i, name in enumerate(columns)}

    x = {name: inputs(frame) for name, frame in parts.items()}
    y = {name: frame["ft_fail"].to_numpy(np.float32) for name, frame in parts.items()}
    rate = float(y["train"].mean())
    spec = ModelInputs(dense=tuple(columns), categorical={})
    model = build_model(get_hyperparameters(), spec, np.log(rate / (1 - rate)))
    start = time.perf_counter()
    history = model.fit(
        x["train"],
        y["train"],
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x["validation"], y["validation"]),
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=3, restore_best_weights=True)],
        verbose=0,
    )
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    logits = model.predict(x["test"], batch_size=4096, verbose=0).reshape(-1)
    probability = 1.0 / (1.0 + np.exp(-logits))
    return {
        "fit_s": fit_s,
        "score_s": time.perf_counter() - start,
        "epochs_run": len(history.history["loss"]),
        "dies": {name: int(len(v)) for name, v in y.items()},
        "test_fails": int(y["test"].sum()),
        "test_auc": float(roc_auc_score(y["test"], probability)),
        "test_calibration": float(probability.mean() / max(y["test"].mean(), 1e-12)),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a generated or tester dataset (wafer files and labels/)")
    parser.add_argument("--splits", required=True, help="JSON file of {split: [lot ids]}: train, validation, test")
    parser.add_argument("--epochs", type=int, default=12, help="most epochs (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="the pipeline's default (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="Keras seed (default %(default)s)")
    parser.add_argument("--out", help="also write the result here as JSON")
    args = parser.parse_args(argv)
    with open(args.splits) as f:
        splits = json.load(f)
    missing = {"train", "validation", "test"} - set(splits)
    if missing:
        raise ValueError(f"{args.splits}: no lots for split(s) {sorted(missing)}")
    start = time.perf_counter()
    joined = read_dataset(args.data_dir)
    read_s = time.perf_counter() - start
    result = {"read_s": read_s, **fit_and_score(joined, splits, args.epochs, args.batch_size, args.seed)}
    result["wall_s"] = time.perf_counter() - start
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
