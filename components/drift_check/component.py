"""DriftCheck: is the newest data like the data the model is trained on?

Computes TFDV statistics of this run's newest examples, every split together (the newest span when
the data arrives in spans: all its lots, not the half in the train split; lots differ by themselves,
and a drift seen in 2 lots is hard to tell from that), keeps them in its output, and compares them
with those that earlier DriftChecks kept for the earlier spans of the training window (without
spans: for the previous run's data), by TFDV's Jensen-Shannon drift comparator on every test
measurement. A test whose divergence from every earlier span is over the bound marks the data as
drifted: the NoiseAwareEvaluator then withholds the blessing, so nothing is pushed or exported, and
the summary and the report say which tests moved and by how much. The first run has nothing to
compare with and passes.

Inputs: `examples` (this run's ExampleGen output), `schema`, `reference_reports` (optional, any
number: earlier DriftReports, from components/resolver_strategies.EarlierReportsStrategy). Output: a
`DriftReport` artifact holding drift.json and the statistics it measured (FeatureStats.pb), with
`drifted`, `compared`, `max_js`, `span` and the examples' URI as custom properties.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import artifact, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.drift_check import executor as ex


class DriftReport(artifact.Artifact):
    """The newest data's statistics and their per-test drift against the earlier spans (drift.json)."""

    TYPE_NAME = "components.DriftReport"  # <namespace>.<Name>, importable: components/__init__.py


class DriftCheckSpec(ComponentSpec):
    PARAMETERS = {ex.JS_BOUND_KEY: ExecutionParameter(type=float)}
    INPUTS = {
        ex.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        ex.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
        ex.REFERENCE_KEY: ChannelParameter(type=DriftReport, optional=True),
    }
    OUTPUTS = {ex.DRIFT_KEY: ChannelParameter(type=DriftReport)}


class DriftCheck(base_beam_component.BaseBeamComponent):
    """Jensen-Shannon drift of the newest data's test measurements against the earlier spans."""

    SPEC_CLASS = DriftCheckSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ex.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        schema: types.BaseChannel,
        reference_reports: types.BaseChannel | None = None,
        js_bound: float = ex.DEFAULT_JS_BOUND,
    ):
        """
        Args:
          examples: this run's examples (the newest span's).
          schema: the schema the statistics are compared under (its FLOAT features are the measurements).
          reference_reports: the earlier spans' DriftReports; none on a first run.
          js_bound: the largest Jensen-Shannon divergence a test may move by; 0 or less reports the
            drift without ever stopping the push.
        """
        super().__init__(
            spec=DriftCheckSpec(
                examples=examples,
                schema=schema,
                reference_reports=reference_reports,
                js_bound=float(js_bound),
                drift=types.Channel(type=DriftReport),
            )
        )
