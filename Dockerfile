# syntax=docker/dockerfile:1
# The waferflow pipeline image: the pinned environment of `make run`, installed by the Makefile's
# own `make venv` (so the image and a checkout cannot drift apart), run as a non-root user.
# Not built on the development machines (no Docker engine there); `make lint-docker` lints it.
#
#   docker build -t waferflow .
#   docker run --rm -v "$PWD/output:/app/output" waferflow                   # make run
#   docker run --rm waferflow make test
#   docker run --rm -v "$PWD/output:/app/output" waferflow \
#       waferflow-predict 'output/data/wafers/*/*.stdf' --grpc host.docker.internal:8500 --out output/p.csv
FROM python:3.11.7-slim-bookworm

# make runs the shared install step; every pinned package is a cp311 wheel or pure Python, so no compiler.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin waferflow \
    && mkdir /app && chown waferflow:waferflow /app
USER 10001:10001
WORKDIR /app

# What `make venv` reads: the pins, setup.py and the packages installed editable. The pip cache
# mount keeps a rebuild after a source change from downloading the 3.5 GB environment again.
COPY --chown=waferflow:waferflow Makefile requirements.txt setup.py ./
COPY --chown=waferflow:waferflow components ./components
COPY --chown=waferflow:waferflow data ./data
COPY --chown=waferflow:waferflow models ./models
COPY --chown=waferflow:waferflow pipeline ./pipeline
RUN --mount=type=cache,target=/home/waferflow/.cache/pip,uid=10001,gid=10001 \
    make venv PYTHON=/usr/local/bin/python3.11

# Tests, benchmarks and docs: not needed to run the pipeline, needed for `make test`.
COPY --chown=waferflow:waferflow . .

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1
CMD ["make", "run"]
