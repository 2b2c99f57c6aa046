"""The fingerprint of the model code TFX calls by name, for its cache.

The Transform, the Tuner and the Trainer take `preprocessing_fn`, `tuner_fn` and `run_fn` as import
paths into the installed `models` package, not as a `module_file`. TFX fingerprints a module file
(it packages it into a wheel whose name carries a hash) but not a path it imports, so an edited
model or preprocessing function kept hitting the cache: same inputs, same settings, the old
execution's outputs. Both pipelines put this fingerprint of the `models` package's sources into
those components' custom_config: a changed source is a changed setting, and the component runs.
Unchanged sources give the same fingerprint wherever the package is installed, so a re-run is
still all cache hits. Other code (the custom components under components/, and the Evaluator's
metric module) is not covered: after changing it, run with `--no-enable-cache`.
"""

from __future__ import annotations

import hashlib
import os

import models

CODE_VERSION_KEY = "code_version"


def source_fingerprint(package_dir: str) -> str:
    """sha256 (16 hex digits) over the package's .py files: each one's path inside the package and
    its bytes, in sorted order; `__pycache__` and other files are left out."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                source = f.read()
            relative = os.path.relpath(path, package_dir).replace(os.sep, "/")
            digest.update(f"{relative}\0{len(source)}\0".encode())
            digest.update(source)
    return digest.hexdigest()[:16]


def models_code_version() -> str:
    """The fingerprint of the `models` package this process imports."""
    return source_fingerprint(os.path.dirname(os.path.abspath(models.__file__)))
