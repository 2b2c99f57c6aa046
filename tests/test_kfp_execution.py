"""The compiled Kubeflow package's tasks execute: each as the KFP launcher would run it (tests/kfp_harness.py).

The package is compiled by `pipeline.kubeflow_runner` exactly as for a cluster, with local paths
for the pipeline root, the data and the serving directory; then every task runs in DAG order, in
its own subprocess, from its container command and arguments in the spec, through the image's
entry point (TFX's kubeflow_v2_run_executor), fed the executorInput JSON a KFP driver would build.
Small and fast: 4 lots x 2 wafers, no Tuner, 2 epochs, one in-memory Beam worker per task.
"""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml

from pipeline import kubeflow_runner
from tests import kfp_harness

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def compiled(small_stdf_dataset, tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("kfp_run")
    package = kubeflow_runner.main(
        [
            "--output",
            str(root / "waferflow.yaml"),
            "--pipeline-root",
            str(root / "pipeline_root"),
            "--data-root",
            small_stdf_dataset,
            "--serving-model-dir",
            str(root / "serving_model"),
            "--no-enable-tuning",
            "--epochs",
            "2",
            "--min-auc",
            "0",  # the short training run is blessed, so the Pusher and the exporters have work to do
            "--direct-running-mode",
            "in_memory",
            "--direct-num-workers",
            "1",
        ]
    )
    return package, str(root)


@pytest.fixture(scope="module")
def runs(compiled) -> dict[str, kfp_harness.TaskRun]:
    package, root = compiled
    return kfp_harness.run_pipeline(package, os.path.join(root, "harness"))


def test_kfp_local_cannot_run_the_package(compiled):
    """Why the harness exists: kfp.local cannot run a TFX package, whichever task it reaches first.

    kfp.local runs the tasks in its own depth-first order over `dependentTasks`, so which task fails
    first depends on the order of the tasks in the spec: a container task (the SubprocessRunner only
    runs Lightweight Python Components), or the resolver sub-DAG, whose inner tasks are wired by
    output references kfp.local does not order by, or whose inner task's executor is a TFX resolver
    (kfp.local runs only components, container components and importers). Either way nothing of the
    pipeline runs.
    """
    from kfp import components, local

    package, root = compiled
    local.init(runner=local.SubprocessRunner(), pipeline_root=os.path.join(root, "kfp_local"))
    pipeline = components.load_component_from_file(package)
    refusals = (
        r"only supports running Lightweight Python Components"
        r"|Tried to get output '\w+' from task '[\w-]*resolver[\w-]*', but task .* not found"
        r"|Got unknown spec in ExecutorSpec"
    )
    with pytest.raises((RuntimeError, ValueError), match=refusals):
        pipeline()


def test_every_task_ran_in_dag_order(compiled, runs):
    package, _ = compiled
    with open(package) as f:
        spec = yaml.safe_load(f)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(runs) == set(tasks)
    order = list(runs)
    for name, task in tasks.items():
        for upstream in task.get("dependentTasks", []):
            assert order.index(upstream) < order.index(name), (upstream, name)
    containers = {name for name, run in runs.items() if not run.resolver}
    assert containers == set(tasks) - {name for name in tasks if "resolver" in name}
    assert {"WaferExampleGen", "Transform", "Trainer", "Evaluator", "Pusher", "WaferReport"} <= containers


def test_artifacts_and_parameters_flow_between_tasks(runs):
    (examples,) = runs["WaferExampleGen"].artifacts["examples"]
    assert json.loads(examples["metadata"]["split_names"]) == ["train", "validation", "test"]
    assert glob.glob(os.path.join(examples["uri"], "Split-test", "*.gz"))
    # Transform's custom_config is TransformConfig's output parameter, a run-time value.
    config = runs["TransformConfig"].parameters["config"]
    assert runs["Transform"].executor_input["inputs"]["parameterValues"]["custom_config"] == config
    assert json.loads(config)["program_dir"] == examples["uri"]
    # Downstream tasks read the very artifacts upstream tasks wrote, metadata included.
    trainer_inputs = runs["Trainer"].executor_input["inputs"]["artifacts"]
    assert trainer_inputs["examples"]["artifacts"] == runs["Transform"].artifacts["transformed_examples"]
    assert runs["Evaluator"].executor_input["inputs"]["artifacts"]["baseline_model"] == {"artifacts": []}


def test_the_model_is_blessed_pushed_exported_and_reported(compiled, runs):
    import tensorflow as tf

    from models import features

    _, root = compiled
    (blessing,) = runs["Evaluator"].artifacts["blessing"]
    assert blessing["metadata"]["blessed"] == 1
    assert os.path.exists(os.path.join(blessing["uri"], "BLESSED"))
    (pushed,) = runs["Pusher"].artifacts["pushed_model"]
    assert pushed["metadata"]["pushed"] == 1
    versions = glob.glob(os.path.join(root, "serving_model", "*", "saved_model.pb"))
    assert len(versions) == 1
    (examples,) = runs["WaferExampleGen"].artifacts["examples"]
    files = glob.glob(os.path.join(examples["uri"], "Split-test", "*.gz"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(32)]
    served = tf.saved_model.load(os.path.dirname(versions[0])).signatures["serving_default"]
    probabilities = served(examples=tf.constant(records))[features.PROBABILITY_KEY].numpy()
    assert probabilities.shape == (32, 1) and probabilities.std() > 0
    (tflite,) = runs["TFLiteExporter"].artifacts["tflite_model"]
    assert os.path.exists(os.path.join(tflite["uri"], "model.tflite"))
    (onnx,) = runs["OnnxExporter"].artifacts["onnx_model"]
    assert glob.glob(os.path.join(onnx["uri"], "*.onnx"))
    (report,) = runs["WaferReport"].artifacts["report"]
    assert os.path.exists(os.path.join(report["uri"], "report.html"))
