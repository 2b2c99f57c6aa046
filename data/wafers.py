"""One wafer (and one lot) from all its reads: the steps the ingest and the predict client share.

A wafer can be tested in several files (a first pass, then a retest run). Its dies are every read
in test-time order (MIR START_T, then file path), the last test of each X/Y wins, and the wafer
context (data/wafer_features.py) is computed over the whole wafer, sort fails included. Only then
are sort fails set aside: they never reach final test. Both the ingest (components/wafer_example_gen)
and `waferflow-predict` (pipeline/predict.py) call `assemble_wafer`, so training and scoring see
the same dies with the same features. `assemble_lot` does that for every wafer of a lot and adds the
industry's screens (data/screens.py: DPAT, NNR, GDBN per wafer against the file's own limits, ZPAT
across the lot's wafers), which the model gets as features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd

from data.program import is_test_feature
from data.readers import WaferRead, last_test_wins
from data.screens import ScreenConfig, screen_lot, screen_wafer
from data.wafer_features import add_wafer_context


@dataclasses.dataclass
class Wafer:
    """A wafer after retests: every die once (with context), and how many earlier tests were replaced."""

    lot_id: str
    wafer_id: str
    dies: pd.DataFrame  # every die, last test wins, context columns added
    superseded: int  # earlier tests replaced, across and within files

    @property
    def passed(self) -> pd.DataFrame:
        """The dies that passed sort by their file's good bins: the ones that go on to final test."""
        return self.dies[self.dies["sort_pass"].to_numpy(bool)].reset_index(drop=True)


def assemble_wafer(reads: list[WaferRead]) -> Wafer:
    """All reads of one wafer -> one `Wafer` (see the module docstring)."""
    if not reads:
        raise ValueError("assemble_wafer needs at least one read")
    ordered = sorted(reads, key=lambda r: (r.start_time, r.source))
    within = sum(r.superseded for r in ordered)
    dies = pd.concat([r.dies for r in ordered], ignore_index=True)
    kept, across = last_test_wins(dies)
    kept = kept.astype({"x": np.int64, "y": np.int64})
    return Wafer(ordered[0].lot_id, ordered[0].wafer_id, add_wafer_context(kept), within + across)


def assemble_lot(
    reads: list[WaferRead], config: ScreenConfig | None = None, known_tests: Iterable[str] | None = None
) -> list[Wafer]:
    """Every wafer of one lot from all its reads, screened (wafer screens against the limits of the
    wafer's newest file, then ZPAT over the lot), in wafer-id order.

    `known_tests`: screen only these tests (a model's program, when scoring: a test the model does
    not know is ignored everywhere, in the screens too); None screens every test of the files."""
    known = None if known_tests is None else set(known_tests)
    by_wafer: dict[str, list[WaferRead]] = {}
    for read in reads:
        by_wafer.setdefault(read.wafer_id, []).append(read)
    wafers = []
    for wafer_id in sorted(by_wafer):
        wafer = assemble_wafer(by_wafer[wafer_id])
        newest = max(by_wafer[wafer_id], key=lambda r: (r.start_time, r.source))
        tests = newest.program.tests if newest.program else []
        if known is None:
            wafer.dies = screen_wafer(wafer.dies, tests, config)
        else:
            unknown = [c for c in wafer.dies.columns if is_test_feature(c) and c not in known]
            screened = screen_wafer(wafer.dies.drop(columns=unknown), [t for t in tests if t.feature in known], config)
            wafer.dies = pd.concat([wafer.dies[unknown], screened], axis=1)[
                [*wafer.dies.columns, *(c for c in screened.columns if c not in wafer.dies.columns)]
            ]
        wafers.append(wafer)
    for wafer, screened in zip(wafers, screen_lot([w.dies for w in wafers], config), strict=True):
        wafer.dies = screened
    return wafers
