"""Maps-only generator throughput: wafers per second written, per product and format, in one run.

    .venv/bin/python benchmarks/map_generation.py [--lots 40 --wafers-per-lot 25 --repeat 1]

Writes a maps-only pattern dataset (`waferflow generate --maps-only`: bins, no parametric tests)
into a temporary directory for each product and format and prints wafers per second, with the full
generator's pattern mode (parametric tests, sort, final-test labels) on a few wafers as the baseline.
The best of `--repeat` timings is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from data.products import PRODUCTS
from data.synthetic import GeneratorConfig
from data.writers import write_dataset


def wafers_per_second(config: GeneratorConfig, fmt: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            write_dataset(config, out, fmt)
            best = min(best, time.perf_counter() - start)
    return config.lots * config.wafers_per_lot / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=40, help="lots per dataset (default %(default)s)")
    parser.add_argument("--wafers-per-lot", type=int, default=25, help="wafers per lot (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="timings per case, best reported (default %(default)s)")
    args = parser.parse_args()
    print(f"{'product':8} {'mode':10} {'format':8} {'wafers':>7} {'wafers/s':>9} {'x full':>7}")
    for product in PRODUCTS:
        full = GeneratorConfig(lots=2, wafers_per_lot=5, seed=1, product=product, patterns=True)
        baseline = wafers_per_second(full, "stdf", args.repeat)
        print(f"{product:8} {'full':10} {'stdf':8} {10:7d} {baseline:9.1f} {1.0:7.1f}")
        maps = dataclasses.replace(full, lots=args.lots, wafers_per_lot=args.wafers_per_lot, maps_only=True)
        for fmt in ("stdf", "parquet"):
            rate = wafers_per_second(maps, fmt, args.repeat)
            print(
                f"{product:8} {'maps-only':10} {fmt:8} {args.lots * args.wafers_per_lot:7d} {rate:9.1f} "
                f"{rate / baseline:7.1f}"
            )


if __name__ == "__main__":
    main()
