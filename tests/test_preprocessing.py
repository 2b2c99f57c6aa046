"""preprocessing_fn through tft_beam.AnalyzeAndTransformDataset on a few rows."""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features
from models.preprocessing import preprocessing_fn

GEOM = features.GEOMETRY


def _rows() -> list[dict]:
    rows = []
    for i, (x, y, site) in enumerate([(0, 0, 0), (3, 4, 1), (-10, 2, 2), (12, -1, 1)]):
        row = {k: np.array([float(i)], np.float32) for k in features.PARAMETRIC + features.CONTEXT}
        row.update(x=np.array([x], np.int64), y=np.array([y], np.int64), site=np.array([site], np.int64))
        row[features.LABEL_KEY] = np.array([i % 2], np.int64)
        rows.append(row)
    # The last die misses one test: NaN, which must not count as a measured value.
    rows[-1][features.PARAMETRIC[0]] = np.array([np.nan], np.float32)
    return rows


def _metadata():
    spec = {k: tf.io.FixedLenFeature([1], tf.float32) for k in features.PARAMETRIC + features.CONTEXT}
    spec.update({k: tf.io.FixedLenFeature([1], tf.int64) for k in ("x", "y", "site", features.LABEL_KEY)})
    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))


@pytest.fixture(scope="module")
def transformed():
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (result, _), _ = (_rows(), _metadata()) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
    return result


def test_parametrics_are_z_scored_over_present_values_and_missing_is_zero(transformed):
    first = features.transformed_name(features.PARAMETRIC[0])
    other = features.transformed_name(features.PARAMETRIC[1])
    # Present values 0, 1, 2 for the first test: mean 1, population sd sqrt(2/3).
    sd = math.sqrt(2 / 3)
    assert [r[first] for r in transformed] == pytest.approx([-1 / sd, 0.0, 1 / sd, 0.0], abs=1e-5)
    # The second test has all four values 0..3.
    mean, sd4 = 1.5, math.sqrt(1.25)
    assert [r[other] for r in transformed] == pytest.approx([(v - mean) / sd4 for v in range(4)], abs=1e-5)
    assert [r[features.transformed_name(features.N_MISSING)] for r in transformed] == [0, 0, 0, 1]


def test_radius_zone_and_site_vocabulary(transformed):
    radius = [r[features.transformed_name(features.RADIUS)] for r in transformed]
    expected = [math.hypot(x * GEOM.die_width_mm, y * GEOM.die_height_mm) / GEOM.usable_radius_mm
                for x, y in [(0, 0), (3, 4), (-10, 2), (12, -1)]]
    assert radius == pytest.approx(expected, rel=1e-5)
    zones = [r[features.transformed_name(features.ZONE)] for r in transformed]
    assert zones == [int(np.searchsorted(features.ZONE_BOUNDARIES, v, side="right")) for v in expected]
    sites = [r[features.transformed_name(features.SITE_KEY)] for r in transformed]
    assert sites[1] == sites[3] and len(set(sites)) == 3  # same site -> same id
    assert [r[features.LABEL_KEY] for r in transformed] == [0, 1, 0, 1]


def test_every_model_input_is_produced(transformed):
    assert set(features.DENSE_XF + features.CATEGORICAL_XF) <= set(transformed[0])
