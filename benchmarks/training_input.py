"""The Trainer's epochs with the training split streamed from the files against held in memory.

    python benchmarks/training_input.py --run-dir output/bench/run_100lots [--epochs 4] [--repeats 2]

Takes the newest Transform outputs of a finished local run (its transformed train and validation
splits and transform graph, found through the run's MLMD) and trains the Trainer's model on them as
run_fn does (default hyperparameters, the MirroredStrategy, the mixed precision policy, batch 256,
the validation split cached, seeded), `--epochs` epochs in one `fit`, once per way, alternating
`--repeats` times so that the machine's drift hits both alike:
- stream (the baseline, `--train-memory-mib 0`): `models/training.input_fn`, the gzipped records
  re-read and parsed every epoch, shuffled within TFXIO's window of 10,000 records;
- memory (the default): `models/training.train_split` reads and parses the split once and each
  epoch is a seeded permutation of every die, gathered a batch at a time.
Prints per way and repeat the read (the pass that counts the split, which the in-memory way also
uses to fill its arrays), the fit seconds, seconds per epoch and the last validation AUC, and the
median fit ratio memory / stream.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import keras
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import DataAccessor
from tfx_bsl.public import tfxio

from models import model, training
from pipeline.metadata import read_only_store
from pipeline.summary import latest_artifact


def _factory(file_pattern, options, schema):
    return tfxio.TFExampleRecord(file_pattern=file_pattern, schema=schema).TensorFlowDataset(options)


ACCESSOR = DataAccessor(tf_dataset_factory=_factory, record_batch_factory=None, data_view_decode_fn=None)


def transform_outputs(run_dir: str, pipeline_name: str = "waferflow") -> tuple[str, str]:
    """(transform graph directory, transformed examples directory) of the run's newest Transform."""
    store = read_only_store(os.path.join(run_dir, "metadata", f"{pipeline_name}.sqlite"))
    graph = latest_artifact(store, pipeline_name, "Transform", "TransformGraph")
    examples = latest_artifact(store, pipeline_name, "Transform", "Examples")
    if graph is None or examples is None:
        raise FileNotFoundError(f"{run_dir}: no Transform outputs in its MLMD")
    return graph.uri, examples.uri


def one_run(way: str, graph_dir: str, examples_dir: str, epochs: int, batch_size: int, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    output = tft.TFTransformOutput(graph_dir)
    train_files = [os.path.join(examples_dir, "Split-train", "*")]
    eval_files = [os.path.join(examples_dir, "Split-validation", "*")]
    start = time.perf_counter()
    split = training.train_split(
        train_files, ACCESSOR, output, batch_size, seed, max_in_memory_bytes=0 if way == "stream" else 2**30
    )
    read = time.perf_counter() - start
    validation = training.validation_dataset(eval_files, ACCESSOR, output, batch_size)
    keras.mixed_precision.set_global_policy(training.mixed_precision_policy())
    try:
        with training.make_strategy("mirrored").scope():
            net = model.build_model(
                model.get_hyperparameters(), training.model_inputs_spec(output), output_bias=split.counts.base_logit
            )
        start = time.perf_counter()
        history = net.fit(
            split.dataset, validation_data=validation, epochs=epochs, steps_per_epoch=split.steps, verbose=0
        )
        fit = time.perf_counter() - start
    finally:
        training.reset_policy()
    return {
        "way": way,
        "in_memory": split.in_memory,
        "dies": split.counts.examples,
        "read_s": read,
        "fit_s": fit,
        "val_auc": history.history["val_auc"][-1],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a local run's output directory (holds metadata/)")
    parser.add_argument("--epochs", type=int, default=4, help="(default %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="(default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="(default %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="(default %(default)s)")
    args = parser.parse_args(argv)
    graph_dir, examples_dir = transform_outputs(args.run_dir)
    rows = []
    for repeat in range(args.repeats):
        for way in ("stream", "memory"):
            row = one_run(way, graph_dir, examples_dir, args.epochs, args.batch_size, args.seed)
            rows.append({**row, "repeat": repeat + 1})
            tf.keras.backend.clear_session()
    print(f"{rows[0]['dies']:,} training dies, {args.epochs} epochs of batch {args.batch_size}, {examples_dir}")
    print(f"{'way':<8} {'repeat':>6} {'read s':>7} {'fit s':>7} {'s/epoch':>8} {'val AUC':>8}")
    for r in rows:
        print(
            f"{r['way']:<8} {r['repeat']:>6} {r['read_s']:>7.1f} {r['fit_s']:>7.1f} "
            f"{r['fit_s'] / args.epochs:>8.2f} {r['val_auc']:>8.4f}"
        )
    fit = {way: statistics.median(r["fit_s"] for r in rows if r["way"] == way) for way in ("stream", "memory")}
    ratio = fit["memory"] / fit["stream"]
    print(f"median fit: memory {fit['memory']:.1f} s / stream {fit['stream']:.1f} s = {ratio:.2f}")
    return rows


if __name__ == "__main__":
    main()
