"""The single source of feature names: what the ingest writes, what the Transform derives, the label.

Which parametric tests exist is not decided here: it is data, the test program the ingest learned
from the files (data/program.py; `t{TEST_NUM}` and `t{TEST_NUM}_p{pin}`). This module names what
every program shares: ids, the probe slot, coordinates, the wafer context, and the Transform's
derived features, and says how a test's derived features are named.
"""

from __future__ import annotations

from data.screens import SCREEN_FEATURES
from data.wafer_features import CONTEXT_FEATURES

LABEL_KEY = "ft_fail"

# Identity and slicing columns: never model inputs (the model must generalise to new lots).
LOT_KEY, WAFER_KEY, PART_KEY = "lot_id", "wafer_id", "part_id"
HEAD_KEY, SITE_KEY = "head", "site"
ID_FEATURES = (LOT_KEY, WAFER_KEY, PART_KEY)
# TFMA slices: per lot, per wafer, and per probe slot (head and site together).
SLICES = ((LOT_KEY,), (WAFER_KEY,), (HEAD_KEY, SITE_KEY))

# Raw model inputs besides the tests, in the order the dense serving signature takes them.
CONTEXT = CONTEXT_FEATURES  # wafer-neighbourhood features (data/wafer_features.py), z-scored
SCREENS = SCREEN_FEATURES  # DPAT, NNR, GDBN, ZPAT per die (data/screens.py), z-scored; NaN = none
COORDINATES = ("x", "y")  # z-scored, and turned into radius and zone with the program's grid
SLOT = (HEAD_KEY, SITE_KEY)  # the probe slot: a vocabulary of head * SLOT_BASE + site
SLOT_BASE = 1000  # site numbers are U1 (0-255): head 2 site 3 is slot 2003
Z_SCORED = CONTEXT + SCREENS + COORDINATES  # z-scored over the values present
NON_TEST_INPUTS = Z_SCORED + SLOT

# Derived in the Transform, per die.
RADIUS = "radius"
ZONE = "zone"
N_MISSING = "n_missing_tests"
MIN_MARGIN = "min_margin"
N_NEAR_LIMIT = "n_near_limit"
SLOT_FEATURE = "slot"
# Radial zone edges as a fraction of the wafer radius: centre, middle, outer, edge.
ZONE_BOUNDARIES = (0.35, 0.7, 0.9)
N_ZONES = len(ZONE_BOUNDARIES) + 1
# Margins are in robust sigmas of the test (IQR / 1.349) and capped: a die 8 sigmas inside its
# limits is as safe as one 80 inside, and an unmeasured test has no margin to speak of.
MARGIN_CAP = 8.0
# A test within this many robust sigmas of a limit counts towards `n_near_limit` (Transform
# custom_config "guard_band" overrides it).
DEFAULT_GUARD_BAND = 1.5

# Categorical vocabularies get this many out-of-vocabulary buckets (a slot never seen in training).
NUM_OOV_BUCKETS = 1

# Output of the serving signatures.
PROBABILITY_KEY = "ft_fail_probability"
INK_KEY = "ink"  # serving_default's second output: 1 where the probability reaches the operating point


def transformed_name(key: str) -> str:
    """Name of a feature after the Transform: `t1000` -> `t1000_xf`."""
    return f"{key}_xf"


def margin_name(test_feature: str) -> str:
    """A test's margin to its nearest limit after the Transform: `t1000` -> `t1000_margin_xf`."""
    return f"{test_feature}_margin_xf"


def vocabulary_name(key: str) -> str:
    return f"{key}_vocab"


# Transformed integer features the model one-hot encodes; every other transformed feature but the
# label is a dense float input.
CATEGORICAL_XF = (transformed_name(SLOT_FEATURE), transformed_name(ZONE))


def model_input_names(transformed_keys) -> tuple[list[str], list[str]]:
    """(dense, categorical) model inputs among the Transform's outputs, in a stable order."""
    dense = sorted(k for k in transformed_keys if k.endswith("_xf") and k not in CATEGORICAL_XF)
    categorical = [k for k in CATEGORICAL_XF if k in transformed_keys]
    return dense, categorical
