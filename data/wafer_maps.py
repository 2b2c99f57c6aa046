"""Wafer maps: one wafer's die results as an image, for the pattern model (data/patterns.py).

Two maps of a wafer, both from the geometry its own file gives (STDF WCR: wafer diameter, die width
and height, centre die; a Parquet file's program metadata carries the same), never from the synthetic
product registry:

- the native map (`native_map`): the product's own die grid, one cell per die, rows = y from the top
  (the highest y first), columns = x from the left; cells are `OFF_WAFER` (no die there), `PASS`
  (a die of the grid that passed sort, or was never tested) or `FAIL` (failed sort). WM-811K stores
  its maps this way (0 / 1 / 2).
- the fixed map (`fixed_map`): MAP_SIZE x MAP_SIZE x 2 float32 in physical coordinates: the wafer's
  diameter spans the image, x to the right, y up, so the notch (WCR WF_FLAT 'D') is at the bottom.
  Each pixel takes the die under its centre: channel "on_wafer" is 1 where that die is on the grid,
  channel "fail" 1 where it failed sort. A 300 mm wafer of 11 x 9 mm dies and a 200 mm wafer of
  6.5 x 5.2 mm dies give maps of the same size where the same pattern looks alike.

The die grid: every die whose four corners lie inside the usable radius (diameter / 2 minus the
edge exclusion, which a WCR does not carry: `edge_exclusion_mm`, 3 mm by default, as
data/geometry.py), plus every die the file tested (a tested die is on the wafer, whatever the
exclusion says). A die of the grid the file has no result for counts as on the wafer and not failed:
an untested die is not evidence of a defect.

Orientation: the reader's WCR carries the sizes and the centre die but not WF_FLAT / POS_X / POS_Y,
so the maps take x right, y up, notch down, which is what data/stdf/writer.py writes; a tester that
writes another orientation needs those fields read first.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pandas as pd

from data.geometry import WaferGeometry
from data.patterns import MAP_CHANNELS, MAP_SIZE
from data.program import FileProgram
from data.readers import WaferRead
from data.wafers import assemble_wafer

OFF_WAFER, PASS, FAIL = 0, 1, 2  # native-map cell values (WM-811K's)
DEFAULT_EDGE_EXCLUSION_MM = WaferGeometry.edge_exclusion_mm


class MapGeometryError(ValueError):
    """A wafer whose file does not say how big its wafer and dies are: no map can be placed."""


@dataclasses.dataclass(frozen=True)
class MapGeometry:
    """What a map needs from the file: wafer and die size in mm and the centre die's x / y."""

    diameter_mm: float
    die_width_mm: float
    die_height_mm: float
    center_x: float = 0.0
    center_y: float = 0.0
    edge_exclusion_mm: float = DEFAULT_EDGE_EXCLUSION_MM

    @classmethod
    def from_program(
        cls, program: FileProgram | None, source: str = "", edge_exclusion_mm: float = DEFAULT_EDGE_EXCLUSION_MM
    ) -> MapGeometry:
        """The geometry a file's program records (its WCR); MapGeometryError naming `source` if absent."""
        wcr = (program.wcr if program is not None else None) or {}
        sizes = {k: wcr.get(k) for k in ("diameter_mm", "die_width_mm", "die_height_mm")}
        missing = [k for k, v in sizes.items() if not v or not math.isfinite(v) or v <= 0]
        if missing:
            raise MapGeometryError(
                f"{source or 'wafer file'}: no usable wafer geometry (WCR {', '.join(missing)} missing or zero): "
                "a wafer map needs the wafer diameter and die size from the file"
            )
        centre = {k: wcr.get(k) for k in ("center_x", "center_y")}
        if any(v is None for v in centre.values()):
            raise MapGeometryError(f"{source or 'wafer file'}: WCR gives no centre die (CENTER_X / CENTER_Y)")
        return cls(**sizes, **centre, edge_exclusion_mm=edge_exclusion_mm)

    def die_grid(self) -> np.ndarray:
        """The dies on the wafer as int32 [n, 2] (x, y), from the file's sizes and centre die."""
        geometry = WaferGeometry(
            diameter_mm=self.diameter_mm,
            die_width_mm=self.die_width_mm,
            die_height_mm=self.die_height_mm,
            edge_exclusion_mm=self.edge_exclusion_mm,
        )
        grid = _centred_grid(geometry)
        # WaferGeometry centres die (0, 0); the file's centre die may be another (integer) one.
        return grid + np.array([round(self.center_x), round(self.center_y)], dtype=np.int32)


@functools.lru_cache(maxsize=64)
def _centred_grid(geometry: WaferGeometry) -> np.ndarray:
    grid = geometry.die_grid()
    grid.setflags(write=False)  # cached: shared by every wafer of the product
    return grid


@dataclasses.dataclass(frozen=True)
class NativeMap:
    """A wafer on its own die grid: `cells[row, col]` is the die at x = x_min + col, y = y_max - row."""

    cells: np.ndarray  # int8 [rows, cols] of OFF_WAFER / PASS / FAIL
    x_min: int
    y_max: int

    def cell_of(self, x: int, y: int) -> tuple[int, int]:
        """(row, col) of die (x, y)."""
        return self.y_max - y, x - self.x_min


