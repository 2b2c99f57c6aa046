"""Only the chief writes the model under multi_worker_mirrored: `training.is_chief` from TF_CONFIG."""

from __future__ import annotations

import json

import pytest

from models import training

TWO_WORKERS = {"worker": ["w0:2222", "w1:2222"]}
WITH_CHIEF = {"chief": ["c0:2222"], "worker": ["w0:2222", "w1:2222"], "evaluator": ["e0:2222"]}


@pytest.mark.parametrize(
    ("tf_config", "chief"),
    [
        (None, True),  # one process, no orchestrator: it is the chief
        ("", True),
        ("{}", True),
        (json.dumps({"task": {"type": "worker", "index": 3}}), True),  # no cluster: single process
        (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 0}}), True),
        (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 1}}), False),
        (json.dumps({"cluster": WITH_CHIEF, "task": {"type": "chief", "index": 0}}), True),
        # With a chief in the cluster, worker 0 is an ordinary worker.
        (json.dumps({"cluster": WITH_CHIEF, "task": {"type": "worker", "index": 0}}), False),
        (json.dumps({"cluster": WITH_CHIEF, "task": {"type": "evaluator", "index": 0}}), False),
        # "master": the chief's older name (Vertex AI, TFX's own Trainer check).
        (json.dumps({"cluster": {"master": ["m:1"], "worker": ["w:1"]}, "task": {"type": "master", "index": 0}}), True),
        (
            json.dumps({"cluster": {"master": ["m:1"], "worker": ["w:1"]}, "task": {"type": "worker", "index": 0}}),
            False,
        ),
        (json.dumps({"cluster": {"ps": ["p:1"], "worker": ["w:1"]}, "task": {"type": "ps", "index": 0}}), False),
    ],
)
def test_only_the_chief_writes_the_model(tf_config, chief):
    assert training.is_chief(tf_config) is chief
