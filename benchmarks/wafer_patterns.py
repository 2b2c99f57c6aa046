"""Transfer between products against training from scratch, and the pattern model's serving latency.

Quality: a base model is trained on product A (WF7N, 300 mm, 11 x 9 mm dies); on product B (MX3A,
200 mm, 6.5 x 5.2 mm dies, another die grid) models are trained from n labelled wafers (n = 50,
100, 300, 1000) from scratch and by each transfer strategy of the Trainer (feature extraction,
discriminative fine-tuning, gradual unfreezing), with the Trainer's own training function
(models/pattern_trainer.train_pattern_model) and D4 augmentation. Of the n wafers, 80% train and
20% validate (early stopping and the per-class thresholds: a user with n labelled wafers has no
others); the test set is B's held-out lots, never seen by any of it. Macro-F1 (the classes present)
and per-class recall with a 95% wafer-bootstrap interval (1,000 resamples, seeded).

The maps are built as the pipeline builds them: maps-only STDF files from the generator, read by
the STDF reader, placed on each file's own geometry (data/wafer_maps.py), labels from the sidecars.

Latency: single-map p50/p99 (one thread) and batch throughput of a pushed pattern model (the
pattern pipeline's serving directory, `make run-patterns` writes one): the SavedModel's serve_map,
TF Lite float32 and int8, and ONNX Runtime, converted as the PatternExporter converts them.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/wafer_patterns.py [--quick] [--out output/bench_patterns]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from components.pattern_exporter import executor as exporter
from data.patterns import SCORED_CLASSES, labels_to_multi_hot, read_sidecar
from data.readers import READERS
from data.synthetic import GeneratorConfig
from data.wafer_maps import wafer_map_of
from data.writers import write_dataset
from models import pattern_metrics, pattern_model, pattern_preprocessing, pattern_trainer

STRATEGIES = ("scratch", "feature_extraction", "fine_tune", "gradual_unfreeze")
BATCH = 32


def generated_maps(out: str, product: str, wafers: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(maps, multi-hot labels, lot of each map) of a maps-only dataset, generated into `out` once."""
    lots = int(np.ceil(wafers / 25))
    if not os.path.exists(os.path.join(out, "manifest.json")):
        config = GeneratorConfig(
            lots=lots, wafers_per_lot=25, seed=seed, product=product, patterns=True, maps_only=True
        )
        write_dataset(config, out, "stdf")
    labels = {}
    for path in sorted(glob.glob(os.path.join(out, "patterns", "*.csv"))):
        labels.update(read_sidecar(path))
    maps, multi_hot, lot_of = [], [], []
    for path in sorted(glob.glob(os.path.join(out, "wafers", "*", "*.stdf"))):
        wafer = wafer_map_of(list(READERS["stdf"](path)))  # one file per wafer in a generated set
        maps.append(wafer.image)
        multi_hot.append(labels_to_multi_hot(labels[(wafer.lot_id, wafer.wafer_id)]))
        lot_of.append(wafer.lot_id)
    return np.stack(maps).astype(np.float32)[:wafers], np.stack(multi_hot)[:wafers], lot_of[:wafers]


def datasets(maps, labels, seed: int):
    train = tf.data.Dataset.from_tensor_slices((maps, labels.astype(np.float32))).shuffle(len(maps), seed=seed)
    train = pattern_preprocessing.augment(train.repeat(), seed).batch(BATCH)
    return train, int(np.ceil(len(maps) / BATCH))


def train(transfer, maps, labels, val, base, epochs, patience, seed) -> tuple[keras.Model, np.ndarray, float]:
    """The Trainer's training on (maps, labels), early-stopped and thresholded on `val`."""
    keras.utils.set_random_seed(seed)
    hp = pattern_model.get_hyperparameters()
    data, steps = datasets(maps, labels, seed)
    evaluation = tf.data.Dataset.from_tensor_slices((val[0], val[1].astype(np.float32))).batch(256)
    start = time.perf_counter()
    model, _ = pattern_trainer.train_pattern_model(transfer, hp, data, evaluation, steps, epochs, patience, base=base)
    seconds = time.perf_counter() - start
    _, probabilities = pattern_trainer.predict_dataset(model, evaluation)
    return model, pattern_metrics.fit_thresholds(val[1], probabilities), seconds


