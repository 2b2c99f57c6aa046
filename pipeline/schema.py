"""The curated schema: keep the first run's inferred schema with the project, reviewed, and validate
every later span against it (`--schema-file`, ImportSchemaGen in pipeline/pipeline.py).

    waferflow schema --output-dir output --out schema/schema.pbtxt [--pipeline-name waferflow]

writes the newest SchemaGen schema of a local run, with the changes a reviewer would make anyway:
the identifiers (lot, wafer, part) lose the value lists TFDV infers for them, because every new
span brings lots that no schema can list, and the features the ingest derives (wafer context,
screens, coordinates, probe slot) lose inferred domains, which describe one day's sample, not the
feature: a screen's fail count seen as 0 and 1 on day 1 is inferred boolean, and day 2's 3 would be
an anomaly. Everything else (features, types, presence, the test program's measurements, the
label's domain) is kept as inferred, for review.
"""

from __future__ import annotations

import argparse
import os
import sys

import tfx  # noqa: F401 (first: see components/drift_check/executor.py)

# isort: split
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features
from pipeline.metadata import read_only_store

SCHEMA_FILE = "schema.pbtxt"


def latest_inferred_schema_uri(metadata_path: str, pipeline_name: str) -> str:
    """The newest SchemaGen output of `pipeline_name` in a local run's MLMD."""
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no run metadata at {metadata_path}: run the pipeline first (waferflow run)")
    store = read_only_store(metadata_path)
    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.SchemaGen")
    schemas = [a for a in store.get_artifacts_by_context(context.id)] if context is not None else []
    if not schemas:
        raise FileNotFoundError(
            f"pipeline {pipeline_name!r} in {metadata_path} has no inferred schema (a run with --schema-file "
            "imports one instead of inferring it)"
        )
    return max(schemas, key=lambda a: (a.create_time_since_epoch, a.id)).uri


def curate(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """A copy of `schema` whose identifiers and ingest-derived features accept any value of their type."""
    curated = schema_pb2.Schema.FromString(schema.SerializeToString())
    ids = set(features.ID_FEATURES) | set(features.NON_TEST_INPUTS)
    for feature in curated.feature:
        if feature.name in ids:
            for domain in ("domain", "string_domain", "bool_domain", "int_domain", "float_domain"):
                feature.ClearField(domain)
    kept = [d for d in curated.string_domain if d.name not in ids]
    del curated.string_domain[:]
    curated.string_domain.extend(kept)
    return curated


def export_schema(metadata_path: str, pipeline_name: str, out: str) -> str:
    """Write the curated copy of the newest inferred schema to `out`; return `out`."""
    schema = tfdv.load_schema_text(os.path.join(latest_inferred_schema_uri(metadata_path, pipeline_name), SCHEMA_FILE))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tfdv.write_schema_text(curate(schema), out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, each with its help and default (also `waferflow schema`'s, pipeline/cli.py)."""
    parser.add_argument("--output-dir", default="output", help="the run's output directory (default: %(default)s)")
    parser.add_argument("--pipeline-name", default="waferflow", help="which pipeline's schema (default: %(default)s)")
    parser.add_argument(
        "--out", default=os.path.join("schema", SCHEMA_FILE), help="where to write it (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> str:
    metadata_path = os.path.join(args.output_dir, "metadata", f"{args.pipeline_name}.sqlite")
    path = export_schema(metadata_path, args.pipeline_name, args.out)
    print(f"wrote {path}: review it, keep it with the project, and run with --schema-file {path}")
    return path


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
