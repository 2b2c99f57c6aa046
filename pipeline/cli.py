"""The `waferflow` command: `generate`, `run`, `run-patterns`, `predict`, `predict-patterns`, `report`,
`kfp` (`waferflow COMMAND --help`).

Each subcommand's options come from the module that does the work (data/generate.py,
pipeline/config.py's RunConfig, pipeline/predict.py, pipeline/predict_patterns.py,
pipeline/kubeflow_runner.py), so `python -m` on those modules and this command take the same
flags. A mistake the user can fix (a bad option value, a missing data directory, an unwritable
output directory) is one line on stderr and exit status 2; any other failure one line and exit
status 1; `--verbose` shows tracebacks and, for `run`, all library output on the console instead of
in the log file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import time
import webbrowser
from collections.abc import Callable

from data import generate
from pipeline import config as run_config
from pipeline import console
from pipeline.console import ArgumentParser, UsageError

PROG = "waferflow"
SUMMARY_FILE = "run_summary.json"  # in the output directory, the last run's summary (pipeline/summary.py)
PATTERN_SUMMARY_FILE = "pattern_run_summary.json"  # the last pattern run's (pipeline/pattern_runner.py)


class ComponentError(Exception):
    """A component of the run raised: names the component, keeps the error as its cause."""

    def __init__(self, component: str | None, error: BaseException):
        where = f"component {component} failed" if component else "the run failed after its components"
        super().__init__(f"{where}: {one_line(error)}")


def one_line(error: BaseException) -> str:
    """`Type: message` on one line. A message that carries a traceback (Beam re-raises a worker's
    error with the worker's traceback as its text) is reduced to its last line, the error itself."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return text if re.match(r"[\w.]+(Error|Exception): ", text) else f"{type(error).__name__}: {text}"


def _pattern_run_arguments(parser: argparse.ArgumentParser) -> None:
    run_config.add_arguments(parser, run_config.PatternRunConfig)


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline import predict  # imports TensorFlow: only when the command is `predict`

    predict.add_arguments(parser)


def _predict_patterns_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline import predict_patterns  # imports pandas and the readers: only for `predict-patterns`

    predict_patterns.add_arguments(parser)


def _schema_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline import schema  # imports TFX and TFDV: only when the command is `schema`

    schema.add_arguments(parser)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-dir",
        default=run_config.RunConfig.output_dir,
        help="the output directory of the run (default: %(default)s)",
    )
    parser.add_argument("--open", action="store_true", help="open the report in a web browser (default: off)")


# name: (one-line summary, description, adds the command's options). Only the command being run
# gets its options, so `waferflow run` does not import TensorFlow (predict's options need it)
# before its output is redirected.
SUBCOMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "generate": (
        "write a synthetic wafer-sort dataset",
        "Write a seeded, deterministic synthetic wafer-sort dataset of one product (STDF or Parquet files "
        "and the final-test labels).",
        generate.add_arguments,
    ),
    "run": (
        "run the whole pipeline locally and print its summary",
        "Run the pipeline locally (LocalDagRunner, Beam DirectRunner, SQLite MLMD): a line per component, "
        "the training epochs, then the summary; library output goes to <output-dir>/logs/run-<time>.log.",
        run_config.add_arguments,
    ),
    "run-patterns": (
        "run the wafer-map pattern pipeline locally (a CNN per product, transfer with --base-model)",
        "Run the pattern pipeline locally (docs/patterns.md): wafer maps from the tester files and their pattern "
        "sidecars, the CNN from scratch or transferred from another product's pattern model (--base-model), "
        "evaluated per product, pushed and exported; library output goes to <output-dir>/logs.",
        _pattern_run_arguments,
    ),
    "predict": (
        "score tester files with a model or a TF Serving server",
        "Score wafer-test files as the ingest reads them, with a local model (SavedModel, TF Lite, ONNX) or a "
        "TF Serving server; write the probabilities, the ink decision and, on request, ink maps.",
        _predict_arguments,
    ),
    "predict-patterns": (
        "classify wafer maps' defect patterns with the pattern model or a TF Serving server",
        "Build each wafer's fixed-size map from tester files (as the map ExampleGen does) and classify its defect "
        "patterns with the pattern model's serve_map signature, locally or on TF Serving; write a CSV of class "
        "probabilities and predicted patterns and print a table.",
        _predict_patterns_arguments,
    ),
    "schema": (
        "write the last run's inferred schema, for review, as the curated schema (--schema-file)",
        "Write the newest inferred schema of a local run (identifiers accept any value) to a file to review and "
        "keep with the project; later runs with --schema-file validate every new span against it.",
        _schema_arguments,
    ),
    "report": (
        "print (or open) the last run's report",
        f"The last run's headline and the path of its HTML report, from <output-dir>/{SUMMARY_FILE}.",
        _report_arguments,
    ),
}
KFP_SUMMARY = "compile the pipeline for Kubeflow Pipelines 2.x (`waferflow kfp --help` lists its options)"


