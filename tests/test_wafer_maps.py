"""Wafer maps (data/wafer_maps.py): the native die-grid map and the fixed physical map, built from
real generated STDF files read back by the ingest's reader."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from data.patterns import MAP_CHANNELS, MAP_SIZE
from data.products import PRODUCTS
from data.readers import read_stdf
from data.stdf.writer import write_stdf_wafer
from data.synthetic import GeneratorConfig, generate
from data.wafer_maps import FAIL, OFF_WAFER, PASS, MapGeometry, MapGeometryError, fixed_map, native_map

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
