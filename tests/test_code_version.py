"""The models package's source fingerprint, which keeps TFX from serving edited model code from its cache."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import models
from pipeline.code_version import CODE_VERSION_KEY, models_code_version, source_fingerprint
from pipeline.config import PatternRunConfig, RunConfig
from pipeline.pattern_pipeline import create_pattern_pipeline
from pipeline.pipeline import create_pipeline

MODELS_DIR = os.path.dirname(os.path.abspath(models.__file__))


@pytest.fixture
def package(tmp_path) -> str:
    copy = str(tmp_path / "models")
    shutil.copytree(MODELS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_same_sources_anywhere_give_the_same_fingerprint(package):
    assert source_fingerprint(package) == models_code_version()
    # Bytecode and other files beside the sources do not count.
    os.makedirs(os.path.join(package, "__pycache__"), exist_ok=True)
    with open(os.path.join(package, "__pycache__", "model.cpython-311.pyc"), "wb") as f:
        f.write(b"\0" * 10)
    with open(os.path.join(package, "notes.txt"), "w") as f:
        f.write("not code")
    assert source_fingerprint(package) == models_code_version()


def test_an_edited_added_or_renamed_source_changes_the_fingerprint(package):
    before = source_fingerprint(package)
    path = os.path.join(package, "model.py")
    with open(path, "a") as f:
        f.write("\n# an edit\n")
    edited = source_fingerprint(package)
    assert edited != before
    os.rename(path, os.path.join(package, "model2.py"))
    assert source_fingerprint(package) not in (before, edited)
    with open(os.path.join(package, "extra.py"), "w") as f:
        f.write("")
    assert len({before, edited, source_fingerprint(package)}) == 3


def _components(pipeline) -> dict:
    return {c.id: c for c in pipeline.components}


def test_both_pipelines_put_the_fingerprint_where_tfx_calls_model_code_by_name(tmp_path):
    roots = dict(
        pipeline_root=str(tmp_path / "root"),
        data_root=str(tmp_path / "data"),
        serving_model_dir=str(tmp_path / "serving"),
        metadata_connection_config=None,
        beam_pipeline_args=[],
    )
    version = models_code_version()
    main = _components(create_pipeline(RunConfig(), **roots))
    for node in ("Tuner", "Trainer"):
        assert json.loads(main[node].exec_properties["custom_config"])[CODE_VERSION_KEY] == version
    # The Transform's custom_config is made at run time by TransformConfig, from this parameter.
    assert main["TransformConfig"].exec_properties["code_version"] == version
    patterns = _components(create_pattern_pipeline(PatternRunConfig(enable_tuning=True), **roots))
    for node in ("Transform", "Tuner", "Trainer"):
        assert json.loads(patterns[node].exec_properties["custom_config"])[CODE_VERSION_KEY] == version
