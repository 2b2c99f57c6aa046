"""preprocessing_fn through tft_beam.AnalyzeAndTransformDataset on a few hand-made rows.

The program is given inline (custom_config["program"]): two tests the generator never uses, one
two-sided, one log-scale with only a high limit; the expected values are computed by hand.
"""

from __future__ import annotations

import functools
import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from data.program import Grid, TestDef, TestProgram
from models import features
from models.preprocessing import IQR_TO_SIGMA, preprocessing_fn

PROGRAM = TestProgram(
    tests=[
        TestDef(7, "vth_n", "V", lo_limit=0.0, hi_limit=10.0),
        TestDef(9, "ioff", "nA", hi_limit=math.e**4, log_scale=True),
    ],
    good_hard_bins=[1],
    good_soft_bins=[1],
    # WCR: 100 mm wafer, 10 x 5 mm dies, centre die (0, 0): radius 1 at 5 dies in x, 10 in y.
    grid=Grid(
        x_min=-5,
        x_max=5,
        y_min=-10,
        y_max=10,
        diameter_mm=100.0,
        die_width_mm=10.0,
        die_height_mm=5.0,
        center_x=0.0,
        center_y=0.0,
    ),
    revisions=[],
    changes=[],
    lots=["L1"],
)
# Values of test 7 on five dies (one not measured) and of test 9 (its logs 0..4).
T7 = [1.0, 2.0, 3.0, 4.0, np.nan]
T9 = [math.e**k for k in range(5)]
XY_SLOT = [(0, 0, 1, 0), (3, 4, 1, 1), (-5, 0, 2, 0), (0, 10, 1, 1), (1, -2, 1, 0)]  # x, y, head, site


def _rows() -> list[dict]:
    rows = []
    for i, (x, y, head, site) in enumerate(XY_SLOT):
        row = {"t7": np.array([T7[i]], np.float32), "t9": np.array([T9[i]], np.float32)}
        row.update({k: np.array([float(i)], np.float32) for k in features.CONTEXT})
        row.update(
            x=np.array([x], np.int64),
            y=np.array([y], np.int64),
            head=np.array([head], np.int64),
            site=np.array([site], np.int64),
            ft_fail=np.array([i % 2], np.int64),
        )
        rows.append(row)
    return rows


def _metadata():
    spec = {k: tf.io.FixedLenFeature([1], tf.float32) for k in ("t7", "t9", *features.CONTEXT)}
    spec.update({k: tf.io.FixedLenFeature([1], tf.int64) for k in ("x", "y", "head", "site", features.LABEL_KEY)})
    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))


@pytest.fixture(scope="module")
def transformed():
    fn = functools.partial(preprocessing_fn, custom_config={"program": PROGRAM.to_dict(), "guard_band": 1.5})
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (result, _), _ = (_rows(), _metadata()) | tft_beam.AnalyzeAndTransformDataset(fn)
    return result


def _column(rows, key):
    return [r[key] for r in rows]


def test_every_test_gets_a_robust_z_and_a_margin(transformed):
    # Test 7, present values 1..4: quartiles (approximate quantiles of 4 values) 1, 2, 3 or so;
    # check the defining relation instead of the analyzer's exact interpolation: z is affine in the
    # value with the same slope as the margin, and the missing die is 0 (z) and the cap (margin).
    z = _column(transformed, "t7_xf")
    assert z[4] == 0.0
    slope = z[1] - z[0]
    assert slope > 0 and z[2] - z[1] == pytest.approx(slope, rel=1e-5) and z[3] - z[2] == pytest.approx(slope)
    margin = _column(transformed, "t7_margin_xf")
    # Distance to the nearer limit (0 or 10) in the same units: value / scale for values below 5.
    assert margin[:4] == pytest.approx([v * slope for v in T7[:4]], rel=1e-5)
    assert margin[4] == features.MARGIN_CAP
    # Test 9 is log-scale: its logs are 0..4, quartiles 1, 2, 3 -> scale 2 / 1.349, and the high
    # limit e**4 is 4 on that scale.
    scale = 2 / IQR_TO_SIGMA
    assert _column(transformed, "t9_xf") == pytest.approx([(k - 2) / scale for k in range(5)], abs=1e-4)
    assert _column(transformed, "t9_margin_xf") == pytest.approx([(4 - k) / scale for k in range(5)], abs=1e-4)


def test_per_die_summaries(transformed):
    t7 = _column(transformed, "t7_margin_xf")
    t9 = _column(transformed, "t9_margin_xf")
    smallest = [min(a, b) for a, b in zip(t7, t9, strict=True)]
    assert _column(transformed, "min_margin_xf") == pytest.approx(smallest, abs=1e-6)
    # Shares of the tests: near a limit among the two with limits, missing among the two tests.
    near = [(int(a < 1.5) + int(b < 1.5)) / 2 for a, b in zip(t7, t9, strict=True)]
    assert _column(transformed, "n_near_limit_xf") == pytest.approx(near)
    assert _column(transformed, "n_missing_tests_xf") == [0, 0, 0, 0, 0.5]


def test_context_is_z_scored_and_radius_zone_slot_come_from_the_grid(transformed):
    # Context values 0..4: mean 2, population sd sqrt(2).
    key = features.transformed_name(features.CONTEXT[0])
    assert _column(transformed, key) == pytest.approx([(i - 2) / math.sqrt(2) for i in range(5)], abs=1e-5)
    radius = _column(transformed, "radius_xf")
    expected = [math.hypot(x * 10 / 50, y * 5 / 50) for x, y, _, _ in XY_SLOT]
    assert radius == pytest.approx(expected, rel=1e-5)
    zones = _column(transformed, "zone_xf")
    assert zones == [int(np.searchsorted(features.ZONE_BOUNDARIES, v, side="right")) for v in expected]
    # Probe slots are (head, site): head 2 site 0 is not head 1 site 0.
    slots = _column(transformed, "slot_xf")
    assert slots[0] == slots[4] and slots[1] == slots[3] and len({slots[0], slots[1], slots[2]}) == 3
    assert _column(transformed, features.LABEL_KEY) == [0, 1, 0, 1, 0]


def test_model_inputs_follow_the_program(transformed):
    dense, categorical = features.model_input_names(transformed[0].keys())
    assert {"t7_xf", "t9_xf", "t7_margin_xf", "t9_margin_xf", "min_margin_xf", "n_near_limit_xf"} <= set(dense)
    assert categorical == ["slot_xf", "zone_xf"]
    assert features.LABEL_KEY not in dense
