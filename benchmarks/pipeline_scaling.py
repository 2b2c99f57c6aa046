"""The pipeline against the plain way at growing dataset sizes: wall time, peak memory, test AUC.

    python benchmarks/pipeline_scaling.py [--lots 10 100] [--wafers-per-lot 5] [--out output/bench]
    python benchmarks/pipeline_scaling.py --lots 320          # the 1M-die point (make benchmark-pipeline-1m)

For each size (lots x wafers of the default WF7N product, 623 dies a wafer: 10 lots = 31k dies,
100 lots = 312k, 320 lots = 997k) it generates the dataset once (STDF, the generator's default),
then runs:
- the pipeline, `python -m pipeline.local_runner` with default options (Tuner, Trainer, Evaluator,
  exports, report) in a fresh output directory, as a child process (the default Beam profile:
  DirectRunner, multi_processing);
- the plain way, benchmarks/plain_way.py: the same files read into memory, the same MLP in Keras,
  12 epochs with early stopping, on the pipeline's own lot split (read back from its examples), so
  both are scored on the same test lots.
Memory is the peak resident set of the whole process tree (the runner plus its Beam worker
processes), sampled every 0.2 s with psutil. Per-component seconds come from MLMD's execution
timestamps; each component's peak memory is the highest sample inside its window, split into the
runner process and its children (the Beam SDK workers). The last size is re-run unchanged: every
component should be a cache hit.

Test AUC: the pipeline's is the pushed model's on the test split (run summary); the plain way's is
its own model's on the same dies. Calibration is mean prediction / mean label on those dies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import tensorflow as tf

from data.synthetic import GeneratorConfig
from data.writers import write_dataset
from pipeline.metadata import read_only_store
from pipeline.summary import latest_artifact

PLAIN_WAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plain_way.py")


def tree_rss(process: psutil.Process) -> tuple[int, int]:
    """Resident bytes of a process and of all its descendants (0 for any that exit meanwhile)."""
    own = children = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        if p.pid == process.pid:
            own = rss
        else:
            children += rss
    return own, children


def run_pipeline(output_dir: str, data_dir: str, extra: list[str]) -> dict:
    """Run the local pipeline in a child process; wall seconds, peak tree RSS and the run summary."""
    command = [
        sys.executable,
        "-m",
        "pipeline.local_runner",
        "--output-dir",
        output_dir,
        "--data-dir",
        data_dir,
        *extra,
    ]
    wall, peak, samples = run_measured(command, os.path.join(output_dir, "benchmark.log"))
    with open(os.path.join(output_dir, "run_summary.json")) as f:
        summary = json.load(f)
    return {"wall_s": wall, "peak_tree_mib": peak / 2**20, "summary": summary, "samples": samples}


def run_measured(command: list[str], log_path: str) -> tuple[float, int, list[tuple[float, int, int]]]:
    """Run a command as a child process: wall seconds, the peak resident bytes of its process tree,
    and the samples (unix time, the process's own bytes, its descendants' bytes), every 0.2 s."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    samples = []
    with open(log_path, "ab") as log:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process = psutil.Process(child.pid)
        while child.poll() is None:
            samples.append((time.time(), *tree_rss(process)))
            time.sleep(0.2)
        wall = time.perf_counter() - start
    if child.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({child.returncode}); see {log_path}")
    return wall, max((own + children for _, own, children in samples), default=0), samples


def split_lots(output_dir: str, pipeline_name: str = "waferflow") -> dict[str, list[str]]:
    """The lots of each split of the pipeline's newest ExampleGen output (its lot-hash split)."""
    store = read_only_store(os.path.join(output_dir, "metadata", f"{pipeline_name}.sqlite"))
    examples = latest_artifact(store, pipeline_name, "WaferExampleGen", "Examples")
    lots = {}
    for split in ("train", "validation", "test"):
        files = tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096)
        spec = {"lot_id": tf.io.FixedLenFeature([], tf.string)}
        found: set[str] = set()
        for batch in dataset.map(lambda records, spec=spec: tf.io.parse_example(records, spec)["lot_id"]):
            found.update(v.decode() for v in np.unique(batch.numpy()))
        lots[split] = sorted(found)
    return lots


