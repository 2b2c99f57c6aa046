"""Beam pipeline argument sets: local DirectRunner, Dataflow, Flink and Spark.

Each profile is a function returning the list handed to `create_pipeline(beam_pipeline_args=...)`;
`python -m pipeline.local_runner --beam-profile NAME` picks one and `--beam-arg` adds or overrides
flags (Beam parses with argparse, so a later flag wins). What each profile was checked against on
these machines is in docs/beam.md: options parse and the pipeline builds; only `direct` was run.

Every profile, and every argument list that `create_pipeline` receives, carries
`--beam_plugins=pipeline.beam_worker_setup` (see that module): it makes each Beam worker process
install the `tfx_bsl.arrow.sql_util` stand-in before it unpickles any tfdv code.

Every profile also names the worker image with `--sdk_container_image`. Without one of the flags
that tell TFX how workers get their Python packages (the image, `--setup_file`, `--extra_package`,
`--requirements_file`), each Beam component's executor repackages the installed TFX into a source
distribution to stage (`tfx.utils.dependency_utils.build_ephemeral_package`): 3 s per component here,
and a 52 MB copy left in the temp directory every time (repeated test runs here left 70 GB). The
DirectRunner runs its workers from this interpreter and never reads the flag; remote workers run
the image, which already holds TFX and waferflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    SparkRunnerOptions,
    StandardOptions,
    WorkerOptions,
)

from pipeline import beam_worker_setup

# The image built from the repository's Dockerfile: the KFP component image, and the Beam SDK worker
# image for Dataflow / Flink / Spark once it also carries Beam's boot entry point (docs/beam.md).
DEFAULT_IMAGE = "waferflow:latest"
WORKER_SETUP_PLUGIN = beam_worker_setup.__name__
# multi_threading is left out on purpose: it loses records. Its SDK harnesses flush their output
# buffers from a timer thread (data_buffer_time_limit_ms=1000) without locking out the bundle thread
# that writes to them, so elements written between the flush's read and clear vanish. Any runner
# given the experiment data_buffer_time_limit_ms turns the same timer on. See docs/beam.md.
DIRECT_RUNNING_MODES = ("in_memory", "multi_processing")
LOSSY_EXPERIMENT = "data_buffer_time_limit_ms"
# The flags after which TFX stops repackaging itself for Beam workers (tfx.utils.dependency_utils).
TFX_DEPENDENCY_FLAGS = (
    "--extra_package",
    "--extra_packages",
    "--setup_file",
    "--requirements_file",
    "--worker_harness_container_image",
    "--sdk_container_image",
)


def with_worker_setup(args: Sequence[str]) -> list[str]:
    """`args` plus `--beam_plugins=pipeline.beam_worker_setup`, unless it is already there.

    A DirectRunner list (or one naming no runner) that carries none of TFX_DEPENDENCY_FLAGS also gets
    `--sdk_container_image`, which the DirectRunner ignores, so that TFX does not build and leak a
    copy of itself per component (module docstring). A remote runner's list is left as it is: there
    the staged package is what its workers would otherwise lack.
    """
    args = list(args)
    runners = [a.split("=", 1)[-1].lower() for a in args if a.startswith("--runner=")]
    local = not runners or runners[-1] in ("directrunner", "direct")
    if local and not any(a.split("=", 1)[0] in TFX_DEPENDENCY_FLAGS for a in args):
        args.append(f"--sdk_container_image={DEFAULT_IMAGE}")
    if any(a.split("=", 1)[-1] == WORKER_SETUP_PLUGIN for a in args if a.startswith("--beam_plugin")):
        return args
    return [*args, f"--beam_plugins={WORKER_SETUP_PLUGIN}"]


def direct_args(running_mode: str = "multi_processing", num_workers: int = 0) -> list[str]:
    """Local DirectRunner. multi_processing: one SDK worker process per core (0 = all cores)."""
    if running_mode not in DIRECT_RUNNING_MODES:
        raise ValueError(
            f"direct running mode must be one of {DIRECT_RUNNING_MODES}, not {running_mode!r} "
            "(multi_threading loses records: docs/beam.md)"
        )
    return with_worker_setup(
        ["--runner=DirectRunner", f"--direct_running_mode={running_mode}", f"--direct_num_workers={num_workers}"]
    )


def dataflow_args(
    project: str | None = None,
    region: str | None = None,
    temp_location: str | None = None,
    image: str = DEFAULT_IMAGE,
    max_num_workers: int = 8,
    machine_type: str = "n2-standard-4",
) -> list[str]:
    """Google Cloud Dataflow (Runner v2) with the waferflow image as the SDK worker container.

    project, region and temp_location (gs://...) are site specific: pass them here or as
    `--beam-arg=--project=...`; `validate` says which are missing. The image must be pushed to a
    registry Dataflow can pull from (e.g. Artifact Registry) and have Beam's boot entry point.
    """
    site = {"project": project, "region": region, "temp_location": temp_location}
    return with_worker_setup(
        [
            "--runner=DataflowRunner",
            *(f"--{k}={v}" for k, v in site.items() if v),
            f"--sdk_container_image={image}",
            # The image already holds the SDK and waferflow: nothing to stage or pip-install.
            "--sdk_location=container",
            "--experiments=use_runner_v2",
            "--autoscaling_algorithm=THROUGHPUT_BASED",
            f"--max_num_workers={max_num_workers}",
            f"--machine_type={machine_type}",
        ]
    )


def flink_args(flink_master: str = "localhost:8081", parallelism: int = 4, image: str = DEFAULT_IMAGE) -> list[str]:
    """Apache Flink through Beam's portable FlinkRunner; SDK workers run in the waferflow image.

    `--flink_submit_uber_jar` sends one jar to the cluster's REST endpoint instead of needing a
    separately started Beam job server.
    """
    return with_worker_setup(
        [
            "--runner=FlinkRunner",
            f"--flink_master={flink_master}",
            "--flink_submit_uber_jar",
            f"--parallelism={parallelism}",
            "--environment_type=DOCKER",
            f"--environment_config={image}",
            f"--sdk_container_image={image}",
        ]
    )


def spark_args(
    spark_master_url: str = "spark://localhost:7077",
    spark_rest_url: str = "http://localhost:6066",
    image: str = DEFAULT_IMAGE,
) -> list[str]:
    """Apache Spark (3.x) through Beam's portable SparkRunner, uber jar submitted over Spark's REST API."""
    return with_worker_setup(
        [
            "--runner=SparkRunner",
            f"--spark_master_url={spark_master_url}",
            "--spark_submit_uber_jar",
            f"--spark_rest_url={spark_rest_url}",
            "--environment_type=DOCKER",
            f"--environment_config={image}",
            f"--sdk_container_image={image}",
        ]
    )


PROFILES: dict[str, Callable[..., list[str]]] = {
    "direct": direct_args,
    "dataflow": dataflow_args,
    "flink": flink_args,
    "spark": spark_args,
}


def profile_args(name: str, extra: Sequence[str] = (), **kwargs) -> list[str]:
    """Profile `name` (called with `kwargs`) followed by `extra` flags, which win over the profile's."""
    if name not in PROFILES:
        raise ValueError(f"unknown Beam profile {name!r}; choose from {sorted(PROFILES)}")
    return with_worker_setup([*PROFILES[name](**kwargs), *extra])


def validate(args: Sequence[str]) -> PipelineOptions:
    """Parse `args` as Beam does and check what the chosen runner cannot start without.

    Raises ValueError naming unknown flags and missing runner settings; returns the options.
    """
    options = PipelineOptions(list(args))
    unknown = [
        a
        for a in options.get_all_options(retain_unknown_options=True, drop_default=True)
        if a not in options.get_all_options()
    ]
    if unknown:
        raise ValueError(f"Beam does not know the options {sorted(unknown)}")
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").lower()
    lossy = [e for e in options.view_as(DebugOptions).experiments or [] if e.startswith(LOSSY_EXPERIMENT)]
    if lossy:
        raise ValueError(f"--experiments={lossy[0]} turns on the time-based output flush that loses records")
    if runner in ("directrunner", "direct") and options.view_as(DirectOptions).direct_running_mode == "multi_threading":
        raise ValueError("--direct_running_mode=multi_threading loses records; use multi_processing or in_memory")
    missing: list[str] = []
    if runner in ("dataflowrunner", "dataflow"):
        gcp = options.view_as(GoogleCloudOptions)
        missing = [f"--{k}" for k in ("project", "region", "temp_location") if not getattr(gcp, k)]
        if gcp.temp_location and not gcp.temp_location.startswith("gs://"):
            raise ValueError(f"Dataflow needs a gs:// temp_location, not {gcp.temp_location}")
        if not options.view_as(WorkerOptions).sdk_container_image:
            missing.append("--sdk_container_image")
    elif runner in ("flinkrunner", "flink"):
        if options.view_as(FlinkRunnerOptions).flink_master in ("", None):
            missing.append("--flink_master")
    elif runner in ("sparkrunner", "spark"):
        spark = options.view_as(SparkRunnerOptions)
        if spark.spark_submit_uber_jar and not spark.spark_rest_url:
            missing.append("--spark_rest_url")
    if runner in ("flinkrunner", "sparkrunner") and options.view_as(PortableOptions).environment_type == "DOCKER":
        if not options.view_as(PortableOptions).environment_config:
            missing.append("--environment_config")
    if WORKER_SETUP_PLUGIN not in (options.view_as(SetupOptions).beam_plugins or []):
        missing.append(f"--beam_plugins={WORKER_SETUP_PLUGIN}")
    if missing:
        raise ValueError(f"{runner} needs {', '.join(missing)} (add with --beam-arg=--name=value)")
    return options
