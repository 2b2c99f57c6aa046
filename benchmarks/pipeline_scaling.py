"""End-to-end pipeline wall time and peak memory against dataset size, plus a fully cached re-run.

    python benchmarks/pipeline_scaling.py [--lots 3 6 18] [--wafers-per-lot 5] [--out output/bench]

Each size runs `python -m pipeline.local_runner` in a fresh output directory as a child process (the
default Beam profile: DirectRunner, multi_processing) with a small training budget, so the figures
are dominated by the data-parallel components. Memory is the peak resident set of the whole process
tree (the runner plus its Beam worker processes), sampled every 0.2 s with psutil, beside the largest
single process as the kernel reports it (getrusage RUSAGE_CHILDREN). Each row is compared with the
row before it (growth per step) and with the smallest dataset (the baseline). The last row re-runs
the largest size unchanged: every component should be a cache hit.

The smallest size is 3 lots: train, validation and test are split by lot (dealt in proportion,
at least one lot each), so fewer lots leave a split empty.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import psutil
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from data.synthetic import GeneratorConfig
from data.writers import write_dataset

# A small, fixed training budget: the question is how the data path scales, not the model.
TRAINING_FLAGS = (
    "--epochs",
    "2",
    "--tuner-trials",
    "1",
    "--tuner-epochs",
    "1",
    "--input-format",
    "parquet",
)


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (0 for any that exit meanwhile)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


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
        *TRAINING_FLAGS,
        *extra,
    ]
    log_path = os.path.join(output_dir, "benchmark.log")
    os.makedirs(output_dir, exist_ok=True)
    peak = 0
    with open(log_path, "ab") as log:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process = psutil.Process(child.pid)
        while child.poll() is None:
            peak = max(peak, tree_rss(process))
            time.sleep(0.2)
        wall = time.perf_counter() - start
    if child.returncode:
        raise RuntimeError(f"pipeline failed ({child.returncode}); see {log_path}")
    with open(os.path.join(output_dir, "run_summary.json")) as f:
        summary = json.load(f)
    return {"wall_s": wall, "peak_tree_mib": peak / 2**20, "summary": summary}


def component_seconds(output_dir: str, pipeline_name: str = "waferflow") -> dict[str, float]:
    """Seconds each component's execution took in the latest run, from MLMD's execution timestamps."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(output_dir, "metadata", f"{pipeline_name}.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    run = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: (c.create_time_since_epoch, c.id))
    seconds = {}
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: (e.create_time_since_epoch, e.id))
    for execution in executions:
        node = next(c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node")
        elapsed = execution.last_update_time_since_epoch - execution.create_time_since_epoch
        seconds[node.split(".")[-1]] = elapsed / 1000
    return seconds


def max_child_rss_mib() -> float:
    """Largest resident set of any finished child so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def format_table(rows: list[dict]) -> str:
    """Rows side by side, each with ratios to the previous row and to the first (baseline) row."""
    header = (
        f"{'run':<22}{'dies':>8}{'examples':>10}{'wall s':>9}{'x prev':>8}{'x base':>8}"
        f"{'peak tree MiB':>15}{'x prev':>8}{'x base':>8}{'max proc MiB':>14}"
    )
    lines = [header, "-" * len(header)]
    base = rows[0]
    for i, row in enumerate(rows):
        prev = rows[i - 1] if i else row
        lines.append(
            f"{row['name']:<22}{row['dies']:>8}{row['examples']:>10}{row['wall_s']:>9.1f}"
            f"{row['wall_s'] / prev['wall_s']:>8.2f}{row['wall_s'] / base['wall_s']:>8.2f}"
            f"{row['peak_tree_mib']:>15.0f}{row['peak_tree_mib'] / prev['peak_tree_mib']:>8.2f}"
            f"{row['peak_tree_mib'] / base['peak_tree_mib']:>8.2f}{row['max_proc_mib']:>14.0f}"
        )
    return "\n".join(lines)


def format_components(rows: list[dict]) -> str:
    """Seconds per component (MLMD execution start to end), one column per run."""
    names = list(dict.fromkeys(name for row in rows for name in row["component_s"]))
    header = f"{'component s':<30}" + "".join(f"{r['name']:>22}" for r in rows)
    lines = [header, "-" * len(header)]
    for name in names:
        cells = (f"{r['component_s'][name]:.1f}" if name in r["component_s"] else "-" for r in rows)
        lines.append(f"{name:<30}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, nargs="+", default=[3, 6, 18])
    parser.add_argument("--wafers-per-lot", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=os.path.join("output", "bench"))
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
            write_dataset(GeneratorConfig(lots=lots, wafers_per_lot=args.wafers_per_lot, seed=args.seed), data_dir)
        with open(os.path.join(data_dir, "manifest.json")) as f:
            dies = json.load(f)["dies"]
        output_dir = os.path.join(args.out, f"run_{lots}lots")
        if os.path.exists(output_dir):
            raise FileExistsError(f"{output_dir} exists: a benchmark needs a fresh output directory")
        runs = [("", False), (" cached re-run", True)] if lots == args.lots[-1] else [("", False)]
        for suffix, cached in runs:
            result = run_pipeline(output_dir, data_dir, args.runner_arg)
            rows.append(
                {
                    "name": f"{lots} lots{suffix}",
                    "lots": lots,
                    "dies": dies,
                    "cached": cached,
                    "examples": result["summary"]["ingest"]["examples"],
                    "wall_s": result["wall_s"],
                    "peak_tree_mib": result["peak_tree_mib"],
                    "max_proc_mib": max_child_rss_mib(),
                    "components": result["summary"]["components"],
                    "component_s": component_seconds(output_dir),
                }
            )
            print(f"{rows[-1]['name']}: {result['wall_s']:.1f} s, {result['peak_tree_mib']:.0f} MiB", flush=True)
    print()
    print(format_table(rows))
    print(
        "x prev: growth over the previous size (the cached re-run: over the same size's first run); "
        "x base: over the first row. max proc MiB: largest single process so far (getrusage)."
    )
    cached = rows[-1]
    print(f"cached re-run components: {cached['components']}")
    print()
    print(format_components(rows))
    with open(os.path.join(args.out, "pipeline_scaling.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
