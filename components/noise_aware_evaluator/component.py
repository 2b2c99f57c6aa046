"""NoiseAwareEvaluator: TFX's Evaluator whose change gate tolerates only what noise explains.

The same component (inputs, outputs, parameters, TFMA run, blessing) with its own executor, which
sizes the AUC change threshold from a paired lot bootstrap of the test split before TFMA runs
(components/noise_aware_evaluator/executor.py). `eval_config`'s absolute change threshold is the
cap: the largest drop the gate ever accepts, however noisy the test split. One more, optional input,
`drift_report` (components/drift_check): drifted data withholds the blessing.
"""

from __future__ import annotations

import tensorflow_model_analysis as tfma
from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components.drift_check.component import DriftReport
from components.noise_aware_evaluator import executor


class NoiseAwareEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    INPUTS = {
        **standard_component_specs.EvaluatorSpec.INPUTS,
        executor.DRIFT_REPORT_KEY: ChannelParameter(type=DriftReport, optional=True),
    }


class NoiseAwareEvaluator(tfx.components.Evaluator):
    """tfx.components.Evaluator with a change threshold sized to the test split's noise."""

    SPEC_CLASS = NoiseAwareEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        eval_config: tfma.EvalConfig,
        baseline_model: types.BaseChannel | None = None,
        example_splits: list[str] | None = None,
        schema: types.BaseChannel | None = None,
        drift_report: types.BaseChannel | None = None,
    ):
        """The Evaluator's own arguments that this project uses (a TFMA eval_config, no module file),
        plus `drift_report`. Builds the spec as tfx.components.Evaluator does, with the extra input."""
        spec = NoiseAwareEvaluatorSpec(
            examples=examples,
            model=model,
            baseline_model=baseline_model,
            feature_slicing_spec=None,
            fairness_indicator_thresholds=json_utils.dumps(None),
            example_splits=json_utils.dumps(example_splits),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            eval_config=eval_config,
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            schema=schema,
            module_file=None,
            module_path=None,
            drift_report=drift_report,
        )
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
