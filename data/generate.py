"""Command line: write a synthetic wafer-sort dataset of one product.

python -m data.generate --out output/data [--product WF7N|MX3A] [--lots 10] [--wafers-per-lot 5]
    [--seed 42] [--format stdf|parquet] [--program-revision 1.0]
"""

from __future__ import annotations

import argparse
import json

from data.products import DEFAULT_PRODUCT, PRODUCTS
from data.synthetic import GeneratorConfig
from data.writers import WRITERS, write_dataset


def _product_help() -> str:
    lines = []
    for name, p in PRODUCTS.items():
        features = sum(len(t.features) for t in p.program)
        lines.append(
            f"{name}: {len(p.program)} tests ({features} features), {p.geometry.diameter_mm:g} mm wafer, "
            f"{p.sites} sites, good hard bins {list(p.good_hard_bins)}"
        )
    return "which product to generate (default %(default)s). " + "; ".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line's options, each with its help."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, each with its help and default (also `waferflow generate`'s, pipeline/cli.py)."""
    parser.add_argument(
        "--out", required=True, help="dataset directory to write (wafers/, labels/, manifest.json); required"
    )
    parser.add_argument("--product", choices=sorted(PRODUCTS), default=DEFAULT_PRODUCT, help=_product_help())
    parser.add_argument("--lots", type=int, default=GeneratorConfig.lots, help="number of lots (default %(default)s)")
    parser.add_argument(
        "--wafers-per-lot",
        type=int,
        default=GeneratorConfig.wafers_per_lot,
        help="wafers in each lot (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=GeneratorConfig.seed,
        help="seed of everything random; the same seed gives the same bytes (default %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=sorted(WRITERS),
        default="stdf",
        help="wafer file format: binary STDF V4 as testers write it, or columnar Parquet (default %(default)s)",
    )
    parser.add_argument(
        "--program-revision",
        default=GeneratorConfig.program_revision,
        help="test program revision written as MIR JOB_REV (default %(default)s)",
    )


def main(argv: list[str] | None = None) -> dict:
    """Write the dataset the command line asks for; print a summary and return the manifest."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> dict:
    """Write the dataset parsed options ask for; print a summary and return the manifest."""
    config = GeneratorConfig(
        lots=args.lots,
        wafers_per_lot=args.wafers_per_lot,
        seed=args.seed,
        product=args.product,
        program_revision=args.program_revision,
    )
    manifest = write_dataset(config, args.out, args.format)
    summary = {k: manifest[k] for k in ("product", "dies", "sort_pass", "sort_yield", "ft_fail", "ft_fail_rate")}
    print(json.dumps({"out": args.out, **summary}, indent=1))
    return manifest


if __name__ == "__main__":
    main()
