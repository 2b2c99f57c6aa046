"""Serving speed: SavedModel vs TF Lite vs ONNX Runtime on the same held-out dies, in one run.

    .venv/bin/python benchmarks/serving.py [--output-dir output] [--pipeline-name waferflow-wf7n]
                                           [--batch 1024] [--latency-calls 500]
    .venv/bin/python benchmarks/serving.py --train     # trains a small model into a temp dir first

Takes the exports of a pipeline run (`make run` writes them under output/: the pushed SavedModel,
TFLiteExporter's model.tflite / model_int8.tflite, OnnxExporter's model.onnx) and the eval split
of its examples, builds the dense input in the model's own column order (stored with it,
models/dense_signature.py), then measures for each runtime:

- batch throughput: dies per second scoring batches of `--batch` dies (inputs prepared beforehand:
  serialized tf.Examples for serving_default, the dense float matrix for the others);
- single-die latency: p50 and p99 of `--latency-calls` one-die calls;
- achieved GFLOP/s: throughput x the network's FLOPs per die (2 x multiply-adds of its dense layers,
  read from the TF Lite model), as a share of this machine's float32 matrix-multiply peak, measured
  in the same run with numpy and TensorFlow (the better of the two is the peak).

Ratios are against `SavedModel serving_default`, what TF Serving runs. Every runtime may use every
core (TF's default, TF Lite and onnxruntime given os.cpu_count() threads).
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from models import dense_signature, features
from models.scoring import OnnxScorer, SavedModelScorer, Scorer, TFLiteScorer
from pipeline.config import RunConfig


def matmul_peak_gflops(n: int = 2048, repeat: int = 5) -> dict[str, float]:
    """Best-of-`repeat` float32 n x n matmul rate, numpy and TensorFlow."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    flops = 2.0 * n**3
    result = {}
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    result["numpy"] = flops / best / 1e9
    ta, tb = tf.constant(a), tf.constant(b)
    tf.linalg.matmul(ta, tb).numpy()  # warm up
    best = min(_timed(lambda: tf.linalg.matmul(ta, tb).numpy()) for _ in range(repeat))
    result["tensorflow"] = flops / best / 1e9
    return result


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_die(tflite_path: str) -> float:
    """2 x multiply-adds of the fully connected layers (the Transform's elementwise ops are noise)."""
    with open(tflite_path, "rb") as f:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(f.read()))
    total = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "FULLY_CONNECTED":
                out_units, in_units = subgraph.tensors[op.inputs[1]].shape
                total += 2 * int(out_units) * int(in_units)
    return float(total)


def throughput(scorer: Scorer, prepared, dies: int, min_seconds: float) -> float:
    """Dies per second over repeated batch calls (at least `min_seconds`, at least 3 calls)."""
    scorer.predict(prepared)  # warm up: graph tracing, allocation
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_seconds:
        scorer.predict(prepared)
        calls += 1
    return dies * calls / (time.perf_counter() - start)


def latency_ms(scorer: Scorer, singles: list, calls: int) -> tuple[float, float]:
    """p50 and p99 of one-die calls, in milliseconds."""
    for prepared in singles[:10]:
        scorer.predict(prepared)
    times = []
    for i in range(calls):
        prepared = singles[i % len(singles)]
        start = time.perf_counter()
        scorer.predict(prepared)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def find_exports(output_dir: str, pipeline_name: str) -> dict[str, str]:
    """Newest pushed SavedModel, TF Lite and ONNX exports and examples of a pipeline run."""
    root = os.path.join(output_dir, "pipeline_root", pipeline_name)

    def newest(pattern: str) -> str | None:
        paths = [p for p in glob.glob(pattern) if os.path.exists(p)]
        return max(paths, key=os.path.getmtime) if paths else None

    found = {
        "saved_model": newest(os.path.join(output_dir, "serving_model", pipeline_name, "*")),
        "tflite": newest(os.path.join(root, "TFLiteExporter", "tflite_model", "*", "model.tflite")),
        "tflite_int8": newest(os.path.join(root, "TFLiteExporter", "tflite_model", "*", "model_int8.tflite")),
        "onnx": newest(os.path.join(root, "OnnxExporter", "onnx_model", "*", "model.onnx")),
        "examples": newest(os.path.join(root, "WaferExampleGen", "examples", "*")),
    }
    missing = [k for k in ("saved_model", "tflite", "onnx", "examples") if not found[k]]
    if missing:
        raise SystemExit(
            f"{output_dir} has no {missing} for pipeline {pipeline_name!r}: run `make run` (or pass --train) "
            "first, or name the run's pipeline with --pipeline-name"
        )
    return found


