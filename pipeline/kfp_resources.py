"""CPU, memory and accelerator requests and limits of the Kubeflow tasks: the one table, its flag, its writer.

KubeflowV2DagRunner writes no resources into the PipelineSpec, so a KFP backend would schedule
every TFX task with none: a Beam task could land on a node without the memory for its workers, and
the Trainer never gets a GPU. `TASK_RESOURCES` sizes each task; `--task-resources` overrides it per
task; `apply` writes the result into the compiled spec in the fields the KFP 2.x SDK itself writes
for `.set_cpu_request()` and friends (checked against kfp 2.16.1): the string `resource*` fields
that current backends read, and the older numeric `cpu*` / `memory*` (cores, GB) fields beside them
for older backends.

Sizes come from docs/beam.md's measurements on the default dataset: a Beam task with the default 2
DirectRunner worker processes peaked at 5.3-5.8 GB for its process tree (one process: up to 2 GB),
and memory follows the number of processes, not the data. Raise them with the data or
`--direct-num-workers`.
"""

from __future__ import annotations

import dataclasses
import re

from google.protobuf import json_format
from kfp.compiler import compiler_utils
from kfp.pipeline_spec import pipeline_spec_pb2

# The KFP SDK's own accepted forms (kfp.dsl.pipeline_task._validate_*_request_limit).
_CPU = re.compile(r"([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki){0,1}$")
DEFAULT_ACCELERATOR = "nvidia.com/gpu"  # the NVIDIA device plugin's resource name

_ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


