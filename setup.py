"""waferflow: a Keras-first TFX pipeline for wafer-test data.

Installed editable into the project's virtual environment (`make venv`), so the dotted module
paths TFX components are given (`models.preprocessing.preprocessing_fn`, ...) import in every Beam
worker process. Dependencies are pinned in requirements.txt and installed with --no-deps (see README).
"""

from setuptools import find_packages, setup

setup(
    name="waferflow",
    version="0.1.0",
    description="Keras-first TFX pipeline predicting final-test fails of wafer-sort-passing dies",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline*", "components*", "models*", "data*"]),
    entry_points={
        "console_scripts": [
            "waferflow=pipeline.cli:main",
            "waferflow-generate=pipeline.cli:generate_main",
            "waferflow-predict=pipeline.cli:predict_main",
        ]
    },
)