def run_plain_way(data_dir: str, lots: dict[str, list[str]], out_dir: str) -> dict:
    """benchmarks/plain_way.py on the same files and lot split, measured like the pipeline."""
    os.makedirs(out_dir, exist_ok=True)
    splits_path, result_path = os.path.join(out_dir, "splits.json"), os.path.join(out_dir, "plain_way.json")
    with open(splits_path, "w") as f:
        json.dump(lots, f)
    command = [sys.executable, PLAIN_WAY, "--data-dir", data_dir, "--splits", splits_path, "--out", result_path]
    wall, peak, _ = run_measured(command, os.path.join(out_dir, "plain_way.log"))
    with open(result_path) as f:
        result = json.load(f)
    return {**result, "wall_s": wall, "peak_tree_mib": peak / 2**20}


def component_windows(output_dir: str, pipeline_name: str = "waferflow") -> dict[str, tuple[float, float]]:
    """(start, end) in unix seconds of each component's execution in the latest run, from MLMD."""
    store = read_only_store(os.path.join(output_dir, "metadata", f"{pipeline_name}.sqlite"))
    run = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: (c.create_time_since_epoch, c.id))
    windows = {}
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: (e.create_time_since_epoch, e.id))
    for execution in executions:
        node = next(c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node")
        windows[node.split(".")[-1]] = (
            execution.create_time_since_epoch / 1000,
            execution.last_update_time_since_epoch / 1000,
        )
    return windows


def component_memory(
    windows: dict[str, tuple[float, float]], samples: list[tuple[float, int, int]]
) -> dict[str, dict[str, float]]:
    """Per component, the peak MiB while it ran: the whole tree, the runner process alone, and its
    child processes (the Beam SDK workers of the DirectRunner's multi_processing mode). A component
    shorter than the 0.2 s sampling interval may have no sample: left out."""
    peaks = {}
    for name, (start, end) in windows.items():
        inside = [(own, children) for t, own, children in samples if start <= t <= end]
        if inside:
            peaks[name] = {
                "tree": max(own + children for own, children in inside) / 2**20,
                "runner": max(own for own, _ in inside) / 2**20,
                "workers": max(children for _, children in inside) / 2**20,
            }
    return peaks


def format_table(rows: list[dict]) -> str:
    """Pipeline and plain way side by side per size: wall time, peak memory, test AUC and
    calibration, the ratios pipeline / plain way, and the pipeline's growth against the first size."""
    header = (
        f"{'size':<16}{'dies':>9}{'pipe s':>8}{'plain s':>8}{'x plain':>8}{'s/kdie':>8}"
        f"{'pipe MiB':>9}{'plain MiB':>10}{'x plain':>8}"
        f"{'AUC pipe':>9}{'AUC plain':>10}{'cal pipe':>9}{'cal plain':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        plain = row.get("plain")
        cells = [
            f"{row['name']:<16}{row['dies']:>9}{row['wall_s']:>8.0f}",
            f"{plain['wall_s']:>8.0f}{row['wall_s'] / plain['wall_s']:>8.2f}" if plain else f"{'-':>8}{'-':>8}",
            f"{1000 * row['wall_s'] / row['dies']:>8.2f}{row['peak_tree_mib']:>9.0f}",
            f"{plain['peak_tree_mib']:>10.0f}{row['peak_tree_mib'] / plain['peak_tree_mib']:>8.2f}"
            if plain
            else f"{'-':>10}{'-':>8}",
            f"{_figure(row.get('test_auc')):>9}{_figure(plain and plain['test_auc']):>10}",
            f"{_figure(row.get('test_calibration')):>9}{_figure(plain and plain['test_calibration']):>10}",
        ]
        lines.append("".join(cells))
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_components(rows: list[dict]) -> str:
    """Seconds and peak MiB per component (MLMD execution start to end), one column group per run;
    the plain way's steps below. MiB: whole tree / runner process / Beam worker processes."""
    names = list(dict.fromkeys(name for row in rows for name in row["component_s"]))
    columns = (f"{' ' + r['name'] + ' s':>12}{'MiB tree/runner/workers':>26}" for r in rows)
    header = f"{'component':<30}" + "".join(columns)
    lines = [header, "-" * len(header)]
    for name in names:
        cells = []
        for r in rows:
            seconds = r["component_s"].get(name)
            memory = r.get("component_mib", {}).get(name)
            cells.append(f"{seconds:>12.1f}" if seconds is not None else f"{'-':>12}")
            mib = f"{memory['tree']:.0f} / {memory['runner']:.0f} / {memory['workers']:.0f}" if memory else "-"
            cells.append(f"{mib:>26}")
        lines.append(f"{name:<30}" + "".join(cells))
    phases = list(dict.fromkeys(name for row in rows for name in row.get("trainer_phase_s", {})))
    for phase in phases:
        seconds = (r.get("trainer_phase_s", {}).get(phase) for r in rows)
        cells = (f"{'-' if s is None else f'{s:.1f}':>12}{'':>26}" for s in seconds)
        lines.append(f"{'  Trainer ' + phase:<30}" + "".join(cells))
    for step in ("read_s", "fit_s", "score_s"):
        cells = (f"{r['plain'][step]:>12.1f}{'':>26}" if r.get("plain") else f"{'-':>12}{'':>26}" for r in rows)
        lines.append(f"{'plain way ' + step[:-2]:<30}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, nargs="+", default=[10, 100], help="sizes in lots (default %(default)s)")
    parser.add_argument("--wafers-per-lot", type=int, default=5, help="(default %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default %(default)s)")
    parser.add_argument("--out", default=os.path.join("output", "bench"), help="(default %(default)s)")
    parser.add_argument("--no-cached-rerun", action="store_true", help="skip the unchanged re-run of the last size")
    parser.add_argument(
        "--runner-arg",
        action="append",
        default=[],
        help="extra pipeline.local_runner flag, repeatable (e.g. --runner-arg=--direct-num-workers=2)",
    )
    args = parser.parse_args(argv)

    rows = []
    for lots in args.lots:
        data_dir = os.path.join(args.out, f"data_{lots}lots")
        if not os.path.exists(os.path.join(data_dir, "manifest.json")):
            config = GeneratorConfig(lots=lots, wafers_per_lot=args.wafers_per_lot, seed=args.seed)
            write_dataset(config, data_dir, "stdf")
        with open(os.path.join(data_dir, "manifest.json")) as f:
            dies = json.load(f)["dies"]
        output_dir = os.path.join(args.out, f"run_{lots}lots")
        if os.path.exists(output_dir):
            raise FileExistsError(f"{output_dir} exists: a benchmark needs a fresh output directory")
        last = lots == args.lots[-1] and not args.no_cached_rerun
        for suffix, cached in [("", False), (" cached", True)] if last else [("", False)]:
            result = run_pipeline(output_dir, data_dir, args.runner_arg)
            test = result["summary"].get("test") or {}
            row = {
                "name": f"{lots} lots{suffix}",
                "lots": lots,
                "dies": dies,
                "cached": cached,
                "examples": result["summary"]["ingest"]["examples"],
                "wall_s": result["wall_s"],
                "peak_tree_mib": result["peak_tree_mib"],
                "test_auc": test.get("scores", {}).get("model", {}).get("auc", {}).get("value"),
                "test_calibration": test.get("calibration"),
                "test_dies": test.get("dies"),
                "test_fails": test.get("fails"),
                "components": result["summary"]["components"],
                # Other work on the machine skews every figure: the 1-minute load average at the end.
                "load_avg_1m": os.getloadavg()[0],
            }
            windows = component_windows(output_dir)
            row["component_s"] = {name: end - start for name, (start, end) in windows.items()}
            row["component_mib"] = component_memory(windows, result["samples"])
            # The Trainer's own phases (count, build, fit, calibrate, export), from its budget record;
            # a cache hit's record is the earlier run's, so only a Trainer that ran this time has them.
            trainer_ran = row["components"].get("Trainer") not in (None, "cached")
            training = result["summary"].get("training") or {}
            row["trainer_phase_s"] = training.get("seconds", {}) if trainer_ran else {}
            if not cached:
                plain_dir = os.path.join(args.out, f"plain_{lots}lots")
                row["plain"] = run_plain_way(data_dir, split_lots(output_dir), plain_dir)
            rows.append(row)
            print(f"{row['name']}: pipeline {row['wall_s']:.0f} s, {row['peak_tree_mib']:.0f} MiB", flush=True)
            if not cached:
                plain = row["plain"]
                print(f"{row['name']}: plain way {plain['wall_s']:.0f} s, {plain['peak_tree_mib']:.0f} MiB")
            with open(os.path.join(args.out, "pipeline_scaling.json"), "w") as f:
                json.dump(rows, f, indent=1)
    print()
    print(format_table(rows))
    print(
        "x plain: pipeline / plain way. s/kdie: pipeline seconds per thousand dies (linear cost keeps it flat). "
        "MiB: peak resident set of the process tree. AUC, cal: test split, same dies for both "
        "(cal = mean prediction / mean label)."
    )
    if rows[-1]["cached"]:
        print(f"cached re-run components: {rows[-1]['components']}")
    print()
    print(format_components(rows))
    return rows


if __name__ == "__main__":
    main()
