"""DriftCheck: is the newest data like the data the model is trained on?

Compares the statistics of this run's newest data (the StatisticsGen's: the newest span when the
data arrives in spans) with those of the earlier spans of the training window (without spans: the
previous run's data), by TFDV's Jensen-Shannon drift comparator on every test measurement. A test
whose divergence from every earlier span is over the bound marks the data as drifted: the
NoiseAwareEvaluator then withholds the blessing, so nothing is pushed or exported, and the summary
and the report say which tests moved and by how much. The first run has nothing to compare with
and passes.

Inputs: `statistics` (this run's), `reference_statistics` (optional, any number: the earlier spans'
statistics, from components/resolver_strategies.EarlierStatisticsStrategy), `schema`. Output: a
`DriftReport` artifact holding drift.json, with `drifted`, `compared` and `max_js` as custom
properties.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.drift_check import executor as ex


class DriftReport(artifact.Artifact):
    """Per-test drift of the newest data against the earlier spans (drift.json)."""

    TYPE_NAME = "components.DriftReport"  # <namespace>.<Name>, importable: components/__init__.py


class DriftCheckSpec(ComponentSpec):
    PARAMETERS = {
        ex.JS_BOUND_KEY: ExecutionParameter(type=float),
        ex.SPLIT_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        ex.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        ex.REFERENCE_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        ex.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {ex.DRIFT_KEY: ChannelParameter(type=DriftReport)}


class DriftCheck(base_component.BaseComponent):
    """Jensen-Shannon drift of the newest data's test measurements against the earlier spans."""

    SPEC_CLASS = DriftCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ex.Executor)

    def __init__(
        self,
        statistics: types.BaseChannel,
        schema: types.BaseChannel,
        reference_statistics: types.BaseChannel | None = None,
        js_bound: float = ex.DEFAULT_JS_BOUND,
        split: str = "train",
    ):
        """
        Args:
          statistics: this run's ExampleStatistics (the newest span's).
          schema: the schema the statistics are validated against (numeric features are found there).
          reference_statistics: the earlier spans' statistics; none on a first run.
          js_bound: the largest Jensen-Shannon divergence a measurement may move by; 0 or less
            reports the drift without ever stopping the push.
          split: which split of the statistics is compared.
        """
        super().__init__(
            spec=DriftCheckSpec(
                statistics=statistics,
                reference_statistics=reference_statistics,
                schema=schema,
                js_bound=float(js_bound),
                split=split,
                drift=types.Channel(type=DriftReport),
            )
        )
