"""Metrics the Evaluator (TFMA) computes besides its built-in ones.

`ExpectedCost` is what inking a die is worth to a fab: every final-test fail that is not inked (an
escape: packaged, tested, scrapped or shipped) costs `escape_cost`, every good die that is inked
(overkill) costs `overkill_cost`; the metric is the mean cost per die when dies are inked at
`threshold`. TFMA instantiates it by name from this module (pipeline/pipeline.py) and, since TFMA
reads models through tf.keras, it is a tf.keras (Keras 2) metric, not a Keras 3 one.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


class ExpectedCost(tf_keras.metrics.Metric):
    """Mean cost per die of inking at `threshold`: (escape_cost * FN + overkill_cost * FP) / n."""

    def __init__(
        self,
        threshold: float = 1 / 51,
        escape_cost: float = 50.0,
        overkill_cost: float = 1.0,
        name: str = "expected_cost",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.escape_cost, self.overkill_cost = float(escape_cost), float(overkill_cost)
        self.cost = self.add_weight(name="cost", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.reshape(tf.cast(y_true, tf.float64), [-1])
        inked = tf.cast(tf.reshape(y_pred, [-1]) >= self.threshold, tf.float64)
        weight = tf.ones_like(y_true) if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float64), [-1])
        cost = self.escape_cost * y_true * (1.0 - inked) + self.overkill_cost * (1.0 - y_true) * inked
        self.cost.assign_add(tf.reduce_sum(cost * weight))
        self.count.assign_add(tf.reduce_sum(weight))

    def result(self):
        return tf.math.divide_no_nan(self.cost, self.count)

    def reset_state(self):
        self.cost.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "threshold": self.threshold,
            "escape_cost": self.escape_cost,
            "overkill_cost": self.overkill_cost,
        }
