"""Command line: write a synthetic wafer-sort dataset of one product.

python -m data.generate --out output/data [--product WF7N|MX3A] [--lots 10] [--wafers-per-lot 5]
    [--seed 42] [--format stdf|parquet] [--program-revision 1.0] [--span 2 [--drift-per-span 0.3]]
    [--patterns [--maps-only] [--pattern-weights wm811k|uniform] [--mixed-share 0.2]] [--defect-wafer-share 0.35]

With `--patterns` the wafers carry the pattern pipeline's defect signatures and each lot gets a
pattern-labels sidecar (patterns/<lot>.csv, data/patterns.py); `--maps-only` writes bins without
parametric tests or final-test labels, thousands of wafers in seconds.

With `--span K` the lots go to <out>/span-K/ and are new lots (none shared with other spans): the
layout a run with `--spans` reads, one new span a day.
"""

from __future__ import annotations

import argparse
import json
import os

from data.products import DEFAULT_PRODUCT, PRODUCTS
from data.synthetic import PATTERN_WEIGHTS, GeneratorConfig
from data.writers import WRITERS, span_folder, write_dataset


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
    parser.add_argument(
        "--span",
        type=_span_number,
        default=None,
        help="write span K (K >= 1) into <out>/span-K/ with lots of its own: the daily-batch layout that "
        "`waferflow run --spans` reads (default: no spans, the files go straight into <out>)",
    )
    parser.add_argument(
        "--drift-per-span",
        type=float,
        default=GeneratorConfig.drift_per_span,
        help="slow process drift: every lot's threshold voltage moves this many population sigmas per span "
        "(default %(default)s: none)",
    )

    parser.add_argument(
        "--defect-wafer-share",
        type=float,
        default=GeneratorConfig.defect_wafer_share,
        help="share of wafers with a spatial defect pattern (default %(default)s)",
    )
    parser.add_argument(
        "--patterns",
        action="store_true",
        help="pattern mode: WM-811K's classes (local clusters too), mixed patterns and a pattern-labels sidecar "
        "per lot in <out>/patterns/ (default: off, the die-level generator's draws)",
    )
    parser.add_argument(
        "--maps-only",
        action="store_true",
        help="pattern mode (implies --patterns) with bins only: no parametric tests, no final-test labels, "
        "written as bin-map STDF or Parquet; thousands of wafers in seconds (default: off)",
    )
    parser.add_argument(
        "--pattern-weights",
        choices=sorted(PATTERN_WEIGHTS),
        default=GeneratorConfig.pattern_weights,
        help="with --patterns: how often each pattern is drawn on a defect wafer; wm811k: WM-811K's class "
        "frequencies (near-full rare), uniform: all alike (default %(default)s)",
    )
    parser.add_argument(
        "--mixed-share",
        type=float,
        default=GeneratorConfig.mixed_share,
        help="with --patterns: share of defect wafers that get a second, different pattern (MixedWM38's "
        "pairs) (default %(default)s)",
    )


def _span_number(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


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
        span=args.span or 0,
        drift_per_span=args.drift_per_span,
        defect_wafer_share=args.defect_wafer_share,
        patterns=args.patterns or args.maps_only,
        maps_only=args.maps_only,
        pattern_weights=args.pattern_weights,
        mixed_share=args.mixed_share,
    )
    out = os.path.join(args.out, span_folder(args.span)) if args.span is not None else args.out
    manifest = write_dataset(config, out, args.format)
    summary = {k: manifest[k] for k in ("product", "dies", "sort_pass", "sort_yield", "ft_fail", "ft_fail_rate")}
    print(json.dumps({"out": out, **summary}, indent=1))
    return manifest


if __name__ == "__main__":
    main()
