"""The Kubeflow Pipelines package: compiled by the CLI, read back with the kfp SDK.

No cluster runs here; these tests check what a KFP 2.x backend would receive: the tasks, the DAG
edges between them, the image each container runs, and the runtime parameters with their defaults.
"""

from __future__ import annotations

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import kubeflow_runner
from pipeline.beam_args import WORKER_SETUP_PLUGIN

IMAGE = "europe-docker.pkg.dev/fab/ml/waferflow:test"
PIPELINE_ROOT = "gs://fab-ml/waferflow/root"
DATA_ROOT = "gs://fab-ml/wafer-test/lots"
TFX_ENTRYPOINT = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]

# Task -> the tasks it waits for. The baseline resolver becomes two KFP resolver tasks.
BLESSING_RESOLVER = "latest_blessed_model_resolver-model-blessing-resolver"
MODEL_RESOLVER = "latest_blessed_model_resolver-model-resolver"
STATISTICS_RESOLVER = "previous_statistics_resolver"
EXPECTED_DEPENDENCIES = {
    "WaferExampleGen": set(),
    "StatisticsGen": {"WaferExampleGen"},
    "SchemaGen": {"StatisticsGen"},
    "ExampleValidator": {"StatisticsGen", "SchemaGen"},
    "TransformConfig": {"WaferExampleGen"},
    # The Transform's custom_config names the learned program: a run-time value from TransformConfig.
    "Transform": {"WaferExampleGen", "SchemaGen", "TransformConfig"},
    "Tuner": {"Transform"},
    "Trainer": {"Transform", "SchemaGen", "Tuner"},
    BLESSING_RESOLVER: set(),
    MODEL_RESOLVER: set(),
    "Evaluator": {"WaferExampleGen", "Trainer", MODEL_RESOLVER},
    "Pusher": {"Trainer", "Evaluator"},
}


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("kfp") / "waferflow.yaml")
    path = kubeflow_runner.main(
        [
            "--output",
            output,
            "--image",
            IMAGE,
            "--pipeline-root",
            PIPELINE_ROOT,
            "--data-root",
            DATA_ROOT,
            "--epochs",
            "77",
        ]
    )
    assert path == output
    return path


@pytest.fixture(scope="module")
def spec(package) -> pipeline_spec_pb2.PipelineSpec:
    return components.load_component_from_file(package).pipeline_spec


def _executors(spec) -> dict:
    return json_format.MessageToDict(spec.deployment_spec)["executors"]


def test_package_is_kfp_2_yaml(package, spec):
    with open(package) as f:
        raw = yaml.safe_load(f)
    assert raw["pipelineInfo"]["name"] == "waferflow"
    assert spec.schema_version == "2.1.0"
    assert spec.sdk_version.startswith("tfx-")


def test_every_component_is_a_task_with_its_dependencies(spec):
    tasks = spec.root.dag.tasks
    # Components added after the Evaluator elsewhere may add tasks; these must all be there as wired.
    assert set(EXPECTED_DEPENDENCIES) <= set(tasks)
    for name, expected in EXPECTED_DEPENDENCIES.items():
        assert set(tasks[name].dependent_tasks) == expected, name
    # The resolver's model lookup is fed by its blessing lookup, and the Evaluator gets its baseline.
    model_lookup = tasks[MODEL_RESOLVER].inputs.artifacts
    assert {a.task_output_artifact.producer_task for a in model_lookup.values()} == {BLESSING_RESOLVER}
    assert tasks["Evaluator"].inputs.artifacts["baseline_model"].task_output_artifact.producer_task == MODEL_RESOLVER
    assert tasks["Pusher"].inputs.artifacts["model_blessing"].task_output_artifact.producer_task == "Evaluator"


def test_every_container_runs_the_pipeline_image_with_the_tfx_entrypoint(spec):
    executors = _executors(spec)
    containers = {label: e["container"] for label, e in executors.items() if "container" in e}
    assert {f"{name}_executor" for name in EXPECTED_DEPENDENCIES if "resolver" not in name} <= set(containers)
    for label, container in containers.items():
        assert container["image"] == IMAGE, label
        assert container["command"] == TFX_ENTRYPOINT, label
    args = containers["WaferExampleGen_executor"]["args"]
    assert args[args.index("--executor_class_path") + 1] == "components.wafer_example_gen.executor.Executor"
    # Beam inside the container: multi-process DirectRunner, each worker bootstrapped by our plugin.
    assert "--direct_running_mode=multi_processing" in args
    assert f"--beam_plugins={WORKER_SETUP_PLUGIN}" in args
    assert {label for label, e in executors.items() if "resolver" in e} == {
        f"{BLESSING_RESOLVER}_executor",
        f"{MODEL_RESOLVER}_executor",
        f"{STATISTICS_RESOLVER}_executor",
    }
    report = containers["WaferReport_executor"]["args"]
    assert report[report.index("--executor_class_path") + 1] == "components.wafer_report.executor.Executor"


def test_the_report_gets_the_previous_runs_statistics_from_a_resolver(spec):
    """KFP resolves LatestArtifactStrategy before the run starts: the newest StatisticsGen output
    then is the previous run's, which the report compares this run's data with."""
    report = spec.root.dag.tasks["WaferReport"].inputs.artifacts
    assert report["baseline_statistics"].task_output_artifact.producer_task == STATISTICS_RESOLVER
    assert report["statistics"].task_output_artifact.producer_task == "StatisticsGen"


def test_data_root_is_a_runtime_parameter_and_pipeline_root_a_run_default(spec):
    parameter = spec.root.input_definitions.parameters[kubeflow_runner.DATA_ROOT_PARAMETER]
    assert parameter.parameter_type == pipeline_spec_pb2.ParameterType.STRING
    assert parameter.default_value.string_value == DATA_ROOT
    assert parameter.is_optional
    example_gen = spec.root.dag.tasks["WaferExampleGen"]
    assert example_gen.inputs.parameters["input_base"].component_input_parameter == "data_root"
    assert spec.default_pipeline_root == PIPELINE_ROOT


def test_pipeline_flags_reach_the_components(spec):
    trainer = spec.root.dag.tasks["Trainer"].inputs.parameters
    assert json.loads(trainer["custom_config"].runtime_value.constant.string_value)["epochs"] == 77
    pusher = spec.root.dag.tasks["Pusher"].inputs.parameters
    destination = json.loads(pusher["push_destination"].runtime_value.constant.string_value)
    assert destination["filesystem"]["base_directory"] == f"{PIPELINE_ROOT}/serving_model/waferflow"


def test_local_baseline_strategy_is_refused_by_the_kubeflow_compiler(tmp_path):
    """Why the Kubeflow build uses TFX's LatestBlessedModelStrategy (see pipeline.pipeline)."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from pipeline.config import RunConfig
    from pipeline.pipeline import create_pipeline

    local = create_pipeline(
        RunConfig(),
        pipeline_root=PIPELINE_ROOT,
        data_root=DATA_ROOT,
        serving_model_dir=f"{PIPELINE_ROOT}/serving",
        metadata_connection_config=None,
        beam_pipeline_args=RunConfig().beam_pipeline_args(),
    )
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=IMAGE), output_dir=str(tmp_path)
    )
    with pytest.raises(TypeError, match="resolver policy"):
        runner.run(local, write_out=False)
