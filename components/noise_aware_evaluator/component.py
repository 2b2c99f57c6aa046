"""NoiseAwareEvaluator: TFX's Evaluator whose change gate tolerates only what noise explains.

The same component (inputs, outputs, parameters, TFMA run, blessing) with its own executor, which
sizes the AUC change threshold from a paired lot bootstrap of the test split before TFMA runs
(components/noise_aware_evaluator/executor.py). `eval_config`'s absolute change threshold is the
cap: the largest drop the gate ever accepts, however noisy the test split.
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.noise_aware_evaluator import executor


class NoiseAwareEvaluator(tfx.components.Evaluator):
    """tfx.components.Evaluator with a change threshold sized to the test split's noise."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
