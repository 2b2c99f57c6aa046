"""Beam argument profiles for Dataflow, Flink and Spark, checked as far as a machine without them allows.

For each profile: Beam parses the arguments into the runner's options, `create_pipeline` builds and
TFX compiles the pipeline with them, and the project's own ExampleGen Beam graph is translated for
the runner (Dataflow: a dry-run job; Flink and Spark: the portable pipeline proto with the Docker
worker environment). Nothing is submitted: no cloud project or cluster is reachable from here.
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    SparkRunnerOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms import environments
from tfx.dsl.compiler import compiler
from tfx.proto.orchestration import executable_spec_pb2, pipeline_pb2

from components.wafer_example_gen import executor
from pipeline import beam_args
from pipeline.config import RunConfig, parse_args
from pipeline.pipeline import create_pipeline

SITE = {"project": "fab-ml", "region": "europe-west4", "temp_location": "gs://fab-ml-tmp/beam"}
IMAGE = "europe-docker.pkg.dev/fab-ml/images/waferflow:1.0"
PROFILE_ARGS = {
    "direct": beam_args.direct_args(),
    "dataflow": beam_args.dataflow_args(image=IMAGE, **SITE),
    "flink": beam_args.flink_args(flink_master="flink-jobmanager:8081", parallelism=8, image=IMAGE),
    "spark": beam_args.spark_args(
        spark_master_url="spark://spark-master:7077", spark_rest_url="http://spark-master:6066", image=IMAGE
    ),
}
RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}


@pytest.mark.parametrize("profile", sorted(PROFILE_ARGS))
def test_profile_parses_into_its_runner_options(profile):
    options = beam_args.validate(PROFILE_ARGS[profile])
    assert options.view_as(StandardOptions).runner == RUNNERS[profile]
    assert options.view_as(SetupOptions).beam_plugins == [beam_args.WORKER_SETUP_PLUGIN]
    if profile == "dataflow":
        gcp = options.view_as(GoogleCloudOptions)
        assert (gcp.project, gcp.region, gcp.temp_location) == tuple(SITE.values())
        assert options.view_as(WorkerOptions).sdk_container_image == IMAGE
    elif profile == "flink":
        flink = options.view_as(FlinkRunnerOptions)
        assert (flink.flink_master, flink.parallelism) == ("flink-jobmanager:8081", 8)
        assert flink.flink_submit_uber_jar
    elif profile == "spark":
        spark = options.view_as(SparkRunnerOptions)
        assert spark.spark_master_url == "spark://spark-master:7077"
        assert spark.spark_rest_url == "http://spark-master:6066"
    if profile in ("flink", "spark"):
        portable = options.view_as(PortableOptions)
        assert (portable.environment_type, portable.environment_config) == ("DOCKER", IMAGE)


def test_dataflow_without_site_settings_is_refused_with_what_is_missing():
    with pytest.raises(ValueError, match="--project, --region, --temp_location"):
        beam_args.validate(beam_args.dataflow_args())
    with pytest.raises(ValueError, match="gs://"):
        beam_args.validate(beam_args.dataflow_args(project="p", region="r", temp_location="/tmp/x"))


def test_unknown_flags_and_missing_worker_setup_are_refused():
    with pytest.raises(ValueError, match="flink_mastr"):
        beam_args.validate([*beam_args.flink_args(), "--flink_mastr=x:1"])
    with pytest.raises(ValueError, match="beam_plugins"):
        beam_args.validate(["--runner=DirectRunner"])


def test_settings_that_lose_records_are_refused():
    """multi_threading and the time-based output flush lose elements (docs/beam.md): never run them."""
    with pytest.raises(ValueError, match="multi_threading"):
        beam_args.direct_args("multi_threading")
    with pytest.raises(ValueError, match="loses records"):
        beam_args.validate([*beam_args.direct_args(), "--direct_running_mode=multi_threading"])
    with pytest.raises(ValueError, match="data_buffer_time_limit_ms"):
        beam_args.validate([*PROFILE_ARGS["flink"], "--experiments=data_buffer_time_limit_ms=500"])
    with pytest.raises(ValueError, match="multi_threading"):
        RunConfig(direct_running_mode="multi_threading").beam_pipeline_args()
    with pytest.raises(SystemExit):  # the flag's choices refuse it; its help says why
        parse_args(["--direct-running-mode", "multi_threading"])


def test_cli_profile_and_extra_arguments_win():
    config = parse_args(
        ["--beam-profile", "flink", "--beam-arg=--parallelism=16", "--beam-arg=--flink_master=prod:8081"]
    )
    options = beam_args.validate(config.beam_pipeline_args())
    assert options.view_as(FlinkRunnerOptions).parallelism == 16
    assert options.view_as(FlinkRunnerOptions).flink_master == "prod:8081"
    with pytest.raises(ValueError, match="unknown Beam profile"):
        RunConfig(beam_profile="samza").beam_pipeline_args()
    with pytest.raises(SystemExit):
        parse_args(["--beam-profile", "samza"])


def test_local_default_is_multi_process_direct_runner_with_worker_setup():
    args = RunConfig().beam_pipeline_args()
    assert "--direct_running_mode=multi_processing" in args
    assert args.count(f"--beam_plugins={beam_args.WORKER_SETUP_PLUGIN}") == 1
    assert beam_args.with_worker_setup(args) == args
    # A runner chosen through --beam-arg alone still gets the worker setup.
    assert beam_args.with_worker_setup(["--runner=FlinkRunner"])[-1].endswith(beam_args.WORKER_SETUP_PLUGIN)


@pytest.mark.parametrize("profile", sorted(PROFILE_ARGS))
def test_pipeline_builds_and_compiles_with_profile(profile, tmp_path):
    pipeline = create_pipeline(
        RunConfig(),
        pipeline_root=str(tmp_path / "root"),
        data_root=str(tmp_path / "data"),
        serving_model_dir=str(tmp_path / "serving"),
        metadata_connection_config=None,
        beam_pipeline_args=PROFILE_ARGS[profile],
    )
    ir = compiler.Compiler().compile(pipeline)
    beam_nodes = {}
    for node_id, spec in _executor_specs(ir).items():
        beam_spec = executable_spec_pb2.BeamExecutableSpec()
        if spec.Unpack(beam_spec):
            beam_nodes[node_id] = list(beam_spec.beam_pipeline_args)
    assert {"WaferExampleGen", "StatisticsGen", "Transform", "Evaluator"} <= set(beam_nodes)
    for node_id, args in beam_nodes.items():
        assert f"--runner={RUNNERS[profile]}" in args, node_id
        assert f"--beam_plugins={beam_args.WORKER_SETUP_PLUGIN}" in args, node_id


def _executor_specs(ir: pipeline_pb2.Pipeline) -> dict:
    """Node id -> packed executable spec, from the compiled pipeline's deployment config."""
    config = pipeline_pb2.IntermediateDeploymentConfig()
    ir.deployment_config.Unpack(config)
    return dict(config.executor_specs)


