"""Baseline for the Evaluator: the latest blessed model that is not the model being evaluated.

TFX's LatestBlessedModelStrategy returns the latest blessed model even when that is the candidate
itself (a re-run with unchanged data and code): the Evaluator then compares a model with itself,
and its changed inputs defeat caching, so an unchanged pipeline never becomes a full cache hit.
Excluding the candidate gives the comparison its meaning back and makes re-runs free.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy

MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
CANDIDATE_KEY = "candidate"


class LatestBlessedOtherModelStrategy(LatestBlessedModelStrategy):
    """Resolver inputs: `model` and `model_blessing` (all in MLMD), `candidate` (the Trainer's output)."""

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        candidate = input_dict.get(CANDIDATE_KEY, [])
        candidate_ids = {a.id for a in candidate}
        models = [m for m in input_dict.get(MODEL_KEY, []) if m.id not in candidate_ids]
        blessings = input_dict.get(BLESSING_KEY, [])
        result = {MODEL_KEY: [], BLESSING_KEY: []}
        if models and blessings:
            result = self._resolve({MODEL_KEY: models, BLESSING_KEY: blessings}, MODEL_KEY, BLESSING_KEY)
        # Every input key must come back; the candidate passes through unchanged.
        return {**result, CANDIDATE_KEY: candidate}
