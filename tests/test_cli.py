"""The `waferflow` command (pipeline/cli.py): help for every option, one-line errors with their exit
statuses, the report command, and the console's component lines (pipeline/console.py).

Fast: nothing here runs a pipeline component except the one failure test, which fails in the
first component on a corrupt file (tests/test_cli_run.py has the full console run)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from data.synthetic import GeneratorConfig
from data.writers import write_dataset
from pipeline import cli, console
from pipeline.config import RunConfig, add_arguments, option, parse_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def waferflow(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`waferflow ARGS` in a child process (the console script runs pipeline.cli:main)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
        timeout=timeout,
    )


def subparser(name: str):
    parser = cli.build_parser(name)
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    return commands.choices[name]


# --- help ----------------------------------------------------------------------------------------


def test_every_run_config_field_has_help():
    for field in dataclasses.fields(RunConfig):
        assert len(field.metadata.get("help", "")) > 10, field.name


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Extended(RunConfig):
        documented: int = option(1, "a documented option")
        undocumented: int = 3

    with pytest.raises(TypeError, match="RunConfig.undocumented has no help"):
        add_arguments(cli.ArgumentParser(), Extended)


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_option_explains_itself_and_its_default(name):
    sub = subparser(name)
    options = [a for a in sub._actions if not isinstance(a, type(sub._actions[0]))]  # all but --help
    assert options
    for action in options:
        assert action.help and len(action.help) > 10, action.dest
        # A default is shown, or said in words; required arguments say so.
        assert "default" in action.help or "required" in action.help, (name, action.dest, action.help)
    text = sub.format_help()  # every %(default)s expands
    assert "%(default)" not in text and "(default: " in text


def test_run_help_shows_each_fields_default():
    text = re.sub(r"\s+", " ", subparser("run").format_help())
    assert "--epochs EPOCHS the most training epochs" in text and "(default: 30)" in text
    assert "--output-dir OUTPUT_DIR" in text and "(default: output)" in text
    assert "--enable-tuning, --no-enable-tuning" in text and "(default: True)" in text
    assert "one-sided 95%" in text  # a literal % in a field's help survives argparse's formatting


def test_top_level_help_lists_the_commands():
    result = waferflow("--help")
    assert result.returncode == 0, result.stderr
    for name in ("generate", "run", "predict", "report", "kfp"):
        assert re.search(rf"^\s+{name}\s+\w", result.stdout, re.M), name


def test_kfp_help_lists_its_options_and_the_run_options():
    result = waferflow("kfp", "--help")
    assert result.returncode == 0, result.stderr
    assert "--image" in result.stdout and "--pipeline-root" in result.stdout
    assert "--epochs EPOCHS" in result.stdout and "(default: 30)" in result.stdout


def test_console_scripts_resolve():
    """setup.py's entry points name functions that exist (the installed scripts call them)."""
    with open(os.path.join(REPO, "setup.py")) as f:
        scripts = dict(re.findall(r'"([\w-]+)=([\w.]+:\w+)"', f.read()))
    assert set(scripts) == {"waferflow", "waferflow-generate", "waferflow-predict"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), target


# --- errors a user can act on ---------------------------------------------------------------------


def one_error_line(stderr: str, command: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"waferflow {command}: error: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def test_bad_option_value_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--epochs", "x"])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err, "run")
    assert line == "waferflow run: error: argument --epochs: invalid int value: 'x' (see: waferflow run --help)"
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--input-format", "csv"])  # what pipeline/kubeflow_runner.py parses the run flags with
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "error: argument --input-format: invalid choice: 'csv'" in line and line.endswith(" --help)")


