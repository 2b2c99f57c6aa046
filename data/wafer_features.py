"""Per-wafer features that need the whole wafer: neighbourhood fails and wafer yield.

They cannot be computed row by row (tf.Transform sees one die at a time), so every reader calls
`add_wafer_context` on a whole wafer before it emits examples, and the batch scorer does the same,
so training and serving see identical features. This is the "good die in a bad neighbourhood"
screen that test engineers run on wafer maps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Columns this module adds.
CONTEXT_FEATURES = ("n_fail_neighbors", "n_neighbors", "fail_frac_r2", "wafer_yield")


def add_wafer_context(wafer: pd.DataFrame) -> pd.DataFrame:
    """Return `wafer` (one wafer's dies with x, y, sort_pass) with the context columns added.

    n_fail_neighbors: sort-failing dies among the 8 adjacent positions.
    n_neighbors: dies present among the 8 adjacent positions (fewer at the wafer edge).
    fail_frac_r2: share of failing dies in the 5x5 window around the die (itself excluded).
    wafer_yield: share of the wafer's dies that passed sort.
    """
    x = wafer["x"].to_numpy(np.int64)
    y = wafer["y"].to_numpy(np.int64)
    failed = ~wafer["sort_pass"].to_numpy(bool)
    x0, y0 = x.min() - 2, y.min() - 2
    width, height = x.max() - x0 + 3, y.max() - y0 + 3
    present = np.zeros((height, width), dtype=np.int32)
    fails = np.zeros((height, width), dtype=np.int32)
    np.add.at(present, (y - y0, x - x0), 1)
    np.add.at(fails, (y - y0, x - x0), failed.astype(np.int32))
    present = np.minimum(present, 1)
    fails = np.minimum(fails, 1)

    def window_sum(grid: np.ndarray, reach: int) -> np.ndarray:
        total = np.zeros(len(x), dtype=np.int64)
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                if dx or dy:
                    total += grid[y - y0 + dy, x - x0 + dx]
        return total

    out = wafer.copy()
    out["n_fail_neighbors"] = window_sum(fails, 1).astype(np.int64)
    out["n_neighbors"] = window_sum(present, 1).astype(np.int64)
    n_r2 = np.maximum(window_sum(present, 2), 1)
    out["fail_frac_r2"] = (window_sum(fails, 2) / n_r2).astype(np.float32)
    out["wafer_yield"] = np.float32(1.0 - failed.mean()) if len(failed) else np.float32(0.0)
    return out