def train_small(workdir: str) -> tuple[str, str]:
    """A small pipeline run (about 5,000 dies, int8 export on) into `workdir`; returns its output
    directory and pipeline name."""
    from pipeline import local_runner

    config = RunConfig(
        output_dir=workdir,
        report=False,
        lots=4,
        wafers_per_lot=2,
        input_format="parquet",
        epochs=8,
        enable_tuning=False,
        min_auc=0.0,
        tflite_int8=True,
        direct_running_mode="in_memory",
        direct_num_workers=1,
    )
    summary = local_runner.run(config)
    if not summary["pushed_model"]:
        raise SystemExit(f"the small run pushed no model: {summary}")
    return workdir, config.pipeline_name


def held_out_records(examples_uri: str, limit: int) -> list[bytes]:
    files = sorted(glob.glob(os.path.join(examples_uri, "Split-test", "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    return [r.numpy() for r in dataset]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="output", help="a pipeline run's output directory")
    parser.add_argument(
        "--pipeline-name",
        default=RunConfig().pipeline_name,
        help="the run's pipeline (default: that of `make run`; `waferflow` for a run on --data-dir)",
    )
    parser.add_argument("--train", action="store_true", help="train a small model into a temp dir first")
    parser.add_argument("--batch", type=int, default=1024, help="dies per batch call")
    parser.add_argument("--latency-calls", type=int, default=500)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="minimum timing per throughput figure")
    args = parser.parse_args(argv)

    if args.train:
        output_dir, pipeline_name = train_small(tempfile.mkdtemp(prefix="waferflow-bench-"))
    else:
        output_dir, pipeline_name = args.output_dir, args.pipeline_name
    exports = find_exports(output_dir, pipeline_name)
    records = held_out_records(exports["examples"], args.batch)
    records = (records * (args.batch // len(records) + 1))[: args.batch]  # tile a small eval split
    columns = dense_signature.read_columns(exports["saved_model"])
    matrix = dense_signature.dense_matrix_from_examples(records, columns)
    threads = os.cpu_count() or 1

    runtimes: list[tuple[Scorer, object, list]] = []
    default = SavedModelScorer(exports["saved_model"])
    runtimes.append((default, tf.constant(records), [tf.constant(records[i : i + 1]) for i in range(64)]))
    dense = SavedModelScorer(exports["saved_model"], dense_signature.DENSE_SIGNATURE)
    runtimes.append((dense, tf.constant(matrix), [tf.constant(matrix[i : i + 1]) for i in range(64)]))
    singles = [matrix[i : i + 1] for i in range(64)]
    tflite = TFLiteScorer(exports["tflite"], num_threads=threads)
    tflite.name = "TF Lite float32"
    runtimes.append((tflite, matrix, singles))
    if exports["tflite_int8"]:
        int8 = TFLiteScorer(exports["tflite_int8"], num_threads=threads)
        int8.name = "TF Lite int8"
        runtimes.append((int8, matrix, singles))
    onnx = OnnxScorer(exports["onnx"], intra_op_threads=threads)
    onnx.name = "ONNX Runtime float32"
    runtimes.append((onnx, matrix, singles))

    reference = default.predict(tf.constant(records))
    flops = flops_per_die(exports["tflite"])
    peak = matmul_peak_gflops()
    best_peak = max(peak.values())

    rows = []
    for scorer, prepared, one_die in runtimes:
        agreement = float(np.abs(scorer.predict(prepared) - reference).max())
        rate = throughput(scorer, prepared, len(records), args.min_seconds)
        p50, p99 = latency_ms(scorer, one_die, args.latency_calls)
        rows.append((scorer.name, rate, p50, p99, agreement))

    print(
        f"model: {exports['saved_model']}  ({len(columns)} input columns, "
        f"{flops:,.0f} FLOPs per die in its dense layers)"
    )
    print(f"inputs: {len(records)} held-out dies from {exports['examples']}, {features.PROBABILITY_KEY} compared")
    print(
        f"float32 matmul peak (2048x2048, best of 5): numpy {peak['numpy']:.1f} GFLOP/s, "
        f"TensorFlow {peak['tensorflow']:.1f} GFLOP/s; {threads} CPU threads"
    )
    print()
    header = (
        f"{'runtime':<32}{'dies/s':>12}{'x base':>8}{'GFLOP/s':>9}{'of peak':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'p50 x base':>11}{'max |dp|':>10}"
    )
    print(header)
    print("-" * len(header))
    base_rate, base_p50 = rows[0][1], rows[0][2]
    for name, rate, p50, p99, agreement in rows:
        gflops = rate * flops / 1e9
        print(
            f"{name:<32}{rate:>12,.0f}{rate / base_rate:>8.2f}{gflops:>9.3f}{gflops / best_peak:>9.2%}"
            f"{p50:>9.3f}{p99:>9.3f}{base_p50 / p50:>11.2f}{agreement:>10.1e}"
        )
    print()
    print("x base: throughput / SavedModel serving_default's; p50 x base: its p50 / this p50 (higher is faster);")
    print("of peak: achieved GFLOP/s / the float32 matmul peak; max |dp|: vs serving_default on the same dies.")


if __name__ == "__main__":
    main()
