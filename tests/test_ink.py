"""The ink decision (models/operating_point.py) and the ink maps of `waferflow-predict`
(pipeline/predict.py), on hand-made dies: no model is trained, a stand-in scorer gives the
probabilities."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.program import FileProgram, TestDef
from models import dense_signature
from models import operating_point as opmod
from models.operating_point import OperatingPoint
from models.scoring import Scorer
from pipeline import predict

# --------------------------------------------------------------------------------------------
# Choosing the threshold

# Six dies; sorted by probability: 0.05 pass, 0.1 pass, 0.2 pass, 0.3 FAIL, 0.4 pass, 0.6 FAIL.
LABELS = [0, 0, 1, 0, 1, 0]
PROBS = [0.1, 0.2, 0.3, 0.4, 0.6, 0.05]


def test_choose_threshold_on_a_hand_made_example():
    # Escape 5, overkill 1, n = 6. Cost of each threshold, (5 * fails below + 1 * passes at or above) / 6:
    #   0.05: 0 + 4 = 4    0.1: 0 + 3 = 3    0.2: 0 + 2 = 2    0.3: 0 + 1 = 1
    #   0.4:  5 + 1 = 6    0.6: 5 + 0 = 5    ink nothing: 10
    threshold, cost = opmod.choose_threshold(LABELS, PROBS, escape_cost=5, overkill_cost=1)
    assert threshold == 0.3
    assert cost == pytest.approx(1 / 6)
    assert opmod.expected_cost(LABELS, PROBS, 0.3, 5, 1) == pytest.approx(1 / 6)
    assert opmod.expected_cost(LABELS, PROBS, 0.4, 5, 1) == pytest.approx(6 / 6)


def test_equal_costs_pick_the_highest_threshold():
    # Escape 1, overkill 1: 0.3 (one overkill) and 0.6 (one escape) both cost 1/6; the fewer inks win.
    threshold, cost = opmod.choose_threshold(LABELS, PROBS, escape_cost=1, overkill_cost=1)
    assert threshold == 0.6 and cost == pytest.approx(1 / 6)


def test_ink_nothing_is_a_candidate():
    # The riskier die passes. Escape 1, overkill 2, n = 2: 0.1 inks both (one overkill: 2/2), 0.2 inks
    # the pass and lets the fail escape (3/2), inking nothing lets the fail escape (1/2).
    labels, probs = [1, 0], [0.1, 0.2]
    threshold, cost = opmod.choose_threshold(labels, probs, escape_cost=1, overkill_cost=2)
    assert threshold > max(probs) and cost == pytest.approx(1 / 2)
    assert not (np.asarray(probs) >= threshold).any()
    # A float32, so that a graph comparing in float32 (the exported model's own ink output) agrees.
    assert np.float64(np.float32(threshold)) == threshold and not (np.float32(probs) >= np.float32(threshold)).any()


def test_tied_probabilities_are_inked_together():
    # Three dies at 0.3 (one fails), one at 0.1 (passes); escape 3, overkill 1, n = 4. Inking only
    # the failing 0.3 die would cost 0, but ties cannot be split: 0.3 inks all three (two overkills,
    # cost 2/4), 0.1 inks all four (3/4), inking nothing lets the fail escape (3/4).
    labels, probs = [1, 0, 0, 0], [0.3, 0.3, 0.3, 0.1]
    for order in itertools.permutations(range(4)):  # wherever the fail sits among its ties
        threshold, cost = opmod.choose_threshold(np.take(labels, order), np.take(probs, order), 3, 1)
        assert threshold == 0.3 and cost == pytest.approx(2 / 4)


def test_choose_threshold_matches_brute_force_with_many_ties():
    rng = np.random.default_rng(0)
    probs = np.round(rng.random(500) * 0.2, 2).astype(np.float32)  # 21 distinct values
    labels = (rng.random(500) < probs * 2).astype(int)
    threshold, cost = opmod.choose_threshold(labels, probs, 50, 1)
    candidates = [*np.unique(probs.astype(np.float64)), np.inf]
    brute = [opmod.expected_cost(labels, probs, t, 50, 1) for t in candidates]
    assert cost == pytest.approx(min(brute))
    assert threshold in candidates and opmod.expected_cost(labels, probs, threshold, 50, 1) == pytest.approx(cost)
    # A float32 probability equal to the chosen threshold is inked, as when it was chosen.
    assert OperatingPoint(threshold, 50, 1).ink(probs).sum() == (probs.astype(np.float64) >= threshold).sum()
    assert (OperatingPoint(threshold, 50, 1).ink(probs) == (probs >= np.float32(threshold))).all()


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="labels"):
        opmod.choose_threshold([0, 2], [0.1, 0.2], 50, 1)
    with pytest.raises(ValueError, match="2 labels for 3"):
        opmod.choose_threshold([0, 1], [0.1, 0.2, 0.3], 50, 1)
    with pytest.raises(ValueError, match="no dies"):
        opmod.choose_threshold([], [], 50, 1)
    with pytest.raises(ValueError, match="costs"):
        opmod.choose_threshold([0, 1], [0.1, 0.2], 0, 0)
    with pytest.raises(ValueError, match="finite"):
        opmod.choose_threshold([0, 1], [0.1, np.nan], 50, 1)


def test_bayes_threshold():
    assert opmod.bayes_threshold(escape_cost=50, overkill_cost=1) == pytest.approx(1 / 51)
    assert opmod.bayes_threshold(1, 1) == 0.5
    assert opmod.bayes_threshold(1, 0) == 0.0  # overkill free: ink everything
    assert OperatingPoint(0.02, 50, 1).bayes_threshold == pytest.approx(1 / 51)
    with pytest.raises(ValueError):
        opmod.bayes_threshold(-1, 1)


def test_on_calibrated_probabilities_the_chosen_threshold_is_near_the_bayes_threshold():
    # Labels drawn from the probabilities themselves: the cost curve's minimum is at 1/51 in
    # expectation; its bottom is flat, so only closeness is checked.
    rng = np.random.default_rng(1)
    probs = rng.random(200_000) * 0.1
    labels = (rng.random(len(probs)) < probs).astype(int)
    threshold, _ = opmod.choose_threshold(labels, probs, 50, 1)
    assert abs(threshold - 1 / 51) < 0.01


# --------------------------------------------------------------------------------------------
# The operating point stored with a model


def test_operating_point_round_trips_through_a_directory(tmp_path):
    op = opmod.fit(LABELS, PROBS, escape_cost=5, overkill_cost=1, split="validation")
    assert (op.threshold, op.expected_cost, op.n_dies) == (0.3, pytest.approx(1 / 6), 6)
    assert op.extra == {"split": "validation"}
    path = opmod.write(op, str(tmp_path / "assets"))
    assert path == str(tmp_path / "assets" / "operating_point.json")
    stored = json.loads(open(path).read())
    assert stored["threshold"] == 0.3 and stored["escape_cost"] == 5.0 and stored["overkill_cost"] == 1.0
    assert stored["split"] == "validation"
    # A SavedModel directory: looked up in its assets, as dense_signature.read_columns does.
    assert opmod.read(str(tmp_path)) == op
    assert OperatingPoint.from_json(op.to_json()) == op


def test_operating_point_is_found_beside_a_tflite_or_onnx_file(tmp_path):
    op = OperatingPoint(threshold=0.0213, escape_cost=50, overkill_cost=1)
    opmod.write(op, str(tmp_path))
    dense_signature.write_columns(["t1000", "x"], str(tmp_path))
    for name in ("model.tflite", "model.onnx"):
        (tmp_path / name).write_bytes(b"")
        assert opmod.read(str(tmp_path / name)) == op
    # --model-dir pointing at dense_columns.json itself: the operating point beside it.
    assert opmod.read(str(tmp_path / "dense_columns.json")) == op
    assert opmod.find(str(tmp_path / "elsewhere" / "model.onnx")) is None
    with pytest.raises(FileNotFoundError, match="operating_point.json"):
        opmod.read(str(tmp_path / "elsewhere" / "model.onnx"))


def test_operating_point_checks_its_fields():
    with pytest.raises(ValueError, match="threshold"):
        OperatingPoint(float("nan"), 50, 1)
    with pytest.raises(ValueError, match="costs"):
        OperatingPoint(0.1, -50, 1)
    with pytest.raises(ValueError, match="lacks"):
        OperatingPoint.from_json('{"threshold": 0.1}')


# --------------------------------------------------------------------------------------------
# Ink maps

# A 3x3 grid, x 4..6, y -1..1: no die at the top left (x 4, y 1), a sort fail at the top right
# (x 6, y 1), and the bottom-left die (x 4, y -1) above the threshold.
MISSING, SORT_FAIL, RISKY = (4, 1), (6, 1), (4, -1)
POSITIONS = [(x, y) for y in (1, 0, -1) for x in (4, 5, 6) if (x, y) != MISSING]
OP = OperatingPoint(threshold=0.25, escape_cost=50, overkill_cost=1)

EXPECTED_MAP = """\
LOT: L01
WAFER: W1
PRODUCT: WF7N
THRESHOLD: 0.25
INK_RULE: final-test fail probability >= THRESHOLD
ESCAPE_COST: 50
OVERKILL_COST: 1
ROWS: 3
COLUMNS: 3
TOP_ROW_Y: 1
LEFT_COLUMN_X: 4
DIES: 8
GOOD(1): 6
INKED(X): 1
SORT_FAIL(F): 1
NO_DIE(.): 1
LEGEND: . no die (outside the wafer / not tested)
LEGEND: 1 passed sort, not inked (good)
LEGEND: X inked (passed sort, final-test fail risk at or above the threshold)
LEGEND: F failed sort
MAP:
.1F
111
X11
"""


def _dies() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lot_id": "L01",
            "wafer_id": "W1",
            "part_id": [str(i) for i in range(len(POSITIONS))],
            "x": [x for x, _ in POSITIONS],
            "y": [y for _, y in POSITIONS],
            "head": 1,
            "site": 1,
            "hard_bin": [5 if p == SORT_FAIL else 1 for p in POSITIONS],
            "soft_bin": [5 if p == SORT_FAIL else 1 for p in POSITIONS],
            "sort_pass": [p != SORT_FAIL for p in POSITIONS],
            "t1000": np.linspace(1.0, 1.5, len(POSITIONS)).astype(np.float32),
        }
    )


class _ByPosition(Scorer):
    """A stand-in model: 0.9 for the risky die, 0.01 for the others."""

    name = "stand-in"

    def __init__(self, operating_point: OperatingPoint | None):
        self.operating_point = operating_point

    def prepare(self, dies: pd.DataFrame) -> pd.DataFrame:
        return dies

    def predict(self, dies: pd.DataFrame) -> np.ndarray:
        risky = (dies["x"] == RISKY[0]) & (dies["y"] == RISKY[1])
        return np.where(risky, 0.9, 0.01).astype(np.float32)


def _scored(dies: pd.DataFrame, op: OperatingPoint | None = OP) -> pd.DataFrame:
    return predict.score([dies[dies["sort_pass"]]], _ByPosition(op))


def test_score_adds_the_ink_decision_only_with_an_operating_point():
    dies = _dies()
    scored = _scored(dies)
    assert list(scored.columns) == [*predict.OUTPUT_COLUMNS, "ink"]
    assert scored["ink"].dtype == bool
    assert scored.loc[scored["ink"], ["x", "y"]].to_records(index=False).tolist() == [RISKY]
    assert list(_scored(dies, None).columns) == list(predict.OUTPUT_COLUMNS)


def test_ink_map_of_a_small_wafer_character_by_character():
    dies = _dies()
    codes = predict.ink_codes(dies, _scored(dies))
    text = predict.render_ink_map(codes, "L01", "W1", OP, product="WF7N")
    assert text == EXPECTED_MAP
    rows = text.splitlines()[-3:]
    expected = {MISSING: ".", SORT_FAIL: "F", RISKY: "X"}
    for r, y in enumerate((1, 0, -1)):  # rows from the top (largest y)
        for c, x in enumerate((4, 5, 6)):  # columns from the smallest x
            assert rows[r][c] == expected.get((x, y), "1"), (x, y)
    assert text.isascii()
    # The CSV: every die (no row for the missing position), in map order.
    csv = predict.ink_map_csv(codes)
    assert csv.splitlines() == ["x,y,code", "5,1,1", "6,1,F", "4,0,1", "5,0,1", "6,0,1", "4,-1,X", "5,-1,1", "6,-1,1"]


def test_ink_codes_refuse_scores_that_do_not_match_the_wafer():
    dies = _dies()
    scored = _scored(dies)
    with pytest.raises(ValueError, match="1 not scored"):
        predict.ink_codes(dies, scored.iloc[1:])
    sort_fail = pd.DataFrame({"x": [SORT_FAIL[0]], "y": [SORT_FAIL[1]], "ink": [False]})
    with pytest.raises(ValueError, match="1 scored that are not"):
        predict.ink_codes(dies, pd.concat([scored, sort_fail], ignore_index=True))


def test_header_stays_plain_ascii():
    dies = _dies()
    codes = predict.ink_codes(dies, _scored(dies))
    text = predict.render_ink_map(codes, "L\u00e9t\n2", "W1", OP)
    assert text.isascii() and "LOT: L?t?2\n" in text and "PRODUCT: unknown\n" in text


def _write_wafer_file(path) -> None:
    program = FileProgram(tests=[TestDef(1000, "vdd", "V", 0.5, 2.0)], revision={"PART_TYP": "WF7N"})
    table = pa.Table.from_pandas(_dies(), preserve_index=False)
    metadata = {FileProgram.METADATA_KEY: json.dumps(program.to_dict()).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def test_read_wafers_gives_every_die_and_the_passing_ones(tmp_path):
    path = str(tmp_path / "W1.parquet")
    _write_wafer_file(path)
    (wafer,) = predict.read_wafers([path], "parquet")
    assert (wafer.lot_id, wafer.wafer_id, wafer.product) == ("L01", "W1", "WF7N")
    assert len(wafer.dies) == 8 and len(wafer.passed) == 7
    (passed,) = predict.read_dies([path], "parquet")
    pd.testing.assert_frame_equal(passed, wafer.passed)


def test_cli_writes_ink_maps(tmp_path, monkeypatch):
    path = str(tmp_path / "W1.parquet")
    _write_wafer_file(path)
    maps, out = tmp_path / "maps", str(tmp_path / "p.csv")
    monkeypatch.setattr(predict, "make_scorer", lambda args: _ByPosition(OP))
    assert predict.main([path, "--model", "stand-in", "--out", out, "--ink-maps", str(maps)]) == 0
    assert sorted(p.name for p in maps.iterdir()) == ["L01_W1.csv", "L01_W1.txt"]
    assert (maps / "L01_W1.txt").read_text() == EXPECTED_MAP
    assert pd.read_csv(out)["ink"].sum() == 1
    # No operating point: the predictions have no ink column, and ink maps are refused.
    monkeypatch.setattr(predict, "make_scorer", lambda args: _ByPosition(None))
    assert predict.main([path, "--model", "stand-in", "--out", out]) == 0
    assert list(pd.read_csv(out).columns) == list(predict.OUTPUT_COLUMNS)
    with pytest.raises(ValueError, match="operating point"):
        predict.main([path, "--model", "stand-in", "--out", out, "--ink-maps", str(maps)])
