"""What the `waferflow` command shows a person, and where everything else goes.

A pipeline run writes thousands of lines of library output (TensorFlow's C++ and Python logging,
absl, Beam, Beam's worker subprocesses). The console gets a line per component as it starts and
ends, a progress display for training epochs, the project's own warnings, then the summary; the
rest goes to a log file in the output directory. TFX's LocalDagRunner and launcher say when a
component runs, finishes or is a cache hit through absl logging, so a `logging.Handler` that knows
those records' format strings (`RunConsole`) drives the component lines without touching TFX.

Everything the libraries write reaches file descriptors 1 and 2, some of it from C++ and from
subprocesses that inherit them, so `library_output_to` points those descriptors at the log file
for the run and hands the console a stream on a duplicate of the real stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TextIO

# Records on this logger (the Trainer's epochs, models/trainer.py) carry `step` and `total`
# attributes and drive a progress display; its level is raised to INFO only while a console listens.
PROGRESS_LOGGER = "waferflow.progress"

# TFX 1.21's records, matched on their format strings (record.msg), not on the formatted text.
TFX_RUNNING = "Component %s is running."  # tfx/orchestration/local/local_dag_runner.py
TFX_FINISHED = "Component %s is finished."  # same file
TFX_CACHED = "A cached execution %d is used."  # tfx/orchestration/portable/launcher.py

# The project's own packages: a warning logged from their code is one the user should see.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGES = ("components", "data", "models", "pipeline")


class UsageError(Exception):
    """A problem the user fixes by changing the command line or the files it names: reported as
    one line on stderr with exit status 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its error as one line that names the problem and where the help is
    (argparse's own prints the usage, then the error), exit status 2 as argparse's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def duration(seconds: float) -> str:
    """`4.2 s`, `3 min 05 s`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def _from_project(record: logging.LogRecord) -> bool:
    relative = os.path.relpath(record.pathname, _ROOT)
    return relative.split(os.sep)[0] in _PACKAGES


class RunConsole(logging.Handler):
    """Turns TFX's component records, progress records and the project's warnings into console lines.

    Attached to the root logger for a run; `current` is the component running now, so a failure
    can name it. On a terminal a progress record updates a bar (tqdm); elsewhere it is a line.
    """

    def __init__(self, stream: TextIO, nodes: Sequence[str], tty: bool | None = None):
        super().__init__(logging.INFO)
        self.stream = stream
        self.nodes = list(nodes)
        self.tty = stream.isatty() if tty is None else tty
        self.current: str | None = None
        self.cache_hits: list[str] = []
        self._started = 0.0
        self._cached = False
        self._bar = None
        self._width = max((len(n) for n in self.nodes), default=0)

    def line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _label(self, node: str) -> str:
        number = self.nodes.index(node) + 1 if node in self.nodes else 0
        digits = len(str(len(self.nodes)))
        return f"[{number:>{digits}}/{len(self.nodes)}] {node:<{self._width}}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.msg == TFX_RUNNING:
                self.current, self._started, self._cached = record.args[0], time.monotonic(), False
                self.line(f"{self._label(self.current)}  running")
            elif record.msg == TFX_CACHED:
                self._cached = True
            elif record.msg == TFX_FINISHED:
                self._close_bar()
                node = record.args[0]
                elapsed = duration(time.monotonic() - self._started)
                if self._cached:
                    self.cache_hits.append(node)
                    self.line(f"{self._label(node)}  cached ({elapsed})")
                else:
                    self.line(f"{self._label(node)}  done in {elapsed}")
                self.current = None
            elif record.name == PROGRESS_LOGGER and hasattr(record, "step"):
                self._progress(record)
            elif record.levelno >= logging.WARNING and _from_project(record):
                self.line(f"  warning: {record.getMessage()}")
        except Exception:  # a console problem must not stop the run; logging reports it
            self.handleError(record)

    def _progress(self, record: logging.LogRecord) -> None:
        if not self.tty:
            self.line(f"    {record.getMessage()}")
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=record.total, desc=f"    {self.current}", unit=record.unit, file=self.stream)
        self._bar.set_postfix_str(record.getMessage().split(": ", 1)[-1], refresh=False)
        self._bar.update(record.step - self._bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self._close_bar()
        super().close()


@contextlib.contextmanager
def library_output_to(log_path: str) -> Iterator[TextIO]:
    """Send everything written to file descriptors 1 and 2 to `log_path` for the block, and yield
    a line-buffered stream on the real stdout for the console.

    Redirecting the descriptors, not `sys.stdout`, is what catches TensorFlow's C++ logging and
    the Beam worker subprocesses (they inherit the descriptors); Python's own streams write to
    the same descriptors, so they follow."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = open(os.dup(saved[0]), "w", buffering=1, encoding=sys.stdout.encoding or "utf-8")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        console.close()


@contextlib.contextmanager
def attached(handler: logging.Handler) -> Iterator[logging.Handler]:
    """`handler` on the root logger, and the progress logger at INFO, for the block."""
    root, progress = logging.getLogger(), logging.getLogger(PROGRESS_LOGGER)
    level = progress.level
    root.addHandler(handler)
    progress.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        progress.setLevel(level)
        handler.close()