def probabilities_of(model: keras.Model, maps: np.ndarray) -> np.ndarray:
    return tf.sigmoid(tf.cast(model.predict(maps, batch_size=256, verbose=0), tf.float32)).numpy()


def bootstrap(labels: np.ndarray, decisions: np.ndarray, seed: int, n: int = 1000) -> dict:
    """Macro-F1 and each class's recall, with 95% intervals over wafers resampled with replacement."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, len(labels), len(labels)) for _ in range(n)]
    f1 = np.array([pattern_metrics.macro_f1(labels[r], decisions[r]) for r in rows])
    recall = pattern_metrics.per_class_recall(labels, decisions)
    return {
        "macro_f1": pattern_metrics.macro_f1(labels, decisions),
        "macro_f1_ci": [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))],
        "recall": recall,
        "support": dict(zip(SCORED_CLASSES, pattern_metrics.with_none(labels).sum(axis=0).tolist(), strict=True)),
    }


def split_target(maps, labels, n: int, seed: int):
    """The first n wafers of the target pool, 80% train / 20% validation at random (seeded)."""
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(0.8 * n)))
    return (maps[order[:cut]], labels[order[:cut]]), (maps[order[cut:]], labels[order[cut:]])


def latency(serving_dir: str, maps: np.ndarray, calibration: np.ndarray) -> list[dict]:
    """Single-map p50/p99 (one thread) and batch-256 throughput of the SavedModel and its exports."""
    versions = sorted((v for v in os.listdir(serving_dir) if v.isdigit()), key=int)
    source = os.path.join(serving_dir, versions[-1]) if versions else serving_dir
    loaded = tf.saved_model.load(source)
    serve = loaded.signatures["serve_map"]

    def saved_model(batch):
        return serve(**{exporter.MAP_KEY: tf.constant(batch)})[exporter.PROBABILITIES_KEY].numpy()

    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    def tflite(content):
        interpreter = Interpreter(model_content=content, num_threads=1)
        (key,) = interpreter.get_signature_list()
        runner = interpreter.get_signature_runner(key)
        return lambda batch: runner(**{exporter.MAP_KEY: batch})[exporter.PROBABILITIES_KEY]

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(exporter.to_onnx(loaded), options, providers=["CPUExecutionProvider"])
    runtimes = {
        "SavedModel serve_map": saved_model,
        "TF Lite float32": tflite(exporter.to_tflite(loaded)),
        "TF Lite int8": tflite(exporter.to_tflite(loaded, calibration)),
        "ONNX Runtime": lambda batch: session.run([exporter.PROBABILITIES_KEY], {exporter.MAP_KEY: batch})[0],
    }
    rows = []
    for name, run in runtimes.items():
        for i in range(20):
            run(maps[i : i + 1])
        times = []
        for i in range(min(500, len(maps))):
            start = time.perf_counter()
            run(maps[i : i + 1])
            times.append(time.perf_counter() - start)
        batch = maps[:256]
        start = time.perf_counter()
        for _ in range(5):
            run(batch)
        rows.append(
            {
                "runtime": name,
                "p50_ms": 1e3 * float(np.percentile(times, 50)),
                "p99_ms": 1e3 * float(np.percentile(times, 99)),
                "maps_per_s": 5 * len(batch) / (time.perf_counter() - start),
            }
        )
    base = rows[0]["p50_ms"]
    for row in rows:
        row["p50_vs_saved_model"] = row["p50_ms"] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/bench_patterns")
    parser.add_argument("--source-wafers", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 300, 1000])
    parser.add_argument("--test-wafers", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--serving-model",
        default="output/serving_model/waferflow-patterns-wf7n",
        help="a pushed pattern model for the latency table (skipped if missing)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sets, few epochs")
    parser.add_argument("--latency-only", action="store_true", help=argparse.SUPPRESS)  # the latency subprocess
    args = parser.parse_args()
    if args.latency_only:
        saved = np.load(os.path.join(args.out, "latency_maps.npz"))
        with open(os.path.join(args.out, "latency.json"), "w") as f:
            json.dump(latency(args.serving_model, saved["maps"].astype(np.float32), saved["calibration"]), f)
        return
    if args.quick:
        args.source_wafers, args.sizes, args.test_wafers, args.epochs, args.patience = 200, [50], 100, 3, 3
    os.makedirs(args.out, exist_ok=True)
    results: dict = {"args": vars(args), "quality": [], "latency": []}

    a_maps, a_labels, _ = generated_maps(os.path.join(args.out, "data_A"), "WF7N", args.source_wafers, args.seed + 1)
    pool = max(args.sizes)
    b_maps, b_labels, b_lots = generated_maps(
        os.path.join(args.out, "data_B"), "MX3A", pool + args.test_wafers, args.seed + 2
    )
    # B's test set: its last lots, never used to train, early-stop or threshold anything.
    test = (b_maps[pool:], b_labels[pool:])
    assert not set(b_lots[:pool]) & set(b_lots[pool:]) or len(set(b_lots)) == 1, "a lot straddles target and test"
    cut = int(0.8 * len(a_maps))
    base, _, base_seconds = train(
        "scratch",
        a_maps[:cut],
        a_labels[:cut],
        (a_maps[cut:], a_labels[cut:]),
        None,
        args.epochs,
        args.patience,
        args.seed,
    )
    print(f"base model on product A: {cut} training maps, {base_seconds:.0f} s")
    for n in args.sizes:
        (t_maps, t_labels), val = split_target(b_maps, b_labels, n, args.seed)
        for strategy in args.strategies:
            model, thresholds, seconds = train(
                strategy,
                t_maps,
                t_labels,
                val,
                base if strategy != "scratch" else None,
                args.epochs,
                args.patience,
                args.seed,
            )
            decisions = pattern_metrics.predict(probabilities_of(model, test[0]), thresholds)
            scores = bootstrap(test[1], decisions, args.seed)
            row = {"target_wafers": n, "strategy": strategy, "train_s": seconds, "test_wafers": len(test[1]), **scores}
            results["quality"].append(row)
            worst = min((v, k) for k, v in scores["recall"].items() if v == v)
            lo, hi = scores["macro_f1_ci"]
            print(
                f"n={n:5d} {strategy:<19} macro-F1 {scores['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}]  "
                f"lowest recall {worst[1]} {worst[0]:.2f}  ({seconds:.0f} s)",
                flush=True,
            )
            with open(os.path.join(args.out, "wafer_patterns.json"), "w") as f:
                json.dump(results, f, indent=1)
    if os.path.isdir(args.serving_model):
        # One core for TensorFlow too: its thread pools are fixed when it starts, so a process of its own.
        np.savez(os.path.join(args.out, "latency_maps.npz"), maps=test[0], calibration=a_maps[:200])
        env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
        subprocess.run(
            [sys.executable, __file__, "--latency-only", "--out", args.out, "--serving-model", args.serving_model],
            check=True,
            env=env,
        )
        with open(os.path.join(args.out, "latency.json")) as f:
            results["latency"] = json.load(f)
        print(f"{'runtime':<22}{'p50 ms':>9}{'p99 ms':>9}{'maps/s':>10}{'p50 / SavedModel':>18}")
        for row in results["latency"]:
            print(
                f"{row['runtime']:<22}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['maps_per_s']:>10.0f}"
                f"{row['p50_vs_saved_model']:>18.2f}"
            )
    else:
        print(f"latency: no pushed pattern model at {args.serving_model} (run `make run-patterns` first)")
    with open(os.path.join(args.out, "wafer_patterns.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
