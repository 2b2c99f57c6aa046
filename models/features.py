"""The single source of feature names: raw columns, what the model uses, slices and the label.

Raw examples carry every column the ingest writes (ids, coordinates, bins, tests, wafer context,
label and the generator's true probability). Only `MODEL_FEATURES` reach the model; ids are kept
for slicing; `ORACLE_KEY` is ground truth that exists only for synthetic data and must never be a
model input (it is the answer).
"""

from __future__ import annotations

from data.geometry import DEFAULT_GEOMETRY
from data.test_program import PARAMETRIC_FEATURES
from data.wafer_features import CONTEXT_FEATURES

LABEL_KEY = "ft_fail"
ORACLE_KEY = "ft_fail_prob"

# Identity and slicing columns: strings, never model inputs (the model must generalise to new lots).
LOT_KEY, WAFER_KEY, PART_KEY, SITE_KEY = "lot_id", "wafer_id", "part_id", "site"
ID_FEATURES = (LOT_KEY, WAFER_KEY, PART_KEY)
SLICE_FEATURES = (LOT_KEY, WAFER_KEY, SITE_KEY)
BIN_FEATURES = ("hard_bin", "soft_bin")

# Model inputs, by kind.
PARAMETRIC = PARAMETRIC_FEATURES  # z-scored; missing tests become 0 (the mean) and are counted
CONTEXT = CONTEXT_FEATURES  # z-scored wafer-neighbourhood features (data/wafer_features.py)
COORDINATES = ("x", "y")  # z-scored, and turned into radius and zone
CATEGORICAL = (SITE_KEY,)  # vocabulary -> integer id
MODEL_FEATURES = PARAMETRIC + CONTEXT + COORDINATES + CATEGORICAL

# Derived in the Transform.
RADIUS = "radius"
ZONE = "zone"
N_MISSING = "n_missing_tests"
# Radial zone edges as a fraction of the usable radius: centre, middle, outer, edge.
ZONE_BOUNDARIES = (0.35, 0.7, 0.9)
N_ZONES = len(ZONE_BOUNDARIES) + 1
GEOMETRY = DEFAULT_GEOMETRY

# Categorical vocabularies get this many out-of-vocabulary buckets (a site never seen in training).
NUM_OOV_BUCKETS = 1

# Output of the serving signatures.
PROBABILITY_KEY = "ft_fail_probability"


def transformed_name(key: str) -> str:
    """Name of a feature after the Transform: `site` -> `site_xf`."""
    return f"{key}_xf"


def vocabulary_name(key: str) -> str:
    return f"{key}_vocab"


# Transformed, dense float features the model concatenates.
DENSE_XF = tuple(transformed_name(k) for k in PARAMETRIC + CONTEXT + COORDINATES + (RADIUS, N_MISSING))
# Transformed integer features the model one-hot encodes.
CATEGORICAL_XF = tuple(transformed_name(k) for k in CATEGORICAL + (ZONE,))