def test_missing_data_dir(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert cli.main(["run", "--output-dir", str(tmp_path / "out"), "--data-dir", missing]) == 2
    line = one_error_line(capsys.readouterr().err, "run")
    assert f"--data-dir {missing} does not exist" in line and "leave it out" in line


def test_data_dir_without_matching_files(tmp_path, capsys):
    (tmp_path / "data" / "wafers" / "L1").mkdir(parents=True)
    (tmp_path / "data" / "wafers" / "L1" / "W1.parquet").write_bytes(b"")  # the other format
    argv = ["run", "--output-dir", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]
    assert cli.main(argv) == 2
    line = one_error_line(capsys.readouterr().err, "run")
    assert "no tester files match" in line and "wafers/*/*.stdf*" in line and "--input-format (stdf)" in line


def test_data_dir_without_labels(tmp_path, capsys):
    (tmp_path / "data" / "wafers" / "L1").mkdir(parents=True)
    (tmp_path / "data" / "wafers" / "L1" / "W1.stdf").write_bytes(b"x")
    assert cli.main(["run", "--output-dir", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]) == 2
    assert "no final-test label files match" in one_error_line(capsys.readouterr().err, "run")


def test_unwritable_output_dir(tmp_path, capsys):
    # Tests may run as root, for whom permission bits do not stop a write: a path under a file
    # cannot be created by anyone.
    (tmp_path / "a_file").write_text("")
    out = str(tmp_path / "a_file" / "out")
    assert cli.main(["run", "--output-dir", out]) == 2
    line = one_error_line(capsys.readouterr().err, "run")
    assert f"--output-dir {out} is not writable (Not a directory)" in line and "pass a folder" in line
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert cli.main(["run", "--output-dir", str(locked)]) == 2
        assert "Permission denied" in one_error_line(capsys.readouterr().err, "run")


def test_verbose_shows_the_traceback(tmp_path):
    with pytest.raises(console.UsageError, match="does not exist"):
        cli.main(["run", "--verbose", "--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path)])


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tiny"))
    write_dataset(GeneratorConfig(lots=1, wafers_per_lot=1, seed=3), out, "stdf")
    return out


def test_value_a_component_refuses_is_one_line_before_anything_runs(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    result = waferflow("run", "--data-dir", tiny_dataset, "--output-dir", str(out), "--split-by", "weekly")
    assert result.returncode == 2, result.stderr
    assert "split_by must be one of" in one_error_line(result.stderr, "run")
    assert "running" not in result.stdout  # no component started
    (log,) = os.listdir(out / "logs")  # TFX and TensorFlow's start-up output went to the log, not here
    assert "cudart_stub" not in result.stdout + result.stderr


def test_component_failure_names_the_component_and_the_log(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", tiny_dataset, str(data)], check=True)
    (stdf,) = (data / "wafers").glob("*/*.stdf")
    stdf.write_bytes(stdf.read_bytes()[:1000])  # truncated mid-record
    out = tmp_path / "out"
    args = ["run", "--data-dir", str(data), "--output-dir", str(out), "--direct-running-mode", "in_memory"]
    result = waferflow(*args, "--no-enable-tuning")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr, "run")
    (log,) = (out / "logs").glob("run-*.log")
    assert line.startswith("waferflow run: error: component WaferExampleGen failed: ")
    assert stdf.name in line and line.endswith(f"(log: {log})")
    assert re.search(r"^\[ ?1/\d+\] WaferExampleGen +running$", result.stdout, re.M), result.stdout
    assert "Traceback" in log.read_text()  # the whole story is in the log


def test_one_line_of_an_error_carrying_a_traceback():
    error = RuntimeError('Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad file f.stdf')
    assert cli.one_line(error) == "ValueError: bad file f.stdf"
    assert cli.one_line(OSError("disk full\nmore")) == "OSError: disk full"


# --- generate and report ---------------------------------------------------------------------------


def test_generate(tmp_path, capsys):
    assert cli.main(["generate", "--out", str(tmp_path), "--lots", "1", "--wafers-per-lot", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dies"] > 0 and (tmp_path / "manifest.json").exists()


def write_summary(output_dir, report: str | None) -> None:
    """A run_summary.json as `waferflow run` writes it (pipeline/summary.py's keys)."""
    summary = {
        "pipeline": "waferflow",
        "run": "2026-01-02T03:04:05",
        "components": {"Trainer": "complete", "Transform": "cached"},
        "metrics": {"auc": 0.7431},
        "blessed": True,
        "pushed_model": "output/serving_model/waferflow/17",
    }
    if report:
        summary["report"] = report
    with open(os.path.join(output_dir, cli.SUMMARY_FILE), "w") as f:
        json.dump(summary, f)


def test_report_prints_headline_and_path(tmp_path, capsys):
    page = tmp_path / "report.html"
    page.write_text("<html></html>")
    write_summary(tmp_path, str(page))
    assert cli.main(["report", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "last run 2026-01-02T03:04:05 of pipeline waferflow: 2 components (1 cache hits), test AUC 0.743, "
        "blessed True, pushed output/serving_model/waferflow/17",
        f"report: {page}",
    ]


def test_report_open_hands_the_page_to_the_browser(tmp_path):
    page = tmp_path / "report.html"
    page.write_text("<html></html>")
    write_summary(tmp_path, str(page))
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    result = waferflow(
        "report", "--output-dir", str(tmp_path), "--open", env={"BROWSER": f"{sys.executable} {browser} %s"}
    )
    assert result.returncode == 0, result.stderr
    assert opened.read_text() == page.as_uri()


def test_report_errors(tmp_path, capsys):
    assert cli.main(["report", "--output-dir", str(tmp_path)]) == 2
    assert "no run summary at" in one_error_line(capsys.readouterr().err, "report")
    write_summary(tmp_path, None)
    assert cli.main(["report", "--output-dir", str(tmp_path)]) == 2
    assert "wrote no report: run it again without --no-report" in one_error_line(capsys.readouterr().err, "report")


# --- the console ------------------------------------------------------------------------------------


def test_the_tfx_records_the_console_follows_exist():
    """The format strings RunConsole matches are the ones this TFX logs."""
    import tfx.orchestration.local.local_dag_runner as dag_runner
    import tfx.orchestration.portable.launcher as launcher

    for module, messages in (
        (dag_runner, (console.TFX_RUNNING, console.TFX_FINISHED)),
        (launcher, (console.TFX_CACHED,)),
    ):
        with open(module.__file__) as f:
            source = f.read()
        for message in messages:
            assert f"'{message}'" in source, (module.__name__, message)


def record(msg: str, *args, name: str = "absl", level: int = logging.INFO, pathname: str = "x.py", **extra):
    return logging.makeLogRecord(
        {"msg": msg, "args": args, "name": name, "levelno": level, "levelname": "X", "pathname": pathname, **extra}
    )


def test_component_lines_cache_hits_progress_and_warnings():
    out = io.StringIO()
    handler = console.RunConsole(out, ["WaferExampleGen", "Trainer"], tty=False)
    project_file = os.path.join(REPO, "components", "wafer_example_gen", "executor.py")
    for r in (
        record(console.TFX_RUNNING, "WaferExampleGen"),
        record(console.TFX_CACHED, 12),
        record(console.TFX_FINISHED, "WaferExampleGen"),
        record(console.TFX_RUNNING, "Trainer"),
        record(
            "Trainer epoch %d/%d: loss %.4f", 1, 2, 0.5, name=console.PROGRESS_LOGGER, step=1, total=2, unit="epoch"
        ),
        record("Quarantined %s", "f.stdf: truncated", level=logging.WARNING, pathname=project_file),
        record("a library's deprecation", level=logging.WARNING, pathname="/venv/site-packages/tf/x.py"),
        record("Going to run a new execution %d", 3),
    ):
        handler.handle(r)
    assert handler.current == "Trainer"
    handler.handle(record(console.TFX_FINISHED, "Trainer"))
    lines = out.getvalue().splitlines()
    assert [re.sub(r"\d+\.\d s", "T", line) for line in lines] == [
        "[1/2] WaferExampleGen  running",
        "[1/2] WaferExampleGen  cached (T)",
        "[2/2] Trainer          running",
        "    Trainer epoch 1/2: loss 0.5000",
        "  warning: Quarantined f.stdf: truncated",
        "[2/2] Trainer          done in T",
    ]
    assert handler.cache_hits == ["WaferExampleGen"] and handler.current is None


def test_progress_on_a_terminal_is_a_bar():
    out = io.StringIO()
    handler = console.RunConsole(out, ["Trainer"], tty=True)
    handler.handle(record(console.TFX_RUNNING, "Trainer"))
    for epoch in (1, 2):
        handler.handle(
            record(
                "Trainer epoch %d/4: val_auc 0.7",
                epoch,
                name=console.PROGRESS_LOGGER,
                step=epoch,
                total=4,
                unit="epoch",
            )
        )
    handler.handle(record(console.TFX_FINISHED, "Trainer"))
    text = out.getvalue()
    assert "2/4" in text and "\r" in text and "val_auc 0.7" in text  # tqdm redraws one line
    assert text.rstrip().splitlines()[-1].startswith("[1/1] Trainer  done in")


def test_library_output_goes_to_the_log_file(tmp_path, capfd):
    log = tmp_path / "run.log"
    with console.library_output_to(str(log)) as out:
        out.write("for the person\n")
        print("python stdout", file=sys.__stdout__, flush=True)  # pytest swaps sys.stdout; the CLI does not
        os.write(2, b"C level stderr\n")
        subprocess.run(["sh", "-c", "echo from a child process"], check=True)
    captured = capfd.readouterr()
    assert captured.out == "for the person\n" and captured.err == ""
    assert log.read_text().splitlines() == ["python stdout", "C level stderr", "from a child process"]
