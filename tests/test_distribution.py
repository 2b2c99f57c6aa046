"""The Trainer's distribution strategy and precision on CPU: two replicas, bfloat16 math, float32 out.

TensorFlow fixes its logical devices when it first initialises them, which other tests in the same
pytest process have already done; the check therefore runs in a fresh interpreter that splits the
CPU into two logical devices first, then uses the project's own `make_strategy`,
`mixed_precision_policy` and `build_model`, and reports what it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GLOBAL_BATCH = 8

_CHILD = f"""
import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from models import model, training

strategy = training.make_strategy("mirrored")
policy = training.mixed_precision_policy()
keras.mixed_precision.set_global_policy(policy)
spec = model.ModelInputs(dense=("t1_xf", "t2_xf", "t2_margin_xf", "x_xf"), categorical={{"slot_xf": 5, "zone_xf": 4}})
with strategy.scope():
    net = model.build_model(model.get_hyperparameters(), spec)
# The first hidden activations, to see the dtype the replicas really compute in.
hidden = keras.Model(net.inputs, net.get_layer("relu_0").output)

n = {GLOBAL_BATCH} * 3
rng = np.random.default_rng(0)
x = {{name: rng.normal(size=(n, 1)).astype("float32") for name in spec.dense}}
x.update({{name: rng.integers(0, size, (n, 1)) for name, size in spec.categorical.items()}})
y = rng.integers(0, 2, (n, 1)).astype("float32")
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch({GLOBAL_BATCH})


def replica_step(inputs, labels):
    context = tf.distribute.get_replica_context()
    logits = net(inputs, training=False)
    return {{
        "replica": context.replica_id_in_sync_group,
        "batch": tf.shape(labels)[0],
        "logit_dtype": tf.constant(logits.dtype.name),
        "hidden_dtype": tf.constant(hidden(inputs, training=False).dtype.name),
        "device": tf.constant(logits.device),
    }}


steps = []
for inputs, labels in strategy.experimental_distribute_dataset(dataset):
    out = strategy.run(replica_step, args=(inputs, labels))
    steps.append([
        {{k: (v.numpy().decode() if v.dtype == tf.string else int(v.numpy())) for k, v in r.items()}}
        for r in (dict(zip(out, values)) for values in zip(*(strategy.experimental_local_results(v)
                                                               for v in out.values())))
    ])

history = net.fit(dataset, epochs=1, verbose=0)
# The Trainer's training split held in memory (models/training.in_memory_dataset), two epochs of
# one pass each, split across the two replicas.
held = training.in_memory_dataset(x, y, {GLOBAL_BATCH}, seed=0)
held_history = net.fit(held, epochs=2, steps_per_epoch=3, verbose=0)
kernel = net.get_layer("dense_0").kernel
print("RESULT" + json.dumps({{
    "num_replicas": strategy.num_replicas_in_sync,
    "worker_devices": list(strategy.extended.worker_devices),
    "policy": policy,
    "dense_compute_dtype": net.get_layer("dense_0").compute_dtype,
    "dense_variable_dtype": net.get_layer("dense_0").variable_dtype,
    "logit_layer_compute_dtype": net.get_layer("logit").compute_dtype,
    "output_dtype": net.outputs[0].dtype,
    "kernel_copies": len(strategy.experimental_local_results(kernel.value)),
    "steps": steps,
    "fit_loss": float(history.history["loss"][-1]),
    "held_fit_losses": [float(v) for v in held_history.history["loss"]],
}}))
"""


@pytest.fixture(scope="module")
def child_report() -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT") :])


def test_mirrored_strategy_runs_two_replicas_on_two_devices(child_report):
    assert child_report["num_replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in child_report["worker_devices"]] == ["device:CPU:0", "device:CPU:1"]
    # Every variable is mirrored: one copy per replica.
    assert child_report["kernel_copies"] == 2


def test_each_replica_gets_half_of_every_global_batch(child_report):
    assert len(child_report["steps"]) == 3
    for step in child_report["steps"]:
        assert sorted(r["replica"] for r in step) == [0, 1]
        assert [r["batch"] for r in step] == [GLOBAL_BATCH // 2] * 2
        assert {r["device"].rsplit("/", 1)[-1] for r in step} == {"device:CPU:0", "device:CPU:1"}


def test_mixed_precision_computes_in_bfloat16_and_outputs_float32(child_report):
    assert child_report["policy"] == "mixed_bfloat16"  # no GPU: bfloat16, no loss scaling
    assert child_report["dense_compute_dtype"] == "bfloat16"
    assert child_report["dense_variable_dtype"] == "float32"
    assert child_report["logit_layer_compute_dtype"] == "float32"
    assert child_report["output_dtype"] == "float32"
    for step in child_report["steps"]:
        assert {r["hidden_dtype"] for r in step} == {"bfloat16"}
        assert {r["logit_dtype"] for r in step} == {"float32"}


def test_the_model_trains_under_the_two_replica_strategy(child_report):
    loss = child_report["fit_loss"]
    assert loss == loss and 0 < loss < 10  # finite, not NaN


def test_the_training_split_held_in_memory_trains_under_the_two_replica_strategy(child_report):
    losses = child_report["held_fit_losses"]
    assert len(losses) == 2 and all(loss == loss and 0 < loss < 10 for loss in losses)  # finite, not NaN
