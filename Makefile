# waferflow: `make run` runs the pipeline on synthetic data, `make test` runs the tests.
# Both create (or reuse) .venv and install the pinned environment first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv run test lint generate clean

venv: $(STAMP)

# --no-deps: the TFX 1.21 stack on Python 3.11 needs ml-metadata 1.17.1 and tfdv 1.16.1, which
# violate tfx's own pins, so pip's resolver must not run; requirements.txt is the complete,
# verified set (see README, "Environment").
$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: venv
	$(PY) -m pipeline.local_runner $(ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

generate: venv
	$(PY) -m data.generate --out output/data $(ARGS)

clean:
	rm -rf output
