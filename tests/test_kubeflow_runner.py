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

from pipeline import kfp_resources, kubeflow_runner
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
    # No earlier-spans resolver on Kubeflow (pipeline/pipeline.py): the check compares nothing there.
    "DriftCheck": {"WaferExampleGen", "SchemaGen"},
    BLESSING_RESOLVER: set(),
    MODEL_RESOLVER: set(),
    "Evaluator": {"WaferExampleGen", "Trainer", MODEL_RESOLVER, "DriftCheck"},
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
            "--task-resources",
            "Evaluator=cpu:3,memory_limit:12Gi",
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


def test_every_container_task_has_cpu_and_memory_requests_and_limits(package, spec):
    """As the KFP SDK writes them for .set_cpu_request() etc.: Kubernetes quantity strings, and the
    older numeric fields (cores, GB) beside them; the table's values, the flag's override on top."""
    executors = _executors(spec)
    for name, task in spec.root.dag.tasks.items():
        executor = executors[spec.components[task.component_ref.name].executor_label]
        if "resolver" in executor:
            continue
        resources = executor["container"]["resources"]
        expected = kfp_resources.TASK_RESOURCES[name]
        if name == "Evaluator":
            expected = kfp_resources.TaskResources("3", "3", expected.memory_request, "12Gi")
        assert resources["resourceCpuRequest"] == expected.cpu_request, name
        assert resources["resourceCpuLimit"] == expected.cpu_limit, name
        assert resources["resourceMemoryRequest"] == expected.memory_request, name
        assert resources["resourceMemoryLimit"] == expected.memory_limit, name
        assert resources["cpuLimit"] == float(expected.cpu_limit), name
        assert "accelerator" not in resources, name  # no GPU unless asked for
    evaluator = executors["Evaluator_executor"]["container"]["resources"]
    assert evaluator["memoryLimit"] == pytest.approx(12 * 2**30 / 1e9)  # GB, as kfp writes 12Gi
    assert evaluator["memoryRequest"] == pytest.approx(6 * 2**30 / 1e9)


def test_the_trainer_gets_a_gpu_only_when_asked(package):
    with open(package) as f:
        raw = yaml.safe_load(f)
    chosen = kfp_resources.apply(raw, ["Trainer=gpu:1"])
    assert chosen["Trainer"].cpu_limit == kfp_resources.TASK_RESOURCES["Trainer"].cpu_limit  # the rest kept
    executors = raw["deploymentSpec"]["executors"]
    gpus = {label for label, e in executors.items() if "accelerator" in e.get("container", {}).get("resources", {})}
    assert gpus == {"Trainer_executor"}
    accelerator = executors["Trainer_executor"]["container"]["resources"]["accelerator"]
    assert accelerator == {
        "type": "nvidia.com/gpu",
        "count": "1",
        "resourceType": "nvidia.com/gpu",
        "resourceCount": "1",
    }
    # The KFP SDK reads the result back as a PipelineSpec.
    spec = json_format.ParseDict(raw, pipeline_spec_pb2.PipelineSpec())
    trainer = spec.deployment_spec.fields["executors"].struct_value.fields["Trainer_executor"]
    assert trainer.struct_value.fields["container"].struct_value.fields["resources"].struct_value


