"""Another tester's files, written byte by byte here: a program the generator has never seen.

Test numbers 301-304 and an MPR 310 on three pins, the tester's own names and units, one- and
two-sided limits, good bins 1 and 7 (a slow grade), sites numbered 1-4, no WCR (the grid comes
from the dies). The pipeline ingests them, trains, pushes, and the predict client scores them,
including a file with a test the model does not know and without one it expects.
"""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pandas as pd
import pytest

from data.stdf import records as rec
from pipeline import local_runner, predict
from pipeline.config import RunConfig
from tests.stdf_builder import Stdf

pytestmark = pytest.mark.e2e

# number: (TEST_TXT, UNITS, RES_SCAL, lo, hi, value sampler) -- limits and values in displayed units.
PTRS = {
    301: ("VDD_LEAK", "A", 6, None, 50.0, lambda r, n: np.exp(r.normal(math.log(10.0), 0.5, n))),  # uA
    302: ("VTH_N", "V", 3, 300.0, 500.0, lambda r, n: r.normal(400.0, 25.0, n)),  # mV
    303: ("FREQ_RO", "Hz", -6, 800.0, None, lambda r, n: r.normal(1000.0, 50.0, n)),  # MHz
    304: ("IDD_SCAN", "A", 3, None, 120.0, lambda r, n: r.normal(80.0, 10.0, n)),  # mA
}
MPR_NUMBER, MPR_PINS = 310, (1, 2, 3)
GOOD_BINS, SLOW_BIN, FAIL_BIN = (1, 7), 7, 20


def _opt(lo, hi) -> int:
    return rec.OPT_RESERVED | (rec.OPT_NO_LO_LIMIT if lo is None else 0) | (rec.OPT_NO_HI_LIMIT if hi is None else 0)


