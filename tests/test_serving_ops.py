"""The exported SavedModel uses only ops a stock TF Serving binary of the pinned release has.

TF Serving can load a SavedModel only if every op in its graph (and in every function of the graph's
library) is registered in the model server, which links the TensorFlow release it is built on and
no custom ops. The pinned image is built on the TensorFlow that exports the model (docs/serving.md),
so the check is against that TensorFlow's op registry, read in a fresh interpreter that imports
TensorFlow alone: a library imported by the pipeline (TFT, TFX, TF Text...) that registers ops of its
own in this process must not make its ops look stock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipeline", "deploy")

_UNREGISTERED = """
import json, sys
from tensorflow.python.framework import op_def_registry
print(json.dumps([name for name in json.load(sys.stdin) if op_def_registry.get(name) is None]))
"""


def op_types(saved_model_dir: str) -> set[str]:
    """Every op type in the SavedModel: its graphs' nodes and its function library's nodes."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    ops, functions = set(), set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        ops.update(node.op for node in graph.node)
        for function in graph.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    return ops - functions  # a node whose op is a library function calls it: not a registered op


def unregistered(ops: set[str]) -> list[str]:
    """The ops stock TensorFlow (this interpreter's release, nothing else imported) does not register."""
    result = subprocess.run(
        [sys.executable, "-c", _UNREGISTERED],
        input=json.dumps(sorted(ops)),
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def serving_release() -> str:
    """The tensorflow/serving image tag, the same in the compose file and the Kubernetes manifest."""
    tags = set()
    for name in ("docker-compose.yaml", "kubernetes.yaml"):
        with open(os.path.join(DEPLOY, name)) as f:
            tags.update(re.findall(r"image:\s*tensorflow/serving:(\S+)", f.read()))
    (tag,) = tags
    return tag


def test_the_serving_image_is_built_on_the_exporting_tensorflow():
    """TF Serving X.Y.Z is built on TensorFlow X.Y.Z (its RELEASE.md: "based on TF version")."""
    release = serving_release()
    assert release.split(".")[:2] == tf.__version__.split(".")[:2], (release, tf.__version__)


def test_the_exported_model_uses_only_stock_ops(served_model):
    ops = op_types(served_model.saved_model)
    # What the exported graph is made of: parsing, the Transform, the network, the signatures.
    assert {"ParseExampleV2", "MatMul", "Sigmoid", "StatefulPartitionedCall"} <= ops
    assert unregistered(ops) == []


def test_a_custom_op_is_caught(tmp_path):
    """The check can fail: a graph with an op no TensorFlow registers, in a library function too."""
    saved_model = saved_model_pb2.SavedModel()
    graph = saved_model.meta_graphs.add().graph_def
    graph.node.add(name="x", op="Placeholder")
    graph.node.add(name="y", op="WaferflowCustomOp")
    function = graph.library.function.add()
    function.signature.name = "__inference_f_1"
    function.node_def.add(name="z", op="AnotherCustomOp")
    graph.node.add(name="call", op="__inference_f_1")
    (tmp_path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    ops = op_types(str(tmp_path))
    assert ops == {"Placeholder", "WaferflowCustomOp", "AnotherCustomOp"}
    assert unregistered(ops) == ["AnotherCustomOp", "WaferflowCustomOp"]
