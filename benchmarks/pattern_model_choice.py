"""Which pattern CNN is the default: ResNet-style or MobileNet-style, BCE or focal loss, measured.

Trains each candidate on the same seeded synthetic maps (tests/pattern_maps.py, product A) with the
D4 augmentation, chooses per-class thresholds on a validation set, and scores held-out maps:
macro-F1 over the nine scored classes (8 + none), the lowest per-class recall, parameters, and CPU
latency (one map per call, p50/p99) and throughput (batches of 256) of the float32 model.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/pattern_model_choice.py [--train 2000 --epochs 15]

Figures measured on 2026-11-22 (2-core shared CPU, no GPU, float32) and the choice they support are
in models/pattern_model.py's docstring. Maps come from the test harness's drawing of the generator's
densities until the data side's map builder lands.
"""

from __future__ import annotations

import argparse
import time

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from models import pattern_metrics, pattern_model, pattern_preprocessing
from tests.pattern_maps import make_maps


def _train(maps, labels, hp, loss: str, epochs: int, batch: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = pattern_model.build_pattern_model(hp, compile_model=False)
    steps = int(np.ceil(len(maps) / batch))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps * epochs - steps, warmup_target=hp.get("learning_rate"), warmup_steps=steps
    )
    pattern_model.compile_pattern_model(model, keras.optimizers.Adam(schedule), loss)
    dataset = tf.data.Dataset.from_tensor_slices((maps, labels.astype(np.float32))).shuffle(len(maps), seed=seed)
    dataset = pattern_preprocessing.augment(dataset.repeat(), seed).batch(batch)
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=0)
    return model


def _probabilities(model: keras.Model, maps: np.ndarray) -> np.ndarray:
    return tf.sigmoid(model.predict(maps, batch_size=256, verbose=0)).numpy()


def _latency(model: keras.Model, maps: np.ndarray) -> dict[str, float]:
    call = tf.function(lambda x: model(x, training=False))
    one = tf.constant(maps[:1])
    for _ in range(20):
        call(one)
    times = []
    for i in range(300):
        start = time.perf_counter()
        call(tf.constant(maps[i % len(maps)][None]))
        times.append(time.perf_counter() - start)
    batch = tf.constant(maps[:256])
    call(batch)
    start = time.perf_counter()
    for _ in range(10):
        call(batch)
    per_second = 2560 / (time.perf_counter() - start)
    return {
        "p50_ms": 1e3 * np.percentile(times, 50),
        "p99_ms": 1e3 * np.percentile(times, 99),
        "maps_per_s": per_second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train = make_maps(args.train, "A", args.seed + 1)
    validation = make_maps(500, "A", args.seed + 2)
    test = make_maps(1000, "A", args.seed + 3)
    candidates = [("resnet", "bce"), ("mobilenet", "bce"), ("resnet", "focal")]
    columns = ("params", "macro-F1", "min recall", "p50 ms", "p99 ms", "maps/s", "train s")
    print(f"{'model':<18}" + "".join(f"{c:>{max(8, len(c) + 2)}}" for c in columns))
    for architecture, loss in candidates:
        hp = keras_tuner.HyperParameters()
        for name, value in dict(
            architecture=architecture, width=args.width, depth=3, dropout=0.2, learning_rate=3e-3
        ).items():
            hp.Fixed(name, value)
        start = time.perf_counter()
        model = _train(*train, hp, loss, args.epochs, 32, args.seed)
        seconds = time.perf_counter() - start
        thresholds = pattern_metrics.fit_thresholds(validation[1], _probabilities(model, validation[0]))
        scores = pattern_metrics.report(test[1], _probabilities(model, test[0]), thresholds)
        speed = _latency(model, test[0])
        recall = scores["recall"]
        print(
            f"{architecture + '/' + loss:<18}{model.count_params():>8}{scores['macro_f1']:>10.3f}"
            f"{min(recall.values()):>12.3f}{speed['p50_ms']:>8.2f}{speed['p99_ms']:>8.2f}"
            f"{speed['maps_per_s']:>9.0f}{seconds:>9.0f}"
        )
        print("    recall " + ", ".join(f"{k} {v:.2f}" for k, v in recall.items()))


if __name__ == "__main__":
    main()
