"""The yield engineer's tables: bin Paretos, yield per lot / wafer / site, a site-to-site comparison.

Every function takes the per-die frame the readers produce (data/readers.py: lot_id, wafer_id, x, y,
head, site, hard_bin, soft_bin, sort_pass) and returns a DataFrame; nothing here knows which bins
are good (`sort_pass` came from the file's own HBR/SBR flags) or how many sites a probe card has.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

# A probe site is flagged when its yield is below the rest of the card's at this significance,
# after a Bonferroni correction over the card's sites (a card of 8 tests each site at 0.001 / 8).
SITE_ALPHA = 0.001


def bin_pareto(dies: pd.DataFrame, column: str = "hard_bin") -> pd.DataFrame:
    """Failing bins by count, largest first, with each bin's share of all dies and of all fails
    and the cumulative share of fails (the Pareto line)."""
    fails = dies[~dies["sort_pass"].to_numpy(bool)]
    counts = fails[column].value_counts().rename_axis("bin").reset_index(name="dies")
    counts = counts.sort_values(["dies", "bin"], ascending=[False, True]).reset_index(drop=True)
    counts["share_of_dies"] = counts["dies"] / max(len(dies), 1)
    counts["share_of_fails"] = counts["dies"] / max(len(fails), 1)
    counts["cumulative_share_of_fails"] = counts["share_of_fails"].cumsum()
    return counts


def yield_by(dies: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Dies, sort-passing dies and sort yield per group; with `ft_fail` (the final-test label of the
    passing dies, NaN for a fail) also final-test fails and the final yield (sort and final test)."""
    passing = dies["sort_pass"].to_numpy(bool)
    frame = dies.assign(_pass=passing.astype(int))
    aggregations = {"dies": ("_pass", "size"), "sort_pass": ("_pass", "sum")}
    if "ft_fail" in frame:
        frame["_ft_fail"] = frame["ft_fail"].fillna(0).astype(int) * passing
        aggregations["ft_fails"] = ("_ft_fail", "sum")
    table = frame.groupby(keys, sort=True).agg(**aggregations).reset_index()
    table["sort_yield"] = table["sort_pass"] / table["dies"]
    if "ft_fails" in table:
        table["final_yield"] = (table["sort_pass"] - table["ft_fails"]) / table["dies"]
    return table


def site_comparison(dies: pd.DataFrame, alpha: float = SITE_ALPHA) -> pd.DataFrame:
    """Each probe slot (head, site) against all the others: sort yield, the difference, Fisher's
    exact test of "this slot yields less than the rest" and whether it is flagged (Bonferroni over
    the slots at `alpha`). A bad probe site shows up as one slot far below the rest on every lot."""
    table = yield_by(dies, ["head", "site"])
    rows = []
    total_dies, total_pass = int(table["dies"].sum()), int(table["sort_pass"].sum())
    for row in table.itertuples(index=False):
        rest_dies, rest_pass = total_dies - row.dies, total_pass - row.sort_pass
        if rest_dies == 0:
            p_value = 1.0
        else:
            contingency = [[row.sort_pass, row.dies - row.sort_pass], [rest_pass, rest_dies - rest_pass]]
            p_value = float(fisher_exact(contingency, alternative="less")[1])
        rest_yield = rest_pass / rest_dies if rest_dies else np.nan
        rows.append(
            {
                "head": row.head,
                "site": row.site,
                "dies": row.dies,
                "sort_yield": row.sort_yield,
                "rest_yield": rest_yield,
                "difference": row.sort_yield - rest_yield,
                "p_value": p_value,
            }
        )
    out = pd.DataFrame(rows)
    out["flagged"] = out["p_value"] < alpha / max(len(out), 1)
    return out
