"""Compile the waferflow pipeline for Kubeflow Pipelines 2.x: KFP IR YAML from KubeflowV2DagRunner.

    python -m pipeline.kubeflow_runner --output output/kfp/waferflow.yaml \\
        [--image waferflow:latest] [--pipeline-root gs://bucket/waferflow] [--data-root gs://bucket/data] \\
        [any pipeline.local_runner training / Beam flag, e.g. --train-steps 2000 --beam-profile dataflow]

The same `create_pipeline(...)` as the local runner, with three differences the orchestrator needs:
- `data_root` is a KFP runtime parameter (`data_root`, default `--data-root`), so one compiled
  package serves every dataset: pass `arguments={"data_root": ...}` per run.
- the pipeline root is the spec's `defaultPipelineRoot` (default `--pipeline-root`); KFP lets each run
  or recurring run override it (`pipeline_root=`), which is how KFP 2.x parameterises it.
- no MLMD connection (KFP records metadata itself) and TFX's own LatestBlessedModelStrategy for the
  Evaluator baseline, the only blessed-model resolver the Kubeflow V2 compiler supports.
Every component runs in `--image` (built from the repository's Dockerfile).

`--patterns` compiles the wafer-map pattern pipeline instead (pipeline/pattern_pipeline.py) with the
flags of `waferflow run-patterns`, the same three differences, and one more: `--base-model` is used as
it is, as the URI of a Model artifact of the other product's pattern pipeline (the folder holding
`Format-Serving/`, e.g. `gs://B/root/waferflow-patterns-wf7n/Trainer/model/<id>`); the local runner's
staging of a serving directory or a .keras file needs the local disk.

    python -m pipeline.kubeflow_runner --patterns --output output/kfp/waferflow-patterns.yaml \
        --base-model gs://bucket/root/.../Trainer/model/12 [--transfer fine_tune --epochs 60 ...]
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml
from tfx import v1 as tfx
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from pipeline import beam_args, kfp_resources
from pipeline import config as run_config
from pipeline.beam_args import DEFAULT_IMAGE
from pipeline.config import PatternRunConfig, RunConfig, parse_args
from pipeline.console import ArgumentParser
from pipeline.pattern_pipeline import create_pattern_pipeline
from pipeline.pipeline import create_pipeline

DATA_ROOT_PARAMETER = "data_root"
DEFAULT_PIPELINE_ROOT = "gs://waferflow/pipeline_root"
DEFAULT_DATA_ROOT = "gs://waferflow/data"


def build(
    config: RunConfig | PatternRunConfig, pipeline_root: str, data_root: str, serving_model_dir: str | None = None
) -> tfx.dsl.Pipeline:
    """The pipeline as KFP runs it: data_root a runtime parameter, no MLMD connection of its own.
    A PatternRunConfig builds the pattern pipeline, whose base model (if any) is imported from its URI."""
    common = dict(
        pipeline_root=pipeline_root,
        data_root=tfx.dsl.experimental.RuntimeParameter(name=DATA_ROOT_PARAMETER, ptype=str, default=data_root),
        serving_model_dir=serving_model_dir or f"{pipeline_root.rstrip('/')}/serving_model/{config.pipeline_name}",
        metadata_connection_config=None,
        beam_pipeline_args=config.beam_pipeline_args(),
        baseline_strategy="latest_blessed",
    )
    if isinstance(config, PatternRunConfig):
        return create_pattern_pipeline(config, base_model_uri=config.base_model, **common)
    return create_pipeline(config, **common)


def compile_pipeline(
    config: RunConfig | PatternRunConfig,
    output: str,
    image: str = DEFAULT_IMAGE,
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
    data_root: str = DEFAULT_DATA_ROOT,
    serving_model_dir: str | None = None,
    task_resources: list[str] = (),
) -> str:
    """Write the KFP IR for `config` to `output` (YAML when it ends in .yaml/.yml) and return its path.

    In YAML, every container task gets CPU and memory requests and limits (pipeline/kfp_resources.py:
    the table, overridden by `task_resources`, e.g. ["Trainer=cpu:8,memory:32Gi,gpu:1"]).
    """
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        # Schema 2.1 (typed `parameterType` inputs) is what the KFP 2.x SDK itself writes, and the
        # only schema TFX's YAML writer handles once the pipeline has runtime parameters.
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(output)),
        output_filename=os.path.basename(output),
    )
    pipeline = build(config, pipeline_root, data_root, serving_model_dir)
    beam_args.validate(pipeline.beam_pipeline_args)  # refuse what would not start, or would lose records
    runner.run(pipeline)
    if output.endswith((".yaml", ".yml")):
        _add_defaults(output, pipeline_root, {DATA_ROOT_PARAMETER: data_root}, list(task_resources))
    return output


def _add_defaults(path: str, pipeline_root: str, parameter_defaults: dict[str, str], task_resources: list[str]) -> None:
    """Write into the YAML spec what KubeflowV2DagRunner leaves out or gets wrong for a KFP backend.

    - The defaults TFX keeps only in a JSON job's runtime config: KubeflowV2DagRunner's YAML is the
      bare PipelineSpec, so without them the pipeline root and the runtime parameters' defaults would
      be lost and every run would have to pass them. Written as the KFP SDK writes them
      (`defaultPipelineRoot`, `defaultValue` + `isOptional`).
    - Each container task's resources (pipeline/kfp_resources.py).
    - The producer of a task-output parameter: TFX's step builder names it `<component id>_task`
      (tfx/orchestration/kubeflow/v2/step_builder.py), but the DAG's task is `<component id>`, and
      the KFP driver looks the producer up by task name ("producerTask task ... not found"). The
      Transform's custom_config from TransformConfig is such a parameter.
    """
    with open(path) as f:
        text = f.read()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    spec = yaml.safe_load(text)
    spec["defaultPipelineRoot"] = pipeline_root
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name, value in parameter_defaults.items():
        parameters[name].update(defaultValue=value, isOptional=True)
    kfp_resources.apply(spec, task_resources)
    tasks = spec["root"]["dag"]["tasks"]
    for task in tasks.values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            producer = parameter.get("taskOutputParameter", {})
            name = producer.get("producerTask", "")
            if name not in tasks and name.removesuffix("_task") in tasks:
                producer["producerTask"] = name.removesuffix("_task")
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump(spec, f, sort_keys=True)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument(
        "--output",
        default=None,
        help="compiled package; .yaml/.yml for YAML (what KFP 2.x uploads), else JSON "
        "(default output/kfp/waferflow.yaml, with --patterns output/kfp/waferflow-patterns.yaml)",
    )
    parser.add_argument(
        "--patterns",
        action="store_true",
        help="compile the wafer-map pattern pipeline (the flags of `waferflow run-patterns`) instead",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="container image every component runs in")
    parser.add_argument(
        "--pipeline-root",
        default=DEFAULT_PIPELINE_ROOT,
        help="default pipeline root (artifact store) written into the spec; runs can override it",
    )
    parser.add_argument(
        "--data-root",
        default=DEFAULT_DATA_ROOT,
        help=f"default of the `{DATA_ROOT_PARAMETER}` runtime parameter (dataset directory)",
    )
    parser.add_argument(
        "--serving-model-dir",
        default=None,
        help="Pusher destination (default <pipeline-root>/serving_model/<pipeline name>)",
    )
    parser.add_argument(
        "--task-resources", action="append", default=[], metavar="TASK=key:value,...", help=kfp_resources.FLAG_HELP
    )
    own, rest = parser.parse_known_args(argv)
    for text in own.task_resources:  # fail before the minute of compiling, not after
        try:
            kfp_resources.parse_override(text, kfp_resources.TASK_RESOURCES)
        except ValueError as error:
            parser.error(str(error))
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        print(
            "\nTraining, evaluation and Beam flags are those of "
            + ("`waferflow run-patterns`:" if own.patterns else "pipeline.local_runner:")
        )
    # The local runner's flags for everything else; its output and data paths do not apply here.
    if own.patterns:
        pattern_parser = ArgumentParser(description="pipeline.kubeflow_runner --patterns (pipeline flags)")
        run_config.add_arguments(pattern_parser, PatternRunConfig)
        config = run_config.config_from_args(pattern_parser.parse_args(rest), PatternRunConfig)
    else:
        config = parse_args(rest, description="pipeline.kubeflow_runner (pipeline flags)")
    if own.output is None:
        own.output = os.path.join("output", "kfp", "waferflow-patterns.yaml" if own.patterns else "waferflow.yaml")
    path = compile_pipeline(
        config, own.output, own.image, own.pipeline_root, own.data_root, own.serving_model_dir, own.task_resources
    )
    print(f"wrote {path} (image {own.image}, pipeline root {own.pipeline_root}, data_root {own.data_root})")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