def _example_gen_graph(pipeline: beam.Pipeline, dataset: str, report_dir: str) -> None:
    """The project's own ExampleGen Beam graph, ending in a TFRecord write, as the executor builds it."""
    props = {
        "input_base": dataset,
        executor.INPUT_FORMAT_KEY: "parquet",
        executor.LABELS_PATTERN_KEY: "labels/*.parquet",
        executor.BAD_FILE_POLICY_KEY: "fail",
        executor._REPORT_DIR_KEY: report_dir,
    }
    examples = pipeline | executor._WaferFilesToExample(props, "wafers/*/*.parquet")
    _ = examples | beam.Map(lambda e: e.SerializeToString()) | beam.io.WriteToTFRecord(f"{report_dir}/examples")


def test_dataflow_translates_the_example_gen_graph_into_a_job(small_dataset):
    args = [*PROFILE_ARGS["dataflow"], "--dry_run=True", "--no_auth", "--job_name=waferflow-dry-run"]
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    _example_gen_graph(pipeline, small_dataset, "gs://fab-ml-tmp/reports")
    job = pipeline.run().job  # dry run: the job is built, not submitted
    assert job.proto.name == "waferflow-dry-run"
    (environment,) = job.proto_pipeline.components.environments.values()
    assert environment.urn == "beam:env:docker:v1"
    assert beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image == IMAGE
    transforms = [t.unique_name for t in job.proto_pipeline.components.transforms.values()]
    assert any("ReadFiles" in name for name in transforms) and any("JoinLabels" in name for name in transforms)
    assert beam_args.WORKER_SETUP_PLUGIN in job.options.view_as(SetupOptions).beam_plugins


@pytest.mark.parametrize("profile", ["flink", "spark"])
def test_portable_runners_get_the_graph_with_the_image_as_worker_environment(profile, small_dataset, tmp_path):
    options = PipelineOptions(PROFILE_ARGS[profile])
    environment = environments.Environment.from_options(options.view_as(PortableOptions))
    assert isinstance(environment, environments.DockerEnvironment)
    assert environment.container_image == IMAGE
    # What the portable runner sends to the job server, before it needs one (and Java, and a cluster).
    pipeline = beam.Pipeline(runner="DirectRunner", options=options)
    _example_gen_graph(pipeline, small_dataset, str(tmp_path))
    proto = pipeline.to_runner_api(default_environment=environment)
    used = {t.environment_id for t in proto.components.transforms.values() if t.environment_id}
    assert used and all(proto.components.environments[e].urn == "beam:env:docker:v1" for e in used)


@pytest.mark.parametrize(
    "args",
    [*PROFILE_ARGS.values(), beam_args.with_worker_setup(["--runner=DirectRunner"]), beam_args.with_worker_setup([])],
    ids=[*PROFILE_ARGS, "plain-direct", "no-runner"],
)
def test_tfx_does_not_repackage_itself_for_the_workers(args):
    """TFX's own check: with none of the dependency flags it builds (and leaks) a TFX sdist per component."""
    from tfx.utils import dependency_utils

    assert dependency_utils.make_beam_dependency_flags(list(args)) == list(args)


def test_a_remote_runner_without_an_image_keeps_tfx_staging():
    args = beam_args.with_worker_setup(["--runner=DataflowRunner", "--project=p"])
    assert not any(a.startswith("--sdk_container_image") for a in args)
