"""`waferflow run` as a person sees it: the real pipeline in a child process, twice, on a tiny dataset.

The console must be short and readable: a line per component as it starts and ends, the Trainer's
epochs, the summary, the log file's path; everything the libraries print (TFX, absl, TensorFlow's
C++ logging, Beam and its worker processes) must be in the log file instead.
"""

from __future__ import annotations

import os
import re

import pytest

from pipeline import cli

from .test_cli import waferflow

pytestmark = pytest.mark.e2e

# Cheap settings: 4 one-wafer lots (the three splits need at least three lots), no Tuner, 3 epochs,
# no report or exports; one Beam worker process, so worker subprocesses are still exercised.
ARGS = (
    "--lots", "4", "--wafers-per-lot", "1", "--seed", "7", "--no-enable-tuning", "--epochs", "3",
    "--no-report", "--no-export-tflite", "--no-export-onnx", "--direct-num-workers", "1",
)  # fmt: skip
# A line of TensorFlow's C++ logging (glog format: level, date, time, thread id, file:line]).
GLOG = re.compile(r"^[IWEF]\d{4} [\d:. ]+ +(\d+) [\w.]+:\d+\]", re.M)
# Why under 80: 10 components x 2 lines, 3 epoch lines, about 20 summary lines and 4 of heading
# and log path; with every optional component (14) and 30 epochs it would still be under 90.
# Library output on the console is thousands of lines, so the bound tells the two apart.
MAX_LINES = 80


def nodes() -> list[str]:
    """The components these flags make, from the same pipeline definition (built, not run)."""
    from pipeline import local_runner
    from pipeline.config import parse_args

    return [c.id for c in local_runner.build(parse_args(["--output-dir", "/nonexistent", *ARGS])).components]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("console"))
    first = waferflow("run", "--output-dir", out, *ARGS, timeout=900)
    second = waferflow("run", "--output-dir", out, *ARGS, timeout=900)
    return out, first, second


def component_lines(stdout: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for match in re.finditer(r"^\[ ?\d+/\d+\] (\S+) +(.+)$", stdout, re.M):
        found.setdefault(match[1], []).append(match[2])
    return found


def test_console_is_short_and_shows_every_component(two_runs):
    out, first, _ = two_runs
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) < MAX_LINES, first.stdout
    assert first.stderr == ""
    assert not GLOG.search(first.stdout) and "INFO:absl" not in first.stdout
    expected = nodes()
    seen = component_lines(first.stdout)
    assert list(seen) == expected  # in run order
    for node, states in seen.items():
        assert len(states) == 2 and states[0] == "running", (node, states)
        assert re.fullmatch(r"done in \d+(\.\d s| min \d\d s)", states[1]), (node, states)
    epochs = re.findall(r"^    Trainer epoch (\d)/3: loss [\d.]+, val_auc [\d.]+$", first.stdout, re.M)
    assert epochs == ["1", "2", "3"]
    assert "waferflow run summary" in first.stdout and "  blessed: " in first.stdout
    assert os.path.exists(os.path.join(out, cli.SUMMARY_FILE))


def test_library_output_is_in_the_log(two_runs):
    out, first, _ = two_runs
    (log,) = re.findall(r"^library output: (\S+)$", first.stdout, re.M)
    assert first.stdout.splitlines()[1].endswith(f"library output: {log}")  # said at the start too
    assert log.startswith(os.path.join(out, "logs", "run-"))
    with open(log) as f:
        text = f.read()
    assert "INFO:absl:Component Trainer is running." in text  # absl / TFX logging
    assert "INFO:waferflow.progress:Trainer epoch 3/3" in text
    # TensorFlow's C++ logging, from this process and from the Beam worker processes: each
    # process that imports TensorFlow logs its CPU features (glog's thread id of a process's
    # main thread is its process id), so more than one id means the workers' output is here.
    assert len(set(GLOG.findall(text))) >= 2, GLOG.findall(text)


def test_second_run_is_all_cache_hits(two_runs):
    _, first, second = two_runs
    assert second.returncode == 0, second.stderr
    assert len(second.stdout.splitlines()) < MAX_LINES
    seen = component_lines(second.stdout)
    assert list(seen) == list(component_lines(first.stdout))
    for node, states in seen.items():
        if node.endswith("_resolver"):  # a resolver has no execution to reuse: it runs every time
            continue
        assert states[0] == "running" and states[1].startswith("cached ("), (node, states)
    assert "Trainer epoch" not in second.stdout
