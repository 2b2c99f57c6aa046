"""Wafer geometry: the die grid of a product's wafer, as an STDF WCR record describes it.

Die coordinates are integer grid indices with die (0, 0) centred on the wafer centre, x growing
right and y growing up (WCR POS_X='R', POS_Y='U'). A die is on the wafer if all four of its corners
lie inside the usable radius (wafer radius minus edge exclusion). The defaults are the WF7N product's
300 mm wafer; every product names its own (data/products.py).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class WaferGeometry:
    """Geometry of one product's wafers (WCR: WAFR_SIZ, DIE_HT, DIE_WID, WF_UNITS=mm)."""

    diameter_mm: float = 300.0
    die_width_mm: float = 11.0
    die_height_mm: float = 9.0
    edge_exclusion_mm: float = 3.0
    notch: str = "D"  # WCR WF_FLAT: notch at the bottom

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0

    @property
    def usable_radius_mm(self) -> float:
        return self.radius_mm - self.edge_exclusion_mm

    def die_grid(self) -> np.ndarray:
        """All dies on the wafer as an int array [n, 2] of (x, y), in raster order."""
        nx = int(math.ceil(self.radius_mm / self.die_width_mm)) + 1
        ny = int(math.ceil(self.radius_mm / self.die_height_mm)) + 1
        xs, ys = np.meshgrid(np.arange(-nx, nx + 1), np.arange(ny, -ny - 1, -1))
        xs, ys = xs.ravel(), ys.ravel()
        # Farthest corner of each die from the centre.
        fx = (np.abs(xs) + 0.5) * self.die_width_mm
        fy = (np.abs(ys) + 0.5) * self.die_height_mm
        on_wafer = np.hypot(fx, fy) <= self.usable_radius_mm
        return np.stack([xs[on_wafer], ys[on_wafer]], axis=1).astype(np.int32)

    def radius_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance of die centres from the wafer centre, in mm."""
        return np.hypot(np.asarray(x) * self.die_width_mm, np.asarray(y) * self.die_height_mm)


DEFAULT_GEOMETRY = WaferGeometry()  # WF7N's
