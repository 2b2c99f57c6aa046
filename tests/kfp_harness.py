"""Run a compiled KFP IR package's tasks in DAG order, each the way the KFP launcher runs a container.

Why a harness: the pinned kfp SDK's local execution (`kfp.local`, 2.16.1) cannot run this package.
Its SubprocessRunner runs lightweight Python components only and refuses a container task
("only supports running Lightweight Python Components"), every TFX task is a container, and it
does not know the resolver executor spec at all (`orchestrator_utils`: "Only 'dsl.component',
'dsl.container_component', and 'dsl.importer' are supported"); its DockerRunner needs a Docker
engine. tests/test_kfp_execution.py pins the refusal.

What each task gets, as from the KFP v2 driver and launcher (backend/src/v2/driver, component):
- its container `command` + `args` from `deploymentSpec`, `{{$}}` replaced by the task's
  `executorInput` JSON (any other placeholder is an error: the KFP SDK's would need resolving);
- the executor input: parameter values from the task's `runtimeValue` constants, the pipeline's
  runtime parameters (`componentInputParameter`) and upstream tasks' output parameters
  (`taskOutputParameter`, its producer looked up by task name as the driver does); input artifacts
  from upstream tasks' executor output (name, type, URI, metadata); output artifacts at
  `<pipeline root>/<run id>/<task>/<output>` (the driver's `generateOutputURI`), output parameters'
  files and the output metadata file in the task's own scratch directory (a pod's /tmp);
- the parent directory of each output artifact's URI created first (the launcher's
  `prepareOutputFolders`; a String artifact's value is a file at its URI);
- a subprocess in the repository root (the image's WORKDIR) with this interpreter's bin directory
  first on PATH (the image's `python`), the executor's output metadata file read back after it.

What it leaves out:
- resolver tasks (KFP's MLMD queries): resolved to no artifacts, which is what they return on a
  pipeline's first run; a second run against an earlier blessed model is not exercised;
- the driver's caching, MLMD recording, retries, and any pod spec (image, resources, volumes);
- importers and conditions (the package has none).

A task with a pre-cache-check hook (the WaferExampleGen: TFX's ExampleGen driver, which resolves the
newest span and fingerprints the input files) runs the hook first, as the launcher does, and the
parameters the hook writes back (span, version, input_fingerprint, the span's input_config) replace
the task's own before its executor runs: on a real backend they are what the cache key is made of.
"""

from __future__ import annotations

import dataclasses
import graphlib
import json
import os
import subprocess
import sys

import yaml

# The run's own values beside the runtime parameters (names no pipeline parameter can have).
_PIPELINE_ROOT, _RUN_ID = "{{$.pipeline_root}}", "{{$.pipeline_job_uuid}}"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class TaskRun:
    """One executed task: its executor input, what it wrote back, its log file."""

    name: str
    executor_input: dict
    artifacts: dict[str, list[dict]]  # output key -> runtime artifacts, as downstream tasks get them
    parameters: dict[str, object]  # output key -> value
    log: str = ""
    resolver: bool = False


def dag_order(spec: dict) -> list[str]:
    """Task names, each after every task it depends on or reads an output of."""
    graph = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        inputs = task.get("inputs", {})
        producers = {
            source[kind]["producerTask"]
            for kind, group in (("taskOutputArtifact", "artifacts"), ("taskOutputParameter", "parameters"))
            for source in inputs.get(group, {}).values()
            if kind in source
        }
        graph[name] = set(task.get("dependentTasks", [])) | producers
    return list(graphlib.TopologicalSorter(graph).static_order())


def _parameter_value(name: str, source: dict, arguments: dict, runs: dict[str, TaskRun]):
    if "runtimeValue" in source:
        return source["runtimeValue"]["constant"]
    if "componentInputParameter" in source:
        return arguments[source["componentInputParameter"]]
    if "taskOutputParameter" in source:
        producer = source["taskOutputParameter"]["producerTask"]
        if producer not in runs:  # the KFP driver's words
            raise KeyError(f"input parameter {name}: producerTask task {producer} not found")
        return runs[producer].parameters[source["taskOutputParameter"]["outputParameterKey"]]
    raise NotImplementedError(f"input parameter {name}: {source}")


