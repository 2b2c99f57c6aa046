"""Command line: write a synthetic wafer-sort dataset.

    python -m data.generate --out output/data --lots 10 --wafers-per-lot 5 --seed 42 [--format stdf|parquet]
"""

from __future__ import annotations

import argparse
import json

from data.synthetic import GeneratorConfig
from data.writers import WRITERS, write_dataset


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset directory to write")
    parser.add_argument("--lots", type=int, default=GeneratorConfig.lots)
    parser.add_argument("--wafers-per-lot", type=int, default=GeneratorConfig.wafers_per_lot)
    parser.add_argument("--seed", type=int, default=GeneratorConfig.seed)
    parser.add_argument("--sites", type=int, choices=(4, 8), default=GeneratorConfig.sites)
    parser.add_argument("--format", choices=sorted(WRITERS), default="stdf")
    args = parser.parse_args(argv)
    config = GeneratorConfig(
        lots=args.lots, wafers_per_lot=args.wafers_per_lot, seed=args.seed, sites=args.sites
    )
    manifest = write_dataset(config, args.out, args.format)
    summary = {k: manifest[k] for k in ("dies", "sort_pass", "sort_yield", "ft_fail", "ft_fail_rate")}
    print(json.dumps({"out": args.out, **summary}, indent=1))
    return manifest


if __name__ == "__main__":
    main()