def test_the_resources_written_are_what_the_kfp_sdk_writes(tmp_path):
    """Compile a one-task KFP pipeline with the SDK's own setters and compare field by field."""
    from kfp import compiler, dsl

    @dsl.container_component
    def task():
        return dsl.ContainerSpec(image="alpine", command=["true"])

    @dsl.pipeline(name="sized")
    def sized():
        t = task()
        t.set_cpu_request("500m").set_cpu_limit("2").set_memory_request("6Gi").set_memory_limit("8Gi")
        t.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)

    compiler.Compiler().compile(sized, str(tmp_path / "sized.yaml"))
    with open(tmp_path / "sized.yaml") as f:
        sdk = yaml.safe_load(f)["deploymentSpec"]["executors"]["exec-task"]["container"]["resources"]
    ours = kfp_resources.TaskResources("500m", "2", "6Gi", "8Gi", gpu=1).to_spec()
    assert ours == sdk


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("Trainer=cpu:four", "cpu 'four' is not a CPU quantity"),
        ("Trainer=memory:16GB", "memory '16GB' is not a memory quantity"),
        ("Trainer=gpu:-1", "gpu '-1' is not a non-negative integer"),
        ("Trainer=disk:10Gi", "unknown key 'disk'"),
        ("Trainer=cpu", "'cpu' is not key:value"),
        ("cpu:4", "no TASK="),
    ],
)
def test_a_bad_resource_string_is_a_clear_error(flag, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        kubeflow_runner.main(["--task-resources", flag])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--task-resources {flag!r}: {message}" in err


def test_resources_for_a_task_the_pipeline_lacks_are_refused(package):
    with open(package) as f:
        raw = yaml.safe_load(f)
    with pytest.raises(ValueError, match="no container task 'Trainr'.*its tasks: .*Trainer"):
        kfp_resources.apply(raw, ["Trainr=cpu:8"])  # a typo must not leave the Trainer unsized unnoticed
    # Nor may a resolver (a query, not a pod) be given resources.
    with pytest.raises(ValueError, match="no container task 'previous_statistics_resolver'"):
        kfp_resources.apply(raw, ["previous_statistics_resolver=cpu:1"])


def test_task_output_parameters_name_a_task_of_the_dag(spec):
    """The KFP driver finds a parameter's producer by task name; TFX writes `<id>_task` (fixed up)."""
    tasks = spec.root.dag.tasks
    producers = [
        parameter.task_output_parameter.producer_task
        for task in tasks.values()
        for parameter in task.inputs.parameters.values()
        if parameter.HasField("task_output_parameter")
    ]
    assert producers == ["TransformConfig"]


def test_every_artifact_type_title_imports_as_the_container_entrypoint_imports_it(package):
    """kubeflow_v2_run_executor rebuilds a custom artifact type by importing its schema title
    (`components.ONNXModel`) as a class path; components/__init__.py provides them."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.utils import import_utils

    with open(package) as f:
        raw = yaml.safe_load(f)
    titles = {
        yaml.safe_load(definition["artifactType"]["instanceSchema"])["title"]
        for component in raw["components"].values()
        for group in ("inputDefinitions", "outputDefinitions")
        for definition in component.get(group, {}).get("artifacts", {}).values()
    }
    custom = titles - set(compiler_utils.TITLE_TO_CLASS_PATH)
    assert custom == {
        "components.DriftReport",
        "components.ONNXModel",
        "components.TFLiteModel",
        "components.WaferReport",
    }
    for title in custom:
        assert import_utils.import_class_by_path(title).TYPE_NAME == title


def test_the_example_gen_task_fingerprints_its_input_before_the_cache_check(spec):
    """New files under the same data root must not be a KFP cache hit: the WaferExampleGen task
    carries TFX's ExampleGen driver as its pre-cache-check hook, which resolves the newest span and
    fingerprints the files into the task's parameters (the cache key) before KFP looks for a hit."""
    container = _executors(spec)["WaferExampleGen_executor"]["container"]
    hook = container["lifecycle"]["preCacheCheck"]
    assert hook["command"] == ["python", "-m", "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"]
    assert "--json_serialized_invocation_args" in hook["args"]


# The pattern pipeline's package (`waferflow kfp --patterns`): the same compiler, its own tasks.
BASE_MODEL_URI = "gs://fab-ml/waferflow/root/waferflow-patterns-wf7n/Trainer/model/12"
PATTERN_DEPENDENCIES = {
    "WaferMapExampleGen": set(),
    "StatisticsGen": {"WaferMapExampleGen"},
    "SchemaGen": {"StatisticsGen"},
    "ExampleValidator": {"StatisticsGen", "SchemaGen"},
    "Transform": {"WaferMapExampleGen", "SchemaGen"},
    "base_model_importer": set(),
    "Trainer": {"Transform", "SchemaGen", "base_model_importer"},
    BLESSING_RESOLVER: set(),
    MODEL_RESOLVER: set(),
    "Evaluator": {"WaferMapExampleGen", "Trainer", MODEL_RESOLVER},
    "Pusher": {"Trainer", "Evaluator"},
    "PatternExporter": {"WaferMapExampleGen", "Trainer", "Evaluator"},
    "PatternReport": {"WaferMapExampleGen", "Trainer", "Evaluator"},
}


@pytest.fixture(scope="module")
def pattern_package(tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("kfp_patterns") / "waferflow-patterns.yaml")
    flags = ["--patterns", "--output", output, "--image", IMAGE, "--pipeline-root", PIPELINE_ROOT]
    flags += ["--data-root", DATA_ROOT, "--base-model", BASE_MODEL_URI, "--transfer", "gradual_unfreeze"]
    return kubeflow_runner.main([*flags, "--epochs", "61"])


def test_the_pattern_pipeline_compiles_with_its_tasks_and_the_base_model_imported(pattern_package):
    spec = components.load_component_from_file(pattern_package).pipeline_spec
    tasks = spec.root.dag.tasks
    assert set(tasks) == set(PATTERN_DEPENDENCIES)
    for name, expected in PATTERN_DEPENDENCIES.items():
        assert set(tasks[name].dependent_tasks) == expected, name
    executors = _executors(spec)
    # The other product's model enters as an importer of its URI, as given: lineage in KFP's MLMD.
    importer = executors["base_model_importer_executor"]["importer"]
    assert importer["artifactUri"]["constant"] == BASE_MODEL_URI
    assert "title: tfx.Model" in importer["typeSchema"]["instanceSchema"]
    trainer = tasks["Trainer"].inputs.parameters
    custom_config = json.loads(trainer["custom_config"].runtime_value.constant.string_value)
    assert (custom_config["transfer"], custom_config["epochs"]) == ("gradual_unfreeze", 61)
    for name, task in tasks.items():
        executor = executors[spec.components[task.component_ref.name].executor_label]
        if "container" not in executor:
            continue
        assert executor["container"]["image"] == IMAGE, name
        assert executor["container"]["resources"]["resourceMemoryLimit"] == (
            kfp_resources.TASK_RESOURCES[name].memory_limit
        ), name
    with open(pattern_package) as f:
        raw = yaml.safe_load(f)
    assert raw["defaultPipelineRoot"] == PIPELINE_ROOT
    assert raw["root"]["inputDefinitions"]["parameters"]["data_root"]["defaultValue"] == DATA_ROOT
