"""The synthetic generator: determinism, die grid, limits and bins, labels."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from data.geometry import WaferGeometry
from data.synthetic import GeneratorConfig, generate, lot_ids
from data.test_program import FAMILY_BINS, PARAMETRIC_FEATURES, PASS_BIN, TEST_PROGRAM
from data.writers import write_dataset

CONFIG = GeneratorConfig(lots=3, wafers_per_lot=2, seed=11)


@pytest.fixture(scope="module")
def wafers():
    return list(generate(CONFIG))


def test_same_seed_same_data_other_seed_other_data(wafers):
    again = list(generate(CONFIG))
    for a, b in zip(wafers, again, strict=True):
        pd.testing.assert_frame_equal(a.dies, b.dies)
        pd.testing.assert_frame_equal(a.labels, b.labels)
    other = next(generate(GeneratorConfig(lots=3, wafers_per_lot=2, seed=12)))
    assert not other.dies[PARAMETRIC_FEATURES[0]].equals(wafers[0].dies[PARAMETRIC_FEATURES[0]])


def test_a_lot_does_not_depend_on_how_many_lots_are_generated(wafers):
    bigger = list(generate(GeneratorConfig(lots=5, wafers_per_lot=2, seed=11)))
    assert lot_ids(CONFIG) == lot_ids(GeneratorConfig(lots=5, wafers_per_lot=2, seed=11))[:3]
    pd.testing.assert_frame_equal(wafers[0].dies, bigger[0].dies)


def test_die_grid_is_a_circle_inside_the_edge_exclusion():
    geom = WaferGeometry()
    grid = geom.die_grid()
    assert 400 < len(grid) < 1000  # several hundred dies on a 300 mm wafer
    assert len(np.unique(grid, axis=0)) == len(grid)
    corner = np.hypot((np.abs(grid[:, 0]) + 0.5) * geom.die_width_mm, (np.abs(grid[:, 1]) + 0.5) * geom.die_height_mm)
    assert corner.max() <= geom.usable_radius_mm
    # Symmetric about the centre, and the centre die is on the wafer.
    assert {(0, 0)} <= set(map(tuple, grid))
    assert set(map(tuple, grid)) == set(map(tuple, -grid))


def test_every_die_is_on_the_grid_and_sites_are_multisite(wafers):
    geom = WaferGeometry()
    grid = set(map(tuple, geom.die_grid()))
    for wafer in wafers:
        assert set(zip(wafer.dies.x, wafer.dies.y, strict=True)) == grid
        assert set(wafer.dies.site) == set(range(CONFIG.sites))


def test_bins_are_consistent_with_limits(wafers):
    for wafer in wafers:
        dies = wafer.dies
        for _, die in dies.iterrows():
            values = [die[t.feature_name] for t in TEST_PROGRAM]
            first_fail = next((t for t, v in zip(TEST_PROGRAM, values, strict=True)
                               if not np.isnan(v) and not t.in_limits(np.array([v]))[0]), None)
            if die.hard_bin == PASS_BIN:
                assert first_fail is None and not np.isnan(values).any()
                assert die.soft_bin == PASS_BIN
            else:
                assert first_fail is not None
                assert die.hard_bin == FAMILY_BINS[first_fail.family]
                assert die.soft_bin // 100 == die.hard_bin
                # Stop on first fail: nothing measured after the failing test.
                after = values[TEST_PROGRAM.index(first_fail) + 1 :]
                assert np.isnan(after).all()
        break  # one wafer row by row is enough; the next test covers all wafers vectorised


def test_pass_dies_are_within_all_limits_on_every_wafer(wafers):
    for wafer in wafers:
        passed = wafer.dies[wafer.dies.hard_bin == PASS_BIN]
        for test in TEST_PROGRAM:
            assert test.in_limits(passed[test.feature_name].to_numpy()).all(), test.name


def test_test_program_has_families_units_and_limits():
    assert len(TEST_PROGRAM) >= 50
    assert {t.family for t in TEST_PROGRAM} == set(FAMILY_BINS)
    assert len({t.number for t in TEST_PROGRAM}) == len(TEST_PROGRAM)
    for t in TEST_PROGRAM:
        assert t.units and (t.lo_limit is not None or t.hi_limit is not None)
        if t.lo_limit is not None and t.hi_limit is not None:
            assert t.lo_limit < t.nominal < t.hi_limit


def test_labels_only_for_sort_pass_dies_and_rate_in_range(wafers):
    labels = pd.concat([w.labels for w in wafers])
    for wafer in wafers:
        passed = wafer.dies[wafer.dies.hard_bin == PASS_BIN]
        assert list(wafer.labels.part_id) == list(passed.part_id)
    assert set(labels.ft_fail) <= {0, 1}
    assert ((labels.ft_fail_prob > 0) & (labels.ft_fail_prob < 1)).all()
    # Default dataset: about 2-5 % final-test fails among sort-passing dies.
    big = pd.concat([w.labels for w in generate(GeneratorConfig())])
    assert 0.02 <= big.ft_fail.mean() <= 0.05


def test_label_depends_on_neighbourhood_and_parametrics():
    """The true probability is higher next to failing dies and near limits: a model has signal."""
    from data.wafer_features import add_wafer_context

    frames = []
    for wafer in generate(GeneratorConfig(lots=4, wafers_per_lot=3, seed=5)):
        ctx = add_wafer_context(wafer.dies)
        frames.append(ctx.merge(wafer.labels, on=["lot_id", "wafer_id", "part_id", "x", "y"]))
    df = pd.concat(frames)
    assert df[df.n_fail_neighbors >= 2].ft_fail_prob.mean() > 1.5 * df[df.n_fail_neighbors == 0].ft_fail_prob.mean()


def test_writer_layout_and_manifest(tmp_path):
    manifest = write_dataset(GeneratorConfig(lots=2, wafers_per_lot=2, seed=3), str(tmp_path))
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs)
    assert len([f for f in files if f.startswith("wafers/")]) == 4
    assert len([f for f in files if f.startswith("labels/")]) == 2
    on_disk = json.load(open(tmp_path / "manifest.json"))
    assert on_disk["dies"] == manifest["dies"] == sum(w["dies"] for w in manifest["wafers"])
    wafer = pd.read_parquet(tmp_path / manifest["wafers"][0]["file"])
    assert "ft_fail" not in wafer.columns  # labels travel beside the sort data, never inside it
    assert len(wafer) == manifest["wafers"][0]["dies"]


def test_config_rejects_bad_site_count():
    with pytest.raises(ValueError, match="sites"):
        GeneratorConfig(sites=3)
