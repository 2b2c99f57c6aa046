"""TransformConfig: the Transform's custom_config, made at run time from the ingest's output.

The Transform builds its features from the test program the ingest learned
(models/preprocessing.py), which exists only once the ExampleGen has run, so its custom_config
cannot be written when the pipeline is compiled. This step runs after the ExampleGen and emits
the config as a String artifact: `{"program_dir": <the Examples artifact's directory>,
"guard_band": ...}`; the Transform takes it through `outputs["config"].future()[0].value`, the one
form of run-time exec property both the local orchestrator and the Kubeflow V2 compiler accept
(a concatenation of `ph.input(...).uri` with strings compiles locally, not for Kubeflow).
"""

import json
from typing import TypedDict

from tfx import v1 as tfx

from models import preprocessing
from pipeline.code_version import CODE_VERSION_KEY


class _Outputs(TypedDict):
    config: str


# No `from __future__ import annotations` here: TFX reads these annotations as types.
@tfx.dsl.components.component
def TransformConfig(  # noqa: N802 (TFX component names are classes)
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    guard_band: tfx.dsl.components.Parameter[float],
    limit_features: tfx.dsl.components.Parameter[int],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> _Outputs:
    """custom_config for models.preprocessing.preprocessing_fn, naming the learned program.
    `code_version` (pipeline/code_version.py) only goes into the config: a changed preprocessing
    source is then a changed Transform setting, not a cache hit."""
    return {"config": config_json(examples.uri, guard_band, bool(limit_features), code_version)}


def config_json(program_dir: str, guard_band: float, limit_features: bool = True, code_version: str = "") -> str:
    return json.dumps(
        {
            preprocessing.PROGRAM_DIR_KEY: program_dir,
            preprocessing.GUARD_BAND_KEY: float(guard_band),
            preprocessing.LIMIT_FEATURES_KEY: bool(limit_features),
            CODE_VERSION_KEY: code_version,
        },
        sort_keys=True,
    )