@dataclasses.dataclass(frozen=True)
class TaskResources:
    """One task's Kubernetes requests and limits (quantities as Kubernetes writes them)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gpu: int = 0  # accelerators requested (KFP sets request = limit for them)
    accelerator: str = DEFAULT_ACCELERATOR

    def to_spec(self) -> dict:
        """The `container.resources` mapping, as the KFP SDK compiler writes it."""
        spec = _ResourceSpec(
            cpu_request=compiler_utils._cpu_to_float(self.cpu_request),
            cpu_limit=compiler_utils._cpu_to_float(self.cpu_limit),
            memory_request=compiler_utils._memory_to_float(self.memory_request),
            memory_limit=compiler_utils._memory_to_float(self.memory_limit),
            resource_cpu_request=self.cpu_request,
            resource_cpu_limit=self.cpu_limit,
            resource_memory_request=self.memory_request,
            resource_memory_limit=self.memory_limit,
        )
        if self.gpu:
            spec.accelerator.CopyFrom(
                _ResourceSpec.AcceleratorConfig(
                    type=self.accelerator,
                    count=self.gpu,
                    resource_type=self.accelerator,
                    resource_count=str(self.gpu),
                )
            )
        return json_format.MessageToDict(spec)


def _sized(cpu: str, memory_request: str, memory_limit: str) -> TaskResources:
    # CPU request = limit: a Beam task starts one worker per core it is given.
    return TaskResources(cpu, cpu, memory_request, memory_limit)


_BEAM = _sized("2", "6Gi", "8Gi")  # 2 DirectRunner workers, each with its own TensorFlow
_LIGHT = _sized("1", "2Gi", "4Gi")  # one process importing TensorFlow, small inputs

# Per task (the KFP task name: the component id). A task not listed gets DEFAULT_RESOURCES.
TASK_RESOURCES: dict[str, TaskResources] = {
    "WaferExampleGen": _BEAM,
    "StatisticsGen": _BEAM,
    "SchemaGen": _LIGHT,
    "ImportSchemaGen": _LIGHT,
    "ExampleValidator": _sized("1", "4Gi", "6Gi"),
    "TransformConfig": _LIGHT,
    "DriftCheck": _LIGHT,  # reads two statistics protos
    "Transform": _BEAM,
    "Tuner": _sized("4", "8Gi", "16Gi"),
    "Trainer": _sized("4", "8Gi", "16Gi"),  # Keras uses every core it is given; `gpu:1` adds a GPU
    "Evaluator": _BEAM,
    "Pusher": _LIGHT,
    "TFLiteExporter": _sized("2", "4Gi", "8Gi"),
    "OnnxExporter": _sized("2", "4Gi", "8Gi"),
    "WaferReport": _sized("2", "4Gi", "8Gi"),
    # The pattern pipeline (kubeflow_runner --patterns); its other tasks share the names above.
    "WaferMapExampleGen": _BEAM,
    "PatternExporter": _sized("2", "4Gi", "8Gi"),
    "PatternReport": _sized("2", "4Gi", "8Gi"),
}
DEFAULT_RESOURCES = _BEAM

EXAMPLE = "Trainer=cpu:8,memory:32Gi,gpu:1"
FLAG_HELP = (
    "TASK=key:value,... (repeatable): override a task's resources. Keys: cpu, memory (request = limit), "
    "cpu_request, cpu_limit, memory_request, memory_limit, gpu (count), accelerator (type, default "
    f"{DEFAULT_ACCELERATOR}). E.g. --task-resources {EXAMPLE}"
)


def parse_override(text: str, tasks: dict[str, TaskResources]) -> tuple[str, TaskResources]:
    """`Trainer=cpu:4,memory:16Gi,gpu:1` -> ("Trainer", its resources in `tasks` with those changes)."""

    def bad(why: str) -> ValueError:
        return ValueError(f"--task-resources {text!r}: {why}; expected TASK=key:value,..., e.g. {EXAMPLE}")

    task, sep, items = text.partition("=")
    if not sep or not task or not items:
        raise bad("no TASK=")
    changes: dict[str, str | int] = {}
    for item in items.split(","):
        key, sep, value = item.strip().partition(":")
        if not sep or not value:
            raise bad(f"{item!r} is not key:value")
        if key in ("cpu", "cpu_request", "cpu_limit"):
            if not _CPU.match(value):
                raise bad(f"{key} {value!r} is not a CPU quantity (a number, or an integer followed by m)")
        elif key in ("memory", "memory_request", "memory_limit"):
            if not _MEMORY.match(value):
                raise bad(
                    f"{key} {value!r} is not a memory quantity (an integer, optionally with a unit: Mi, Gi, G, ...)"
                )
        elif key == "gpu":
            if not value.isdigit():
                raise bad(f"gpu {value!r} is not a non-negative integer")
            value = int(value)
        elif key != "accelerator":
            raise bad(f"unknown key {key!r}")
        if key in ("cpu", "memory"):
            changes[f"{key}_request"] = changes[f"{key}_limit"] = value
        else:
            changes[key] = value
    return task, dataclasses.replace(tasks.get(task, DEFAULT_RESOURCES), **changes)


def apply(spec: dict, overrides: list[str] = ()) -> dict[str, TaskResources]:
    """Write every container task's resources into a PipelineSpec dict (as read from the YAML):
    TASK_RESOURCES, then the `--task-resources` overrides in order (a later one wins). Returns
    what each task got.

    An override naming a task the pipeline lacks is an error, not a silent no-op: a typo (or a
    Tuner override for a pipeline compiled without the Tuner) must not go unnoticed.
    """
    executors = spec["deploymentSpec"]["executors"]
    containers = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        if "container" in executors[label]:  # resolvers are queries, not pods
            containers[name] = label
    chosen = {name: TASK_RESOURCES.get(name, DEFAULT_RESOURCES) for name in containers}
    for text in overrides:
        name, resources = parse_override(text, chosen)
        if name not in containers:
            raise ValueError(
                f"--task-resources {text!r}: this pipeline has no container task {name!r} "
                f"(its tasks: {', '.join(sorted(containers))})"
            )
        chosen[name] = resources
    for name, label in containers.items():
        executors[label]["container"]["resources"] = chosen[name].to_spec()
    return chosen
