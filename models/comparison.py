"""What the model is compared with on the same test dies: gradient boosting, logistic regression,
the fab's screens alone and combined. Used by the run report and by benchmarks/quality.py.

Both reference models are fitted on the train split's raw model inputs, the dense serving columns
(models/dense_signature.py: every test, context, screen, coordinate, head and site; NaN where a test
was not measured), with scikit-learn's defaults: what a user gets without tuning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from data.screens import SCREEN_FEATURES

REFERENCE_MODELS = ("hist_gbm", "logistic")
SCREENS = tuple(SCREEN_FEATURES)
SCREENS_ANY = "screens_any"


def reference_scores(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0
) -> dict[str, np.ndarray]:
    """Test-die probabilities of HistGradientBoosting (defaults; it early-stops on 10% of the train
    split it is given, never on test) and of logistic regression (median-imputed, standardised)."""
    gbm = HistGradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
    logistic = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        x_train, y_train
    )
    return {"hist_gbm": gbm.predict_proba(x_test)[:, 1], "logistic": logistic.predict_proba(x_test)[:, 1]}


def screens_any(screens: pd.DataFrame) -> np.ndarray:
    """The fab's combination, ink when any screen fires, with every screen's threshold at the same
    quantile of its own score: a die's combined score is its highest per-screen percentile rank.
    Tied dies share the lowest rank of their tie (a count screen's many zeros never fire ahead of a
    die another screen flags), and a screen that could not score the die counts as not firing."""
    ranks = pd.DataFrame({s: screens[s].rank(pct=True, method="min").fillna(0.0) for s in screens.columns})
    return ranks.max(axis=1).to_numpy()


def screen_scores(x_test: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Each screen's own score on the test dies (higher = more suspect), and their combination."""
    present = [s for s in SCREENS if s in columns]
    raw = pd.DataFrame({s: x_test[:, list(columns).index(s)] for s in present})
    scores = {s: _not_firing_lowest(raw[s].to_numpy(float)) for s in present}
    scores[SCREENS_ANY] = screens_any(raw)
    return scores


def _not_firing_lowest(values: np.ndarray) -> np.ndarray:
    """A screen that could not score a die (NaN: no neighbours, no limits) ranks it below every die
    it did score."""
    finite = values[np.isfinite(values)]
    floor = (finite.min() - 1.0) if finite.size else 0.0
    return np.where(np.isfinite(values), values, floor)