def write_wafer(
    path: str,
    lot: str,
    wafer: str,
    start: int,
    rng: np.random.Generator,
    extra_test: bool = False,
    drop: int | None = None,
) -> pd.DataFrame:
    """One wafer file; returns the dies that passed (x, y, values) for the label model."""
    xs, ys = np.meshgrid(np.arange(-6, 7), np.arange(-6, 7))
    on = xs**2 + ys**2 <= 36
    x, y = xs[on], ys[on]
    n = len(x)
    values = {number: sampler(rng, n) for number, (*_, sampler) in PTRS.items()}
    pins = rng.normal(-0.55, 0.05, (n, len(MPR_PINS)))
    f = Stdf().mir(lot=lot, part_typ="ACME-ADC9", job="adc9_ws", rev="B", start=start).wir(wafer, start=start)
    first = set()
    rows = []
    for i in range(n):
        site = 1 + int(x[i] % 2) + 2 * int(y[i] % 2)
        f.pir(site=site)
        fail = False
        for number, (text, units, scale, lo, hi, _) in PTRS.items():
            if number == drop:
                continue
            v = float(values[number][i])
            fail |= (lo is not None and v < lo) or (hi is not None and v > hi)
            tail = b""
            if number not in first:
                lo_b, hi_b = (0.0 if lo is None else lo * 10.0**-scale), (0.0 if hi is None else hi * 10.0**-scale)
                tail = f.defaults(text, _opt(lo, hi), scale=scale, lo=lo_b, hi=hi_b, units=units)
                first.add(number)
            f.ptr(number, v * 10.0**-scale, tail, site=site)
        if extra_test:
            f.ptr(999, 1.0, f.defaults("NEW_TRIM", rec.OPT_RESERVED) if 999 not in first else b"", site=site)
            first.add(999)
        if MPR_NUMBER not in first:
            f.mpr(
                MPR_NUMBER,
                list(pins[i]),
                pins=MPR_PINS,
                text="CONT",
                opt=_opt(-0.9, -0.2),
                lo=-0.9,
                hi=-0.2,
                units="V",
                site=site,
            )
            first.add(MPR_NUMBER)
        else:
            f.mpr(MPR_NUMBER, list(pins[i]), site=site)
        fail |= bool(((pins[i] < -0.9) | (pins[i] > -0.2)).any())
        hard = FAIL_BIN if fail else (SLOW_BIN if values[303][i] < 900 else 1)
        f.prr(int(x[i]), int(y[i]), hard=hard, soft=hard, part_flg=rec.PART_FLG_FAIL if fail else 0, site=site)
        if not fail:
            rows.append({"x": int(x[i]), "y": int(y[i]), "leak": values[301][i], "vth": values[302][i]})
    f.wrr(wafer)
    for number in sorted({1, SLOW_BIN, FAIL_BIN}):
        f.bin("HBR", number, "P" if number in GOOD_BINS else "F")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(f.bytes())
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def foreign_dataset(tmp_path_factory) -> str:
    """6 lots x 2 wafers of ~113 dies, with a final-test label sidecar that depends on leakage
    near its limit and on Vth (seeded: the same files every run): 3 lots train, 1 validation, 2 test."""
    root = str(tmp_path_factory.mktemp("acme"))
    rng = np.random.default_rng(2026)
    os.makedirs(os.path.join(root, "labels"))
    for lot_index in range(6):
        lot = f"ACME{lot_index:02d}"
        frames = []
        for w in range(1, 3):
            wafer = f"{lot}-{w}"
            start = 1_800_000_000 + lot_index * 86_400 + w * 3_600
            passed = write_wafer(os.path.join(root, "wafers", lot, f"{wafer}.stdf"), lot, wafer, start, rng)
            logit = -4.0 + 2.5 * (passed["leak"] / 50.0) ** 2 * 4 + 0.02 * (passed["vth"] - 400.0)
            passed["ft_fail"] = (rng.random(len(passed)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
            frames.append(passed.assign(lot_id=lot, wafer_id=wafer)[["lot_id", "wafer_id", "x", "y", "ft_fail"]])
        pd.concat(frames).to_parquet(os.path.join(root, "labels", f"{lot}.parquet"), index=False)
    return root


@pytest.fixture(scope="module")
def foreign_run(foreign_dataset, tmp_path_factory):
    config = RunConfig(
        output_dir=str(tmp_path_factory.mktemp("run")),
        data_dir=foreign_dataset,
        epochs=4,
        enable_tuning=False,
        min_auc=0.0,
        export_tflite=False,
        export_onnx=False,
        direct_running_mode="in_memory",
    )
    return config, local_runner.run(config)


def test_the_program_is_learned_from_the_files(foreign_run):
    _, summary = foreign_run
    program = summary["test_program"]
    tests = {t["feature"]: t for t in program["program"]["tests"]}
    assert sorted(tests) == ["t301", "t302", "t303", "t304", "t310_p1", "t310_p2", "t310_p3"]
    assert (tests["t301"]["name"], tests["t301"]["units"], tests["t301"]["hi_limit"]) == ("VDD_LEAK", "uA", 50.0)
    assert tests["t302"]["lo_limit"] == 300.0 and tests["t303"]["hi_limit"] is None
    assert tests["t310_p2"]["name"] == "CONT" and tests["t310_p2"]["lo_limit"] == pytest.approx(-0.9)
    assert program["good_hard_bins"] == [1, 7]
    assert program["grid"]["x_min"] == -6 and program["grid"]["diameter_mm"] is None  # no WCR
    assert tests["t301"]["log_scale"] and not tests["t302"]["log_scale"]
    ingest = summary["ingest"]
    assert ingest["balanced"] and ingest["examples"] > 0 and ingest["rejected_no_label"] == 0


def test_trained_pushed_and_scored_by_the_predict_client(foreign_run, foreign_dataset, tmp_path):
    _, summary = foreign_run
    assert summary["blessed"] and summary["pushed_model"]
    files = sorted(glob.glob(os.path.join(foreign_dataset, "wafers", "*", "*.stdf")))
    scorer = predict.load_scorer(summary["pushed_model"])
    assert scorer.columns[:7] == ("t301", "t302", "t303", "t304", "t310_p1", "t310_p2", "t310_p3")
    predictions = predict.score(predict.read_dies(files, "stdf"), scorer)
    assert len(predictions) == summary["ingest"]["examples"]
    assert predictions["probability"].between(0, 1).all() and predictions["probability"].std() > 0

    # A later revision of the program: a test the model does not know, and IDD_SCAN dropped.
    rng = np.random.default_rng(7)
    newer = str(tmp_path / "ACME99" / "ACME99-1.stdf")
    write_wafer(newer, "ACME99", "ACME99-1", 1_900_000_000, rng, extra_test=True, drop=304)
    scored = predict.score(predict.read_dies([newer], "stdf"), scorer)
    assert scored.attrs["unknown_tests"] == ["t999"] and scored.attrs["missing_tests"] == ["t304"]
    assert len(scored) > 0 and scored["probability"].notna().all()