def build_parser(command: str | None = None) -> ArgumentParser:
    """The command line, with the options of `command` only (see SUBCOMMANDS); the top level's
    help lists the commands without their options."""
    parser = ArgumentParser(
        prog=PROG,
        description="waferflow: a TFX pipeline for wafer-test data. `waferflow COMMAND --help` explains a command.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose",
        action="store_true",
        help="show tracebacks, and for `run` all library output on the console instead of the log file (default: off)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, description, add_arguments) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=summary, description=description)
        if name == command:
            add_arguments(sub)
    # pipeline/kubeflow_runner.py parses its own options: main() hands `waferflow kfp ...` to it.
    commands.add_parser("kfp", help=KFP_SUMMARY, add_help=False)
    return parser


def run_command(args: argparse.Namespace) -> int:
    config = run_config.config_from_args(args)
    from pipeline import preflight

    preflight.check(config)
    manifest = preflight.ensure_dataset(config)
    if manifest:
        print(
            f"generated {manifest['dies']} dies of product {config.product} in {len(manifest['wafers'])} wafers "
            f"into {config.dataset_dir}"
        )

    def run_pipeline(out) -> dict:
        from pipeline import local_runner

        return _run_pipeline(local_runner.prepare, local_runner.execute, config, out)

    result, log_path = _with_library_output(args, config, run_pipeline)
    from pipeline import summary

    _say_summary(result, os.path.join(config.output_dir, SUMMARY_FILE), summary.format_summary(result), log_path)
    print(
        f"wafer-map defect patterns from the same files: `{PROG} run-patterns`, `make run-patterns` (docs/patterns.md)"
    )
    return 0


def run_patterns_command(args: argparse.Namespace) -> int:
    config = run_config.config_from_args(args, run_config.PatternRunConfig)
    from pipeline import preflight

    preflight.check_output_dir(config.output_dir)
    manifest = preflight.ensure_pattern_dataset(config)
    if manifest:
        print(f"generated {len(manifest['wafers'])} wafer maps of product {config.product} into {config.dataset_dir}")

    def run_pipeline(out) -> dict:
        from pipeline import pattern_runner  # TensorFlow: imported after the output is redirected

        return _run_pipeline(pattern_runner.build, pattern_runner.execute, config, out)

    result, log_path = _with_library_output(args, config, run_pipeline)
    from pipeline import pattern_runner

    path = os.path.join(config.output_dir, PATTERN_SUMMARY_FILE)
    _say_summary(result, path, pattern_runner.format_pattern_summary(result), log_path)
    return 0


def _say_summary(result: dict, path: str, text: str, log_path: str | None) -> None:
    """The run's summary to `path` (JSON) and, as `text`, to the console, then where the log is."""
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(text)
    if log_path:
        print(f"library output: {log_path}")


class RunFailedError(Exception):
    """A run that failed or was interrupted, already said on stderr; carries the exit status."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def _with_library_output(
    args: argparse.Namespace, config: run_config.DataConfig, run_pipeline
) -> tuple[dict, str | None]:
    """`run_pipeline(out)` and the log's path: with --verbose everything on the console, else the
    component lines on the console and the library output in <output-dir>/logs/<command>-<time>.log.
    A failed component or an interrupt is one line on stderr and `RunFailedError`."""
    if args.verbose:
        return run_pipeline(sys.stdout), None
    log_path = os.path.join(config.output_dir, "logs", time.strftime(f"{args.command}-%Y%m%d-%H%M%S.log"))
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    print(f"{PROG} {args.command}: pipeline {config.pipeline_name} on {config.dataset_dir}; library output: {log_path}")
    try:
        with console.library_output_to(log_path) as out:
            result = run_pipeline(out)
    except (ComponentError, KeyboardInterrupt) as error:
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else f"error: {error}"
        print(f"{PROG} {args.command}: {what} (log: {log_path})", file=sys.stderr)
        raise RunFailedError(130 if isinstance(error, KeyboardInterrupt) else 1) from error
    return result, log_path


def _run_pipeline(prepare, execute, config: run_config.DataConfig, out) -> dict:
    """Build, check and run a pipeline with the component lines on `out`; TensorFlow and TFX
    are imported by `prepare`, after the output is redirected, so their start-up logging is in the log."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        pipeline = prepare(config)
    except ValueError as error:  # a component's or Beam's refusal of an option value
        raise UsageError(str(error)) from error
    nodes = [component.id for component in pipeline.components]
    out.write(f"{len(nodes)} components\n")
    with console.attached(console.RunConsole(out, nodes)) as handler:
        try:
            return execute(config, pipeline)
        except Exception as error:
            raise ComponentError(handler.current, error) from error


def report_command(args: argparse.Namespace) -> int:
    path = os.path.join(args.output_dir, SUMMARY_FILE)
    if not os.path.exists(path):
        raise UsageError(f"no run summary at {path}: run `{PROG} run` first, or pass that run's --output-dir")
    with open(path) as f:
        summary = json.load(f)
    print(headline(summary))
    report = summary.get("report")
    if not report:
        raise UsageError(f"the last run in {args.output_dir} wrote no report: run it again without --no-report")
    if not os.path.exists(report):
        raise UsageError(f"the last run's report {report} is gone (or was written relative to another folder)")
    print(f"report: {report}")
    if args.open and not webbrowser.open(pathlib.Path(report).resolve().as_uri()):
        raise UsageError(f"no web browser found: open {report} yourself")
    return 0


def headline(summary: dict) -> str:
    """One line: which run, its components and cache hits, test AUC, blessing and push."""
    components = summary.get("components", {})
    cached = sum(1 for state in components.values() if state == "cached")
    auc = summary.get("metrics", {}).get("auc")
    return (
        f"last run {summary.get('run', '?')} of pipeline {summary.get('pipeline', '?')}: "
        f"{len(components)} components ({cached} cache hits), test AUC "
        f"{'n/a' if auc is None else f'{auc:.3f}'}, blessed {summary.get('blessed')}, "
        f"pushed {summary.get('pushed_model') or 'nothing'}"
    )


def _kfp(argv: list[str]) -> int:
    from pipeline import kubeflow_runner

    kubeflow_runner.main(argv)
    return 0


def generate_command(args: argparse.Namespace) -> int:
    generate.run(args)
    return 0


def schema_command(args: argparse.Namespace) -> int:
    from pipeline import schema

    try:
        schema.run(args)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from error
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from pipeline import predict

    return predict.run(args)


def predict_patterns_command(args: argparse.Namespace) -> int:
    from pipeline import predict_patterns

    return predict_patterns.run(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": generate_command,
    "run": run_command,
    "run-patterns": run_patterns_command,
    "predict": predict_command,
    "predict-patterns": predict_patterns_command,
    "report": report_command,
    "schema": schema_command,
}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit status: 0 done, 1 failed, 2 a usage error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["kfp"]:
        # kubeflow_runner parses its own flags and the run flags; --verbose is this command's.
        args = argparse.Namespace(command="kfp", verbose="--verbose" in argv)
        call: Callable[[], int] = lambda: _kfp([a for a in argv[1:] if a != "--verbose"])  # noqa: E731
    else:
        args = build_parser(next((a for a in argv if a in SUBCOMMANDS), None)).parse_args(argv)
        call = lambda: COMMANDS[args.command](args)  # noqa: E731
    try:
        return call()
    except RunFailedError as failed:
        return failed.status
    except UsageError as error:
        if args.verbose:
            raise
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.verbose:
            raise
        print(f"{PROG} {args.command}: error: {one_line(error)} (--verbose shows the traceback)", file=sys.stderr)
        return 1


def generate_main() -> int:
    """`waferflow-generate`: `waferflow generate`."""
    return main(["generate", *sys.argv[1:]])


def predict_main() -> int:
    """`waferflow-predict`: `waferflow predict`."""
    return main(["predict", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
