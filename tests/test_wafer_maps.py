"""Wafer maps (data/wafer_maps.py): the native die-grid map and the fixed physical map, built from
real generated STDF files read back by the ingest's reader."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os

import numpy as np
import pandas as pd
import pytest

from data.generate import build_parser
from data.generate import main as generate_main
from data.patterns import (
    GENERATOR_CLASSES,
    MAP_CHANNELS,
    MAP_SIZE,
    SidecarError,
    labels_for,
    parse_sidecar,
    read_sidecar,
    sidecar_text,
)
from data.products import PRODUCTS
from data.readers import read_stdf
from data.stdf.writer import encode_wafer, write_stdf_wafer
from data.synthetic import MIXABLE, GeneratorConfig, draw_patterns, generate
from data.wafer_maps import FAIL, OFF_WAFER, PASS, MapGeometry, MapGeometryError, fixed_map, native_map
from data.writers import _PATTERN_FIELDS, _generator_settings, write_dataset

ON, FAILED = MAP_CHANNELS.index("on_wafer"), MAP_CHANNELS.index("fail")


@pytest.fixture(scope="module", params=sorted(PRODUCTS))
def read_back(request, tmp_path_factory):
    """One generated wafer of each product, written as STDF and read back: (product, WaferRead)."""
    wafer = next(generate(GeneratorConfig(lots=1, wafers_per_lot=1, seed=3, product=request.param)))
    path = write_stdf_wafer(wafer, str(tmp_path_factory.mktemp(request.param)))
    (read,) = read_stdf(path)
    return request.param, read


def test_native_map_is_the_products_die_grid(read_back):
    product, read = read_back
    geometry = MapGeometry.from_program(read.program, read.source)
    native = native_map(read.dies, geometry)
    rows, cols = np.nonzero(native.cells != OFF_WAFER)
    on_wafer = {(native.x_min + c, native.y_max - r) for r, c in zip(rows, cols, strict=True)}
    grid = {tuple(d) for d in PRODUCTS[product].geometry.die_grid().tolist()}
    assert on_wafer == grid
    # Every die's cell says what its bin says.
    for x, y, passed in read.dies[["x", "y", "sort_pass"]].itertuples(index=False):
        assert native.cells[native.cell_of(x, y)] == (PASS if passed else FAIL)


def test_geometry_comes_from_the_file_not_the_registry(read_back):
    product, read = read_back
    geometry = MapGeometry.from_program(read.program, read.source)
    spec = PRODUCTS[product].geometry
    assert (geometry.diameter_mm, geometry.die_width_mm, geometry.die_height_mm) == pytest.approx(
        (spec.diameter_mm, spec.die_width_mm, spec.die_height_mm)
    )
    no_wcr = dataclasses.replace(read.program, wcr=None)
    with pytest.raises(MapGeometryError, match="x.stdf: no usable wafer geometry"):
        MapGeometry.from_program(no_wcr, "x.stdf")


def test_fixed_map_shape_and_channels(read_back):
    _, read = read_back
    image = fixed_map(read.dies, MapGeometry.from_program(read.program, read.source))
    assert image.shape == (MAP_SIZE, MAP_SIZE, len(MAP_CHANNELS)) and image.dtype == np.float32
    assert set(np.unique(image)) <= {0.0, 1.0}
    assert not (image[..., FAILED] > image[..., ON]).any()  # a fail is always on the wafer
    # The wafer is a disc centred in the image: the corners are off it, the centre on it, and it
    # fills most of the inscribed circle.
    assert image[0, 0, ON] == image[-1, -1, ON] == 0 and image[MAP_SIZE // 2, MAP_SIZE // 2, ON] == 1
    assert 0.6 < image[..., ON].sum() / (np.pi * (MAP_SIZE / 2) ** 2) <= 1.0


def _one_failing_die(geometry: MapGeometry, x: int, y: int) -> np.ndarray:
    dies = pd.DataFrame({"x": [x], "y": [y], "sort_pass": [False]})
    return fixed_map(dies, geometry)


# Worked by hand. WF7N, 300 mm / 32 = 9.375 mm pixels: die (5, -3) spans x 49.5..60.5 mm and
# y -31.5..-22.5 mm; the only pixel centre inside it is column 21 (x 55.31) and row 18 (y -23.44).
# MX3A, 200 mm / 32 = 6.25 mm pixels: die (10, 11) spans x 61.75..68.25, y 54.6..59.8: column 26
# (x 65.63), row 6 (y 59.38). Row 0 is the top (y up), column 0 the left (x right).
@pytest.mark.parametrize(
    ("product", "die", "pixel"),
    [("WF7N", (5, -3), (18, 21)), ("WF7N", (-5, 3), (13, 10)), ("MX3A", (10, 11), (6, 26))],
)
def test_a_die_lands_on_its_pixel(product, die, pixel):
    spec = PRODUCTS[product].geometry
    geometry = MapGeometry(spec.diameter_mm, spec.die_width_mm, spec.die_height_mm)
    image = _one_failing_die(geometry, *die)
    assert list(zip(*np.nonzero(image[..., FAILED]), strict=True)) == [pixel]


def test_an_untested_die_of_the_grid_is_on_the_wafer_and_not_failed():
    spec = PRODUCTS["WF7N"].geometry
    geometry = MapGeometry(spec.diameter_mm, spec.die_width_mm, spec.die_height_mm)
    native = native_map(pd.DataFrame({"x": [0], "y": [0], "sort_pass": [False]}), geometry)
    assert (native.cells == FAIL).sum() == 1
    assert (native.cells == PASS).sum() == len(spec.die_grid()) - 1
    # A centre die other than (0, 0) shifts the grid with it.
    shifted = native_map(pd.DataFrame({"x": [], "y": [], "sort_pass": []}), dataclasses.replace(geometry, center_x=20))
    assert shifted.x_min == native.x_min + 20


def test_products_with_different_dies_give_alike_maps():
    """The same physical pattern (a failing disc of a third of the radius) on both products covers
    about the same pixels, though their dies differ by a factor of three in area."""
    images = []
    for product in ("WF7N", "MX3A"):
        spec = PRODUCTS[product].geometry
        grid = spec.die_grid()
        radius = spec.radius_of(grid[:, 0], grid[:, 1]) / spec.radius_mm
        dies = pd.DataFrame({"x": grid[:, 0], "y": grid[:, 1], "sort_pass": radius > 0.33})
        geometry = MapGeometry(spec.diameter_mm, spec.die_width_mm, spec.die_height_mm)
        images.append(fixed_map(dies, geometry)[..., FAILED].astype(bool))
    overlap = (images[0] & images[1]).sum() / (images[0] | images[1]).sum()
    assert overlap > 0.7


# --- The generator's pattern mode and maps-only mode, and the pattern-labels sidecar ---------------

MAPS = GeneratorConfig(lots=6, wafers_per_lot=25, seed=11, patterns=True, maps_only=True)


@pytest.fixture(scope="module")
def maps_dataset(tmp_path_factory) -> tuple[str, dict]:
    """150 maps-only wafers of WF7N as bin-map STDF, with their pattern sidecars."""
    out = str(tmp_path_factory.mktemp("maps"))
    return out, write_dataset(MAPS, out, "stdf")


# SHA-256 of the STDF files of GeneratorConfig(seed=42)'s first lot, written by the generator
# before the pattern mode existed: the default draws (and the writer) must not move.
DEFAULT_WAFER_SHA256 = {
    "WFR598.1-W01": "389b4d09704a966b66a3882c1f9bd573109ec13d3a12c325f7888353d4709b1d",
    "WFR598.1-W02": "16beeb26f9ce1a742325529b2ed46b48c2ccab348625cdbdb255486faf0574d2",
}


def test_default_config_keeps_the_die_level_draws_and_manifest():
    """The pattern mode is opt-in: the default config writes the bytes it wrote before, and no
    pattern field reaches its manifest."""
    config = GeneratorConfig(lots=1, wafers_per_lot=2, seed=42)
    digests = {w.wafer_id: hashlib.sha256(encode_wafer(w)).hexdigest() for w in generate(config)}
    assert digests == DEFAULT_WAFER_SHA256
    assert not set(_PATTERN_FIELDS) & set(_generator_settings(config))
    assert set(_PATTERN_FIELDS) <= set(_generator_settings(dataclasses.replace(config, patterns=True)))


def test_full_and_maps_only_modes_draw_the_same_patterns():
    full = GeneratorConfig(lots=2, wafers_per_lot=4, seed=11, patterns=True, defect_wafer_share=0.8)
    maps = dataclasses.replace(full, maps_only=True)
    assert [w.defect_pattern for w in generate(full)] == [w.defect_pattern for w in generate(maps)]


def test_pattern_mode_mixes_and_keeps_rare_classes_rare(maps_dataset):
    _, manifest = maps_dataset
    drawn = [w["defect_pattern"] for w in manifest["wafers"]]
    assert len(drawn) == MAPS.lots * MAPS.wafers_per_lot
    share_none = drawn.count("none") / len(drawn)
    assert 0.5 < share_none < 0.8  # most wafers show no pattern (defect_wafer_share 0.35)
    mixed = [d.split("+") for d in drawn if "+" in d]
    assert mixed and all(b in MIXABLE[a] for a, b in mixed)
    single = [d for d in drawn if d != "none" and "+" not in d]
    assert "local" in single and single.count("edge_ring") > single.count("near_full")


def test_a_mixed_wafer_fails_where_either_pattern_kills():
    config = GeneratorConfig(patterns=True, defect_wafer_share=1.0, mixed_share=1.0, pattern_weights="uniform")
    spec = PRODUCTS["WF7N"].geometry
    grid = spec.die_grid()
    rx, ry = (
        grid[:, 0] * spec.die_width_mm / spec.usable_radius_mm,
        grid[:, 1] * spec.die_height_mm / spec.usable_radius_mm,
    )
    for wafer_num in range(1, 40):
        drawn, density = draw_patterns(config, "L1", wafer_num, rx, ry)
        if len(drawn) == 2:
            break
    assert len(drawn) == 2 and drawn[1] in MIXABLE[drawn[0]]
    assert ((density >= 0) & (density <= 1)).all() and density.max() > 0.5


def test_local_clusters_stay_away_from_the_edge():
    config = GeneratorConfig(patterns=True, defect_wafer_share=1.0, mixed_share=0.0, pattern_weights="uniform")
    spec = PRODUCTS["WF7N"].geometry
    grid = spec.die_grid()
    rx, ry = (
        grid[:, 0] * spec.die_width_mm / spec.usable_radius_mm,
        grid[:, 1] * spec.die_height_mm / spec.usable_radius_mm,
    )
    peaks = []
    for wafer_num in range(1, 200):
        drawn, density = draw_patterns(config, "L1", wafer_num, rx, ry)
        if drawn == ("local",):
            peaks.append(float(np.hypot(rx, ry)[density.argmax()]))
    assert len(peaks) >= 10
    assert max(peaks) < 0.8 and min(peaks) > 0.15


def test_maps_only_files_are_real_stdf_and_give_the_drawn_maps(maps_dataset):
    out, manifest = maps_dataset
    sidecars = {}
    for path in sorted(glob.glob(os.path.join(out, "patterns", "*.csv"))):
        sidecars.update(read_sidecar(path))
    assert len(sidecars) == len(manifest["wafers"])
    assert not os.path.exists(os.path.join(out, "labels"))  # no final test in maps-only mode
    by_wafer = {w["wafer_id"]: w for w in manifest["wafers"]}
    fail_share = {}
    for entry in manifest["wafers"][:40]:
        (read,) = read_stdf(os.path.join(out, entry["file"]))
        assert len(read.dies) == len(PRODUCTS["WF7N"].geometry.die_grid()) and not read.program.tests
        classes = sidecars[(read.lot_id, read.wafer_id)]
        assert classes == tuple(
            sorted(GENERATOR_CLASSES[p] for p in by_wafer[read.wafer_id]["defect_pattern"].split("+") if p != "none")
        )
        image = fixed_map(read.dies, MapGeometry.from_program(read.program, read.source))
        fail_share[classes] = fail_share.get(classes, []) + [image[..., FAILED].sum() / image[..., ON].sum()]
    # No-pattern wafers fail only at the baseline rate; patterned ones more.
    assert max(fail_share[()]) < 0.08
    assert np.mean([s for c, v in fail_share.items() if c for s in v]) > np.mean(fail_share[()])


def test_sidecar_round_trip_and_clear_errors(tmp_path):
    text = sidecar_text([("L1", "L1-W01", ()), ("L1", "L1-W02", ("Scratch", "Center"))])
    assert text.splitlines() == ["lot_id,wafer_id,patterns", "L1,L1-W01,none", "L1,L1-W02,Center;Scratch"]
    path = tmp_path / "L1.csv"
    path.write_text(text)
    labels = read_sidecar(str(path))
    assert labels == {("L1", "L1-W01"): (), ("L1", "L1-W02"): ("Center", "Scratch")}
    with pytest.raises(SidecarError, match=r"wafer L1-W09 of lot L1 has no row in .*L1.csv"):
        labels_for(labels, "L1", "L1-W09", str(path))
    bad = tmp_path / "bad.csv"
    bad.write_text("lot_id,wafer_id,patterns\nL1,L1-W01,none\nL1,L1-W02,Scratch;Blob\n")
    with pytest.raises(
        SidecarError, match=r"bad.csv line 3: wafer L1-W02 of lot L1: unknown pattern class\(es\) \['Blob'\]"
    ):
        read_sidecar(str(bad))
    bad.write_text("lot,wafer_id,patterns\n")
    with pytest.raises(SidecarError, match=r"bad.csv: pattern sidecar lacks column\(s\) \['lot_id'\]"):
        read_sidecar(str(bad))
    bad.write_text("lot_id,wafer_id,patterns\nL1,L1-W01,none\nL1,L1-W01,Donut\n")
    with pytest.raises(SidecarError, match="line 3: wafer L1-W01 of lot L1 is listed twice"):
        read_sidecar(str(bad))
    with pytest.raises(SidecarError, match="none.*cannot be combined"):
        parse_sidecar("lot_id,wafer_id,patterns\nL1,W1,none;Donut\n", "x.csv")
    with pytest.raises(SidecarError, match="missing.csv: cannot read"):
        read_sidecar(str(tmp_path / "missing.csv"))


def test_generate_command_line_writes_a_maps_only_dataset(tmp_path, capsys):
    manifest = generate_main(
        ["--out", str(tmp_path), "--lots", "2", "--wafers-per-lot", "3", "--maps-only", "--format", "parquet"]
    )
    assert manifest["generator"]["patterns"] and manifest["generator"]["maps_only"]
    assert len(glob.glob(str(tmp_path / "wafers" / "*" / "*.parquet"))) == 6
    assert len(glob.glob(str(tmp_path / "patterns" / "*.csv"))) == 2
    help_text = build_parser().format_help()
    for option in ("--patterns", "--maps-only", "--pattern-weights", "--mixed-share", "--defect-wafer-share"):
        assert option in help_text
    assert "default wm811k" in " ".join(help_text.split())
