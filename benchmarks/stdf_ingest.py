"""STDF ingest throughput: our reader (data/stdf/reader.py) against pystdf, on the same files, in one run.

    .venv/bin/python benchmarks/stdf_ingest.py [--lots 2 --wafers-per-lot 3 --cpu-type 2 --repeat 3]

Generates wafers with the synthetic generator, writes them as STDF V4 (data/stdf/writer.py) into a
temporary directory, then reads every file with each reader and prints records per second and dies
per second side by side, as a ratio against pystdf (the baseline).

What each reader does per file:
- waferflow: everything ingest needs: decode, scale, resolve retests, build the dies DataFrame.
- pystdf: decode every record into field lists and count them; no DataFrame (so the baseline is
  flattered, not handicapped).
- stdfast: iterate raw record dicts, if it can read the files at all (0.2.1 cannot: see docs/stdf.md).
The best of `--repeat` timings per reader is reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

from pystdf.IO import Parser

from data.stdf.reader import read_stdf
from data.stdf.writer import write_stdf_wafer
from data.synthetic import GeneratorConfig, generate


def read_with_waferflow(path: str) -> tuple[int, int]:
    """(records, dies) of one file with our reader."""
    records = dies = 0
    for wafer in read_stdf(path):
        records += sum(wafer.records.values())
        dies += len(wafer.dies) + wafer.superseded
    return records, dies


def read_with_pystdf(path: str) -> tuple[int, int]:
    """(records, dies) of one file with pystdf, counting PRRs as dies."""
    counts = {"records": 0, "dies": 0}

    class Counter:
        def after_send(self, source, data):
            counts["records"] += 1
            if data[0].__class__.__name__ == "Prr":
                counts["dies"] += 1

    with open(path, "rb") as f:
        parser = Parser(inp=f)
        parser.addSink(Counter())
        parser.parse()
    return counts["records"], counts["dies"]


def read_with_stdfast(path: str) -> tuple[int, int]:
    """(records, dies) of one file with stdfast's raw record iterator."""
    import stdfast

    records = dies = 0
    for record in stdfast.iter_raw_records(path):
        records += 1
        dies += record["record_type"] == "PRR"
    return records, dies


def best_time(reader: Callable[[str], tuple[int, int]], files: list[str], repeat: int) -> tuple[float, int, int]:
    """Fastest of `repeat` passes over all files: (seconds, records, dies)."""
    best = float("inf")
    records = dies = 0
    for _ in range(repeat):
        start = time.perf_counter()
        records = dies = 0
        for path in files:
            r, d = reader(path)
            records, dies = records + r, dies + d
        best = min(best, time.perf_counter() - start)
    return best, records, dies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=2)
    parser.add_argument("--wafers-per-lot", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cpu-type", type=int, default=2, choices=(1, 2), help="1 big-endian, 2 little-endian")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        config = GeneratorConfig(lots=args.lots, wafers_per_lot=args.wafers_per_lot, seed=args.seed)
        files = [write_stdf_wafer(w, directory, cpu_type=args.cpu_type) for w in generate(config)]
        size_mb = sum(os.path.getsize(f) for f in files) / 1e6
        print(f"{len(files)} STDF files (CPU_TYPE {args.cpu_type}), {size_mb:.1f} MB, best of {args.repeat}")

        results = {}
        for name, reader in (
            ("pystdf", read_with_pystdf),
            ("waferflow", read_with_waferflow),
            ("stdfast", read_with_stdfast),
        ):
            try:
                results[name] = best_time(reader, files, args.repeat)
            except BaseException as error:  # stdfast's Rust panics are BaseException, not Exception
                if isinstance(error, KeyboardInterrupt):
                    raise
                results[name] = f"cannot read these files: {type(error).__name__}: {str(error)[:80]}"

    base_seconds, base_records, base_dies = results["pystdf"]
    print(f"{'reader':<10} {'seconds':>8} {'records':>9} {'dies':>6} {'records/s':>11} {'dies/s':>9} {'vs pystdf':>9}")
    for name, result in results.items():
        if isinstance(result, str):
            print(f"{name:<10} {result}")
            continue
        seconds, records, dies = result
        if (records, dies) != (base_records, base_dies):
            print(f"{name:<10} counts differ from pystdf: {records} records, {dies} dies")
        print(
            f"{name:<10} {seconds:>8.3f} {records:>9} {dies:>6} {records / seconds:>11,.0f} {dies / seconds:>9,.0f} "
            f"{base_seconds / seconds:>8.1f}x"
        )


if __name__ == "__main__":
    main()