def executor_input(spec: dict, name: str, run_root: str, arguments: dict, runs: dict[str, TaskRun]) -> dict:
    """The `executorInput` the KFP driver hands task `name` (KFP ExecutorInput as JSON)."""
    task = spec["root"]["dag"]["tasks"][name]
    component = spec["components"][task["componentRef"]["name"]]
    inputs = task.get("inputs", {})
    parameters = {
        key: _parameter_value(key, source, arguments, runs) for key, source in inputs.get("parameters", {}).items()
    }
    artifacts = {}
    for key, source in inputs.get("artifacts", {}).items():
        producer = source["taskOutputArtifact"]["producerTask"]
        if producer not in runs:
            raise KeyError(f"input artifact {key}: producerTask task {producer} not found")
        artifacts[key] = {"artifacts": runs[producer].artifacts[source["taskOutputArtifact"]["outputArtifactKey"]]}
    scratch = os.path.join(run_root, "pods", name)
    outputs = component.get("outputDefinitions", {})
    root, run_id = arguments[_PIPELINE_ROOT], arguments[_RUN_ID]
    pipeline_root = f"{root.rstrip('/')}/{run_id}"
    return {
        "inputs": {"parameterValues": parameters, "artifacts": artifacts},
        "outputs": {
            "artifacts": {
                key: {
                    "artifacts": [
                        {
                            "name": f"{run_id}/{name}/{key}",
                            "type": definition["artifactType"],
                            "uri": f"{pipeline_root}/{name}/{key}",
                            "metadata": {},
                        }
                    ]
                }
                for key, definition in outputs.get("artifacts", {}).items()
            },
            "parameters": {
                key: {"outputFile": os.path.join(scratch, "kfp", "outputs", key)}
                for key in outputs.get("parameters", {})
            },
            "outputFile": os.path.join(scratch, "kfp_outputs", "output_metadata.json"),
        },
    }


def _command(container: dict, invocation: dict) -> list[str]:
    serialized = json.dumps(invocation)
    command = [part.replace("{{$}}", serialized) for part in container["command"] + container.get("args", [])]
    leftover = [part for part in command if "{{$" in part]
    if leftover:
        raise NotImplementedError(f"placeholders this harness does not resolve: {leftover}")
    return command


def _run(name: str, container: dict, invocation: dict, env: dict, log: str, timeout: float) -> None:
    """One container command in a subprocess, its output to `log`; raises with the log's tail."""
    with open(log, "w") as f:
        result = subprocess.run(
            _command(container, invocation), cwd=REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
        )
    if result.returncode:
        with open(log) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"task {name} exited {result.returncode}; log {log}:\n{tail}")


def run_task(
    spec: dict, name: str, run_root: str, arguments: dict, runs: dict[str, TaskRun], timeout: float
) -> TaskRun:
    task = spec["root"]["dag"]["tasks"][name]
    component = spec["components"][task["componentRef"]["name"]]
    executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]
    outputs = component.get("outputDefinitions", {})
    if "resolver" in executor:
        artifacts = {key: [] for key in outputs.get("artifacts", {})}
        return TaskRun(name, {}, artifacts, {}, resolver=True)
    if "container" not in executor:
        raise NotImplementedError(f"task {name}: executor {list(executor)}")
    invocation = executor_input(spec, name, run_root, arguments, runs)
    scratch = os.path.dirname(os.path.dirname(invocation["outputs"]["outputFile"]))
    os.makedirs(scratch, exist_ok=True)
    for listed in invocation["outputs"]["artifacts"].values():  # the launcher's prepareOutputFolders
        for artifact in listed["artifacts"]:
            os.makedirs(os.path.dirname(artifact["uri"]), exist_ok=True)
    log = os.path.join(scratch, "log.txt")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env["PYTHONPATH"] = REPO_ROOT  # the image installs the package; here, the checkout under test
    hook = executor["container"].get("lifecycle", {}).get("preCacheCheck")
    if hook:
        _run(name, hook, invocation, env, os.path.join(scratch, "pre_cache_check_log.txt"), timeout)
        with open(invocation["outputs"]["outputFile"]) as f:
            resolved = json.load(f).get("parameterValues", {})
        os.remove(invocation["outputs"]["outputFile"])
        invocation["inputs"]["parameterValues"].update(resolved)
    _run(name, executor["container"], invocation, env, log, timeout)
    with open(invocation["outputs"]["outputFile"]) as f:
        written = json.load(f)
    artifacts = {}
    for key, listed in invocation["outputs"]["artifacts"].items():
        (planned,) = listed["artifacts"]
        (returned,) = written.get("artifacts", {}).get(key, {"artifacts": [planned]})["artifacts"]
        # The launcher records the artifact with the metadata the executor wrote (splits, span...).
        artifacts[key] = [dict(planned, uri=returned.get("uri", planned["uri"]), metadata=returned.get("metadata", {}))]
    parameters = dict(written.get("parameterValues", {}))
    for key, output in invocation["outputs"]["parameters"].items():
        if key not in parameters and os.path.exists(output["outputFile"]):
            with open(output["outputFile"]) as f:
                parameters[key] = f.read()
    return TaskRun(name, invocation, artifacts, parameters, log=log)


def run_pipeline(
    package: str, run_root: str, arguments: dict | None = None, run_id: str = "run-1", timeout: float = 900
) -> dict[str, TaskRun]:
    """Every task of the compiled package, in DAG order; raises on the first that fails."""
    with open(package) as f:
        spec = yaml.safe_load(f)
    values = {
        key: definition.get("defaultValue")
        for key, definition in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items()
    }
    values.update(arguments or {})
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise ValueError(f"no value for the pipeline's runtime parameters {missing}")
    values.update({_PIPELINE_ROOT: spec["defaultPipelineRoot"], _RUN_ID: run_id})
    runs: dict[str, TaskRun] = {}
    for name in dag_order(spec):
        runs[name] = run_task(spec, name, run_root, values, runs, timeout)
    return runs
