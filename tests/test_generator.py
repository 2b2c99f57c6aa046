"""The synthetic generator, for every product: determinism, die grid, limits and bins, labels, writers, CLI."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from data import generate as generate_cli
from data.geometry import WaferGeometry
from data.products import PRODUCTS
from data.program import FileProgram, TestDef, is_test_feature
from data.synthetic import DIE_COLUMNS, LABEL_COLUMNS, LABEL_KEYS, GeneratorConfig, generate, lot_ids
from data.test_program import LATENT_FACTORS, fail_bins, program_features
from data.writers import write_dataset

CONFIGS = {name: GeneratorConfig(product=name, lots=2, wafers_per_lot=2, seed=11) for name in PRODUCTS}


@pytest.fixture(scope="module", params=sorted(PRODUCTS))
def product_wafers(request):
    """(config, wafers) of a small dataset of each product."""
    config = CONFIGS[request.param]
    return config, list(generate(config))


def test_same_config_same_data_other_seed_other_data(product_wafers):
    config, wafers = product_wafers
    again = list(generate(config))
    for a, b in zip(wafers, again, strict=True):
        pd.testing.assert_frame_equal(a.dies, b.dies)
        pd.testing.assert_frame_equal(a.labels, b.labels)
    first = program_features(config.product_spec.program)[0]
    other = next(generate(GeneratorConfig(product=config.product, lots=2, wafers_per_lot=2, seed=12)))
    assert not other.dies[first].equals(wafers[0].dies[first])


def test_a_lot_does_not_depend_on_how_many_lots_are_generated(product_wafers):
    config, wafers = product_wafers
    bigger = GeneratorConfig(product=config.product, lots=4, wafers_per_lot=2, seed=11)
    assert lot_ids(config) == lot_ids(bigger)[:2]
    pd.testing.assert_frame_equal(wafers[0].dies, next(generate(bigger)).dies)


def test_lot_ids_name_the_product():
    wf7n, mx3a = (lot_ids(GeneratorConfig(product=p, lots=3, seed=1)) for p in ("WF7N", "MX3A"))
    assert all(lot.startswith("WF") for lot in wf7n) and all(lot.startswith("MX") for lot in mx3a)
    assert not set(wf7n) & set(mx3a)


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_die_grid_is_a_circle_inside_the_edge_exclusion(name):
    geom = PRODUCTS[name].geometry
    grid = geom.die_grid()
    assert 400 < len(grid) < 1000  # several hundred dies a wafer
    assert len(np.unique(grid, axis=0)) == len(grid)
    corner = np.hypot((np.abs(grid[:, 0]) + 0.5) * geom.die_width_mm, (np.abs(grid[:, 1]) + 0.5) * geom.die_height_mm)
    assert corner.max() <= geom.usable_radius_mm
    # Symmetric about the centre, and the centre die is on the wafer.
    assert {(0, 0)} <= set(map(tuple, grid))
    assert set(map(tuple, grid)) == set(map(tuple, -grid))


def test_every_die_is_on_the_grid_and_sites_are_the_products_touchdown(product_wafers):
    config, wafers = product_wafers
    spec = config.product_spec
    grid = set(map(tuple, spec.geometry.die_grid()))
    for wafer in wafers:
        assert set(zip(wafer.dies.x, wafer.dies.y, strict=True)) == grid
        assert set(wafer.dies.site) == set(range(spec.sites))
        assert (wafer.dies["head"] == 1).all()
        # Site = position inside the touchdown block: x mod width, y mod height.
        width, _ = spec.touchdown
        np.testing.assert_array_equal(wafer.dies.site % width, wafer.dies.x % width)


def test_dies_columns_are_tester_data_only(product_wafers):
    config, wafers = product_wafers
    features = list(program_features(config.product_spec.program))
    for wafer in wafers:
        assert list(wafer.dies.columns) == list(DIE_COLUMNS) + features
        assert all(is_test_feature(f) for f in features)
        assert wafer.dies.sort_pass.dtype == bool
        for dtype in wafer.dies[features].dtypes:
            assert dtype == np.float32
        # No ground truth in what a tester writes: no label, probability, pattern or bad site.
        truth = ("ft_fail", "prob", "pattern", "defect", "bad_site", "density", "latent")
        assert not [c for c in wafer.dies.columns if any(t in c for t in truth)]


def test_bins_follow_the_first_failing_test_and_sort_pass_the_good_bins(product_wafers):
    config, wafers = product_wafers
    spec = config.product_spec
    program = spec.program
    bins = fail_bins(program, spec.family_bins)
    for wafer in wafers:
        dies = wafer.dies
        values = [dies[list(t.features)].to_numpy() for t in program]  # [dies, pins] per test
        fails = np.stack(
            [~t.in_limits(v).all(axis=1) & ~np.isnan(v).any(axis=1) for t, v in zip(program, values, strict=True)],
            axis=1,
        )
        first = np.where(fails.any(axis=1), fails.argmax(axis=1), -1)
        assert (dies.sort_pass == (first < 0)).all()
        assert (dies.sort_pass == dies.hard_bin.isin(spec.good_hard_bins)).all()
        assert (dies.sort_pass == dies.soft_bin.isin(spec.good_soft_bins)).all()
        failed = first >= 0
        expected = np.array([bins[j] for j in first[failed]]).reshape(-1, 2)
        np.testing.assert_array_equal(dies.loc[failed, ["hard_bin", "soft_bin"]].to_numpy(), expected)
        # Stop on first fail: nothing measured after the failing test, everything up to it.
        for j, v in enumerate(values):
            assert np.isnan(v[failed & (first < j)]).all()
            assert not np.isnan(v[~failed | (first >= j)]).any()


def test_pass_dies_are_within_all_limits(product_wafers):
    config, wafers = product_wafers
    for wafer in wafers:
        passed = wafer.dies[wafer.dies.sort_pass]
        for test in config.product_spec.program:
            assert test.in_limits(passed[list(test.features)].to_numpy()).all(), test.name


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_test_program_has_families_units_and_limits(name):
    spec = PRODUCTS[name]
    assert {t.family for t in spec.program} == set(spec.family_bins)
    assert len({t.number for t in spec.program}) == len(spec.program)
    for t in spec.program:
        assert t.units and (t.lo_limit is not None or t.hi_limit is not None)
        if t.lo_limit is not None and t.hi_limit is not None:
            assert t.lo_limit < t.nominal < t.hi_limit
    defs = spec.test_defs()
    assert [d.feature for d in defs] == list(program_features(spec.program))
    assert all(TestDef.from_dict(d.to_dict()) == d for d in defs)


def test_labels_only_for_sort_pass_dies(product_wafers):
    _, wafers = product_wafers
    for wafer in wafers:
        assert list(wafer.labels.columns) == list(LABEL_KEYS) + list(LABEL_COLUMNS)
        passed = wafer.dies[wafer.dies.sort_pass]
        assert list(wafer.labels.part_id) == list(passed.part_id)
        labels = wafer.labels
        assert set(labels.ft_fail) <= {0, 1}
        for column in ("ft_fail_prob", "ft_fail_prob_observable"):
            assert ((labels[column] > 0) & (labels[column] < 1)).all()


# Band of the final-test fail rate among sort-passing dies. Over 160 wafers (80 lots, seed 1000) both
# products' true rate is 3.4 %; a lot's rate has a standard deviation of about 3 points (defect
# signatures and poor wafers come lot by lot), so the mean of 12 lots stays within about 2 points of
# it. 2-5 % is the product requirement, and this seeded dataset lands at 4.1 % (WF7N) and 3.4 % (MX3A).
@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_final_test_fail_rate_is_in_band(name):
    labels = pd.concat([w.labels for w in generate(GeneratorConfig(product=name, lots=12, wafers_per_lot=2, seed=42))])
    assert 0.02 <= labels.ft_fail.mean() <= 0.05
    assert 0.02 <= labels.ft_fail_prob.mean() <= 0.05
    # Averaging out the hidden term changes the rate little, and ranks the dies almost as the truth.
    assert abs(labels.ft_fail_prob_observable.mean() - labels.ft_fail_prob.mean()) < 0.003
    assert np.corrcoef(labels.ft_fail_prob_observable, labels.ft_fail_prob)[0, 1] > 0.8


def test_label_depends_on_neighbourhood_and_parametrics():
    """The true probability is higher next to failing dies: a model has signal."""
    from data.wafer_features import add_wafer_context

    frames = []
    for wafer in generate(GeneratorConfig(lots=4, wafers_per_lot=3, seed=5)):
        ctx = add_wafer_context(wafer.dies)
        frames.append(ctx.merge(wafer.labels, on=list(LABEL_KEYS)))
    df = pd.concat(frames)
    assert df[df.n_fail_neighbors >= 2].ft_fail_prob.mean() > 1.5 * df[df.n_fail_neighbors == 0].ft_fail_prob.mean()


def file_test_defs(spec) -> list[TestDef]:
    return [dataclasses.replace(d, log_scale=False) for d in spec.test_defs()]


def test_writer_layout_manifest_and_parquet_program(tmp_path):
    config = GeneratorConfig(product="MX3A", lots=2, wafers_per_lot=1, seed=3)
    manifest = write_dataset(config, str(tmp_path))
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs)
    assert len([f for f in files if f.startswith("wafers/")]) == 2
    assert len([f for f in files if f.startswith("labels/")]) == 2
    on_disk = json.load(open(tmp_path / "manifest.json"))
    assert on_disk["dies"] == manifest["dies"] == sum(w["dies"] for w in manifest["wafers"])
    spec = config.product_spec
    assert on_disk["product"] == "MX3A" and on_disk["sites"] == 8
    assert on_disk["good_hard_bins"] == [1, 2] and on_disk["good_soft_bins"] == [1, 2]
    assert [TestDef.from_dict(t) for t in on_disk["test_program"]] == spec.test_defs()
    assert on_disk["geometry"]["diameter_mm"] == 200.0
    assert sum(on_disk["hard_bins"].values()) == on_disk["dies"]
    assert sum(on_disk["hard_bins"].get(str(b), 0) for b in spec.good_hard_bins) == on_disk["sort_pass"]

    path = tmp_path / manifest["wafers"][0]["file"]
    wafer = pd.read_parquet(path)
    assert not [c for c in wafer.columns if c.startswith("ft_fail")]  # labels travel beside the sort data
    assert len(wafer) == manifest["wafers"][0]["dies"]
    program = json.loads(pq.read_schema(path).metadata[FileProgram.METADATA_KEY])
    # The file's program is what a tester's file says: as the manifest's, less the log-scale choice.
    assert [TestDef.from_dict(t) for t in program["tests"]] == file_test_defs(spec)
    assert [t["feature"] for t in program["tests"]] == [c for c in wafer.columns if is_test_feature(c)]
    assert (program["good_hard_bins"], program["good_soft_bins"]) == ([1, 2], [1, 2])
    assert program["revision"] == {"PART_TYP": "MX3A", "JOB_NAM": "MX3A_SORT1", "JOB_REV": "1.0"}
    assert program["wcr"] == {
        "diameter_mm": 200.0,
        "die_width_mm": 6.5,
        "die_height_mm": 5.2,
        "center_x": 0,
        "center_y": 0,
    }
    assert program["start_time"] > 1_700_000_000

    labels = pd.read_parquet(tmp_path / "labels" / f"{manifest['wafers'][0]['lot_id']}.parquet")
    assert list(labels.columns) == list(LABEL_KEYS) + list(LABEL_COLUMNS)


def test_config_checks_product_and_sites():
    assert GeneratorConfig().product == "WF7N" and GeneratorConfig().product_spec.sites == 4
    assert GeneratorConfig(product="MX3A", sites=8).product_spec.sites == 8
    with pytest.raises(ValueError, match="sites"):
        GeneratorConfig(sites=8)  # WF7N is probed 4 at a time
    with pytest.raises(ValueError, match="unknown product"):
        GeneratorConfig(product="XX1")
    small = WaferGeometry(diameter_mm=100.0)
    assert GeneratorConfig(geometry=small).wafer_geometry == small
    assert GeneratorConfig(product="MX3A").wafer_geometry == PRODUCTS["MX3A"].geometry


def test_cli_writes_the_chosen_product_and_documents_every_option(tmp_path, capsys):
    manifest = generate_cli.main(
        [
            "--out",
            str(tmp_path),
            "--product",
            "MX3A",
            "--lots",
            "1",
            "--wafers-per-lot",
            "1",
            "--format",
            "parquet",
            "--program-revision",
            "2.1",
        ]
    )
    assert manifest["product"] == "MX3A" and manifest["program_revision"] == "2.1"
    assert json.loads(capsys.readouterr().out)["product"] == "MX3A"
    actions = [a for a in generate_cli.build_parser()._actions if a.dest != "help"]
    assert {a.dest for a in actions} >= {"out", "product", "lots", "wafers_per_lot", "seed", "format"}
    assert all(a.help for a in actions), [a.dest for a in actions if not a.help]
    product = next(a for a in actions if a.dest == "product")
    assert product.default == "WF7N" and set(product.choices) == set(PRODUCTS)


def test_spans_are_new_lots_later_in_time_and_drift_moves_the_process():
    """`--span K`: lots no other span has, tested after the previous span's. A drift moves every
    lot's threshold voltage by drift x span population sigmas and nothing else: the same span with
    and without it has the same dies, and each linear test differs by exactly its scale x its vt
    loading x the shift (float32 values, hence the tolerance)."""
    base = GeneratorConfig(lots=2, wafers_per_lot=1, seed=5)
    spans = {k: dataclasses.replace(base, span=k) for k in (0, 1, 2)}
    ids = {k: lot_ids(c) for k, c in spans.items()}
    assert ids[0] == lot_ids(base)  # span 0 is the dataset without spans
    assert not (set(ids[1]) & set(ids[2])) and not (set(ids[0]) & set(ids[1]))
    first = {k: next(generate(c)) for k, c in spans.items()}
    assert first[0].start_time < first[1].start_time < first[2].start_time

    still = next(generate(dataclasses.replace(base, span=3)))
    drifted = next(generate(dataclasses.replace(base, span=3, drift_per_span=0.3)))
    vt = LATENT_FACTORS.index("vt")
    moved = 0
    for test in base.product_spec.program:
        if test.log_normal or test.pin_offsets:
            continue
        column = test.features[0]
        both = still.dies[column].notna() & drifted.dies[column].notna()
        difference = (drifted.dies[column] - still.dies[column])[both].to_numpy(np.float64)
        expected = test.scale * test.loadings[vt] * 0.9
        assert np.allclose(difference, expected, atol=1e-5 * max(1.0, abs(test.nominal))), column
        moved += expected != 0
    assert moved >= 3


def test_cli_writes_a_span_into_its_folder(tmp_path):
    manifest = generate_cli.main(
        ["--out", str(tmp_path), "--lots", "1", "--wafers-per-lot", "1", "--span", "2", "--format", "parquet"]
    )
    assert manifest["generator"]["span"] == 2
    assert os.path.exists(tmp_path / "span-2" / "manifest.json")
    assert os.listdir(tmp_path / "span-2" / "labels")
    with pytest.raises(SystemExit):
        generate_cli.main(["--out", str(tmp_path), "--span", "0"])