def _die_status(dies: pd.DataFrame, geometry: MapGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, failed) of every die of the grid and every tested die; untested grid dies did not fail."""
    grid = geometry.die_grid()
    x_t = dies["x"].to_numpy(np.int64)
    y_t = dies["y"].to_numpy(np.int64)
    failed_t = ~dies["sort_pass"].to_numpy(bool)
    x = np.concatenate([grid[:, 0].astype(np.int64), x_t])
    y = np.concatenate([grid[:, 1].astype(np.int64), y_t])
    failed = np.concatenate([np.zeros(len(grid), dtype=bool), failed_t])
    return x, y, failed


def native_map(dies: pd.DataFrame, geometry: MapGeometry) -> NativeMap:
    """The wafer on its die grid (see the module docstring). `dies` has x, y, sort_pass, one row per
    die (retests resolved: data/wafers.py)."""
    x, y, failed = _die_status(dies, geometry)
    x_min, x_max, y_min, y_max = int(x.min()), int(x.max()), int(y.min()), int(y.max())
    cells = np.full((y_max - y_min + 1, x_max - x_min + 1), OFF_WAFER, dtype=np.int8)
    rows, cols = y_max - y, x - x_min
    cells[rows, cols] = PASS
    # Tested dies come after the grid's: a failed one overwrites its grid cell.
    cells[rows[failed], cols[failed]] = FAIL
    return NativeMap(cells, x_min, y_max)


def pixel_centres_mm(size: int, diameter_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Physical (x, y) in mm from the wafer centre of each pixel's centre, each [size, size]:
    row 0 is the top (largest y), column 0 the left (smallest x)."""
    step = diameter_mm / size
    along = (np.arange(size) + 0.5) * step - diameter_mm / 2.0
    px, py = np.meshgrid(along, -along)
    return px, py


def fixed_map(dies: pd.DataFrame, geometry: MapGeometry, size: int = MAP_SIZE) -> np.ndarray:
    """The wafer as a [size, size, len(MAP_CHANNELS)] float32 image in physical coordinates (see the
    module docstring): each pixel takes the die under its centre."""
    native = native_map(dies, geometry)
    px, py = pixel_centres_mm(size, geometry.diameter_mm)
    # Die (x, y) covers [(x - cx) * w - w/2, (x - cx) * w + w/2): the die under a point.
    die_x = np.floor(px / geometry.die_width_mm + 0.5).astype(np.int64) + round(geometry.center_x)
    die_y = np.floor(py / geometry.die_height_mm + 0.5).astype(np.int64) + round(geometry.center_y)
    rows, cols = native.y_max - die_y, die_x - native.x_min
    inside = (rows >= 0) & (rows < native.cells.shape[0]) & (cols >= 0) & (cols < native.cells.shape[1])
    cell = np.full((size, size), OFF_WAFER, dtype=np.int8)
    cell[inside] = native.cells[rows[inside], cols[inside]]
    image = np.empty((size, size, len(MAP_CHANNELS)), dtype=np.float32)
    image[..., MAP_CHANNELS.index("on_wafer")] = cell != OFF_WAFER
    image[..., MAP_CHANNELS.index("fail")] = cell == FAIL
    return image


def pixel_of_die(x: int, y: int, geometry: MapGeometry, size: int = MAP_SIZE) -> tuple[int, int]:
    """(row, col) of the pixel holding the centre of die (x, y): where a die lands on the fixed map."""
    step = geometry.diameter_mm / size
    cx_mm = (x - geometry.center_x) * geometry.die_width_mm
    cy_mm = (y - geometry.center_y) * geometry.die_height_mm
    return int((geometry.diameter_mm / 2.0 - cy_mm) // step), int((cx_mm + geometry.diameter_mm / 2.0) // step)


@dataclasses.dataclass(frozen=True)
class WaferMap:
    """One wafer's fixed map with what names it: what the map ExampleGen and the pattern predict
    client both build from a wafer's reads (`wafer_map_of`)."""

    lot_id: str
    wafer_id: str
    product: str  # MIR PART_TYP of the wafer's newest file; "" if it names none
    source: str  # the newest file of the wafer: its geometry placed the map
    image: np.ndarray  # float32 [MAP_SIZE, MAP_SIZE, len(MAP_CHANNELS)]
    superseded: int = 0  # retested dies whose earlier results were replaced


def wafer_map_of(reads: list[WaferRead], edge_exclusion_mm: float = DEFAULT_EDGE_EXCLUSION_MM) -> WaferMap:
    """All reads of one wafer (data/readers.py WaferRead, any files) -> its fixed map: retests
    resolved (data/wafers.py, the last test of a die wins), the geometry and product from the
    newest file (by START_T). MapGeometryError naming that file when it has no usable WCR."""
    wafer = assemble_wafer(reads)
    newest = max(reads, key=lambda r: (r.start_time, r.source))
    geometry = MapGeometry.from_program(newest.program, newest.source, edge_exclusion_mm)
    product = (newest.program.revision or {}).get("PART_TYP", "") if newest.program else ""
    image = fixed_map(wafer.dies, geometry)
    return WaferMap(wafer.lot_id, wafer.wafer_id, str(product), newest.source, image, wafer.superseded)
