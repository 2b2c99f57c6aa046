"""The serving deployment files (pipeline/deploy/, Dockerfile): well-formed and consistent.

They cannot be run here (no Docker engine, no cluster); these checks parse them with the real
schemas and tools: models.config as a tensorflow.serving ModelServerConfig, the compose file and
Kubernetes manifest as YAML that serve that config, the Dockerfile with hadolint.
"""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from pipeline.config import RunConfig
from pipeline.predict import DEFAULT_MODEL_NAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "pipeline", "deploy")


def _read(*parts: str) -> str:
    with open(os.path.join(*parts)) as f:
        return f.read()


def _model_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_models_config_serves_the_pushed_model_base_dir():
    (model,) = _model_config(_read(DEPLOY, "models.config")).model_config_list.config
    assert model.name == DEFAULT_MODEL_NAME == RunConfig().pipeline_name
    assert model.base_path == f"/models/{DEFAULT_MODEL_NAME}" and model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1


def test_compose_mounts_the_pusher_output_and_the_config():
    (service,) = yaml.safe_load(_read(DEPLOY, "docker-compose.yaml"))["services"].values()
    assert service["image"].startswith("tensorflow/serving:")
    assert "--model_config_file=/models/models.config" in service["command"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    pushed = os.path.relpath(RunConfig().serving_model_dir, "pipeline/deploy")  # compose paths are relative to it
    assert os.path.normpath(mounts["/models/waferflow"]) == os.path.normpath(pushed)
    assert mounts["/models/models.config"] == "./models.config"
    assert {p.split(":")[0] for p in service["ports"]} == {"8500", "8501"}


def test_kubernetes_manifest_serves_the_same_config_and_image():
    docs = {d["kind"]: d for d in yaml.safe_load_all(_read(DEPLOY, "kubernetes.yaml"))}
    assert set(docs) == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    config = docs["ConfigMap"]["data"]["models.config"]
    assert _model_config(config) == _model_config(_read(DEPLOY, "models.config"))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    compose = yaml.safe_load(_read(DEPLOY, "docker-compose.yaml"))["services"]["tf-serving"]
    assert container["image"] == compose["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/models/waferflow"] == "models" and "--model_config_file=/config/models.config" in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {8500, 8501}


def test_dockerfile_installs_with_the_makefile_runs_non_root_and_passes_hadolint():
    dockerfile = _read(ROOT, "Dockerfile")
    assert "make venv" in dockerfile  # the Makefile's install step, not a copy of it
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    hadolint = os.path.join(os.path.dirname(sys.executable), "hadolint")
    result = subprocess.run([hadolint, os.path.join(ROOT, "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
