"""Wafer-context features on a hand-made 3x3 wafer."""

from __future__ import annotations

import pandas as pd

from data.wafer_features import add_wafer_context


def test_neighbour_counts_and_yield():
    # 3x3 block; the two dies at (-1, 1) and (1, 1) fail. Pass / fail is the file's verdict
    # (sort_pass), not a bin number: here the passing dies carry bin 7.
    dies = pd.DataFrame(
        [
            {
                "x": x,
                "y": y,
                "hard_bin": 3 if (x, y) in {(-1, 1), (1, 1)} else 7,
                "sort_pass": (x, y) not in {(-1, 1), (1, 1)},
            }
            for y in (1, 0, -1)
            for x in (-1, 0, 1)
        ]
    )
    out = add_wafer_context(dies).set_index(["x", "y"])
    assert out.loc[(0, 0), "n_fail_neighbors"] == 2
    assert out.loc[(0, 0), "n_neighbors"] == 8
    assert out.loc[(0, 1), "n_fail_neighbors"] == 2
    assert out.loc[(-1, -1), "n_fail_neighbors"] == 0
    assert out.loc[(-1, -1), "n_neighbors"] == 3  # a corner has three neighbours on the wafer
    assert out.loc[(0, 0), "fail_frac_r2"] == 2 / 8
    assert abs(out["wafer_yield"].iloc[0] - 7 / 9) < 1e-6
