"""Classify wafer maps' defect patterns: `waferflow predict-patterns`.

Reads tester files with the die client's readers (data/readers.py; STDF, Parquet, ...), builds each
wafer's fixed map exactly as the map ExampleGen does (data/wafer_maps.py `wafer_map_of`: every read of
the wafer across the files, the last test of a die wins, the geometry of its newest file), and sends
the maps to the pattern model's `serve_map` signature: a local SavedModel (`--model`) or TF Serving
(`--server`, REST, or `--grpc`). Writes one CSV row per wafer: lot_id, wafer_id, product, one
probability column per class (`p_<class>`), and `patterns`, the classes the model's own thresholds
select joined by ";" (or "none"); and prints a table.

    waferflow predict-patterns 'data/wafers/*/*.stdf' --model output/serving_model/patterns/17 --out p.csv
    waferflow predict-patterns 'data/wafers/*/*.stdf' --server http://localhost:8501 --out p.csv

Every wafer read is a row out or a rejection, counted and listed: a file whose WCR gives no wafer or
die size cannot place a map. By default such a file (or one that cannot be read) fails the run naming
it; `--bad-file-policy skip` rejects its wafers (or the file) and goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd

from data import fs
from data.patterns import MAP_KEY, NONE_CLASS, PATTERN_CLASSES, SIDECAR_SEPARATOR
from data.readers import READERS, WaferRead
from data.wafer_maps import DEFAULT_EDGE_EXCLUSION_MM, MapGeometryError, WaferMap, wafer_map_of
from pipeline.predict import ServingError, input_format_of, rest_url, write_predictions

MAP_SIGNATURE = "serve_map"  # models/pattern_trainer.py: raw float32 maps in, probabilities and patterns out
PROBABILITIES_KEY = "probabilities"  # models/pattern_trainer.py PROBABILITIES_KEY (not imported: TFX there)
PATTERNS_KEY = "patterns"
DEFAULT_MODEL_NAME = "waferflow_patterns"
PROBABILITY_COLUMNS = tuple(f"p_{name}" for name in PATTERN_CLASSES)
OUTPUT_COLUMNS = ("lot_id", "wafer_id", "product", *PROBABILITY_COLUMNS, "patterns")
BAD_FILE_POLICIES = ("fail", "skip")


class InputFileError(ValueError):
    """A tester file that cannot be read: names the file and the reader."""


@dataclasses.dataclass
class Rejection:
    """A wafer (or a whole file, wafer_id "") that gave no row, and why."""

    file: str
    reason: str
    lot_id: str = ""
    wafer_id: str = ""


@dataclasses.dataclass
class MapsRead:
    """The maps of the files' wafers, and what was rejected: wafers_read = len(maps) + wafer rejections."""

    maps: list[WaferMap]
    rejected: list[Rejection]
    files: int

    @property
    def wafers_read(self) -> int:
        return len(self.maps) + sum(1 for r in self.rejected if r.wafer_id)


def read_maps(
    paths: Iterable[str],
    input_format: str,
    policy: str = "fail",
    edge_exclusion_mm: float = DEFAULT_EDGE_EXCLUSION_MM,
) -> MapsRead:
    """Each wafer's fixed map, in lot and wafer order (see the module docstring).

    policy "fail": InputFileError / MapGeometryError naming the file; "skip": the file (unreadable)
    or the wafer (no geometry) is a Rejection."""
    if policy not in BAD_FILE_POLICIES:
        raise ValueError(f"bad_file_policy must be one of {BAD_FILE_POLICIES}, got {policy!r}")
    reader = READERS[input_format]
    reads: dict[tuple[str, str], list[WaferRead]] = defaultdict(list)
    rejected: list[Rejection] = []
    paths = sorted(paths)
    for path in paths:
        try:
            file_reads = list(reader(path))
        except Exception as error:  # any reader failure: a corrupt, truncated or foreign file
            message = f"{path}: cannot read as {input_format} ({type(error).__name__}: {error})"
            if policy == "fail":
                raise InputFileError(message) from error
            rejected.append(Rejection(path, message))
            continue
        for read in file_reads:
            reads[(read.lot_id, read.wafer_id)].append(read)
    maps = []
    for key in sorted(reads):
        try:
            maps.append(wafer_map_of(reads[key], edge_exclusion_mm))
        except MapGeometryError as error:
            if policy == "fail":
                raise
            newest = max(reads[key], key=lambda r: (r.start_time, r.source))
            rejected.append(Rejection(newest.source, str(error), *key))
    return MapsRead(maps, rejected, len(paths))


# ---------------------------------------------------------------------------------------------
# Classifiers: maps [n, H, W, C] -> (probabilities [n, 8], patterns [n, 8] multi-hot)


class MapClassifier:
    name = "model"

    def classify(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release a connection; nothing to release by default."""


class SavedModelClassifier(MapClassifier):
    """The SavedModel's `serve_map` signature, in process."""

    def __init__(self, path: str):
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(path)
        except (OSError, ValueError) as error:
            raise ValueError(f"--model {path}: not a SavedModel ({error})") from error
        if MAP_SIGNATURE not in loaded.signatures:
            raise ValueError(
                f"--model {path}: no {MAP_SIGNATURE!r} signature (has {sorted(loaded.signatures)}): "
                "is it a pattern model?"
            )
        self._loaded, self._fn = loaded, loaded.signatures[MAP_SIGNATURE]
        self.name = f"SavedModel {path}"

    def classify(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        out = self._fn(**{MAP_KEY: tf.constant(maps, tf.float32)})
        return out[PROBABILITIES_KEY].numpy(), out[PATTERNS_KEY].numpy()


def rest_request(maps: np.ndarray) -> dict:
    """The JSON body of a predict request to `serve_map`: columnar format, the one input by name,
    {"signature_name": "serve_map", "inputs": {"wafer_map": [n x H x W x C floats]}}."""
    return {"signature_name": MAP_SIGNATURE, "inputs": {MAP_KEY: np.asarray(maps, np.float32).tolist()}}


def parse_rest_response(body: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, patterns) from a predict response with the two outputs: row format
    ({"predictions": [{"probabilities": [...], "patterns": [...]}, ...]}) or columnar
    ({"outputs": {"probabilities": [[...], ...], "patterns": [[...], ...]}})."""
    if "error" in body:
        raise ServingError(body["error"])
    if "predictions" in body:
        rows = body["predictions"]
        if not all(isinstance(r, dict) and PROBABILITIES_KEY in r and PATTERNS_KEY in r for r in rows):
            raise ServingError(
                f"predictions rows lack {PROBABILITIES_KEY!r} / {PATTERNS_KEY!r}: is it a pattern model?"
            )
        probabilities = [r[PROBABILITIES_KEY] for r in rows]
        patterns = [r[PATTERNS_KEY] for r in rows]
    elif "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict) or PROBABILITIES_KEY not in outputs or PATTERNS_KEY not in outputs:
            raise ServingError(f"outputs lack {PROBABILITIES_KEY!r} / {PATTERNS_KEY!r}: is it a pattern model?")
        probabilities, patterns = outputs[PROBABILITIES_KEY], outputs[PATTERNS_KEY]
    else:
        raise ServingError(f"not a predict response: keys {sorted(body)}")
    return _checked(np.asarray(probabilities, np.float32), np.asarray(patterns, np.int64), n)


def _checked(probabilities: np.ndarray, patterns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    shape = (n, len(PATTERN_CLASSES))
    if probabilities.shape != shape or patterns.shape != shape:
        raise ServingError(
            f"expected {shape} probabilities and patterns for {n} maps, got {probabilities.shape} and {patterns.shape}"
        )
    return probabilities, patterns


class RestClassifier(MapClassifier):
    """TF Serving's REST API (the die client's URL and error handling, pipeline/predict.py)."""

    def __init__(self, base_url: str, model_name: str = DEFAULT_MODEL_NAME, version: int | None = None, timeout_s=60.0):
        import requests  # only the REST client needs it

        self.url, self.timeout_s = rest_url(base_url, model_name, version), timeout_s
        self._session = requests.Session()
        self.name = f"TF Serving REST {self.url}"

    def classify(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        response = self._session.post(
            self.url,
            data=json.dumps(rest_request(maps)),
            timeout=self.timeout_s,
            headers={"Content-Type": "application/json"},
        )
        try:
            body = response.json()
        except ValueError as error:
            raise ServingError(f"HTTP {response.status_code} from {self.url}: {response.text[:200]}") from error
        if response.status_code != 200 and "error" not in body:
            raise ServingError(f"HTTP {response.status_code} from {self.url}: {body}")
        return parse_rest_response(body, len(maps))

    def close(self) -> None:
        self._session.close()


def grpc_request(maps: np.ndarray, model_name: str = DEFAULT_MODEL_NAME, version: int | None = None):
    """A PredictRequest for `serve_map`: `wafer_map` DT_FLOAT [n, H, W, C]."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = MAP_SIGNATURE
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[MAP_KEY].CopyFrom(tf.make_tensor_proto(np.asarray(maps, np.float32), dtype=tf.float32))
    return request


def parse_grpc_response(response, n: int) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    missing = {PROBABILITIES_KEY, PATTERNS_KEY} - set(response.outputs)
    if missing:
        raise ServingError(f"response lacks output(s) {sorted(missing)}: has {sorted(response.outputs)}")
    probabilities = tf.make_ndarray(response.outputs[PROBABILITIES_KEY]).astype(np.float32)
    return _checked(probabilities, tf.make_ndarray(response.outputs[PATTERNS_KEY]).astype(np.int64), n)


class GrpcClassifier(MapClassifier):
    """TF Serving's gRPC PredictionService."""

    def __init__(self, target: str, model_name: str = DEFAULT_MODEL_NAME, version: int | None = None, timeout_s=60.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model_name, self.version, self.timeout_s = model_name, version, timeout_s
        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.name = f"TF Serving gRPC {target}"

    def classify(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = grpc_request(maps, self.model_name, self.version)
        return parse_grpc_response(self._stub.Predict(request, timeout=self.timeout_s), len(maps))

    def close(self) -> None:
        self._channel.close()


# ---------------------------------------------------------------------------------------------
# Classifying and output


def format_patterns(multi_hot: np.ndarray) -> str:
    """A wafer's predicted classes joined by ";" in PATTERN_CLASSES order, or "none"."""
    names = [name for name, on in zip(PATTERN_CLASSES, multi_hot, strict=True) if on]
    return SIDECAR_SEPARATOR.join(names) or NONE_CLASS


def classify(maps: list[WaferMap], classifier: MapClassifier, batch_size: int = 256) -> pd.DataFrame:
    """One row per map (OUTPUT_COLUMNS), in the maps' order, classified in batches."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    probabilities = np.zeros((len(maps), len(PATTERN_CLASSES)), np.float32)
    patterns = np.zeros((len(maps), len(PATTERN_CLASSES)), np.int64)
    for start in range(0, len(maps), batch_size):
        batch = np.stack([m.image for m in maps[start : start + batch_size]])
        p, d = classifier.classify(batch)
        if p.shape != (len(batch), len(PATTERN_CLASSES)):
            raise ServingError(f"{classifier.name} returned probabilities of shape {p.shape} for {len(batch)} maps")
        probabilities[start : start + len(batch)], patterns[start : start + len(batch)] = p, d
    out = pd.DataFrame(
        {
            "lot_id": [m.lot_id for m in maps],
            "wafer_id": [m.wafer_id for m in maps],
            "product": [m.product for m in maps],
        }
    )
    for i, column in enumerate(PROBABILITY_COLUMNS):
        out[column] = probabilities[:, i]
    out["patterns"] = [format_patterns(row) for row in patterns]
    return out


def print_table(predictions: pd.DataFrame, rows: int = 40, console=None) -> None:
    """The predictions as a rich table: each wafer's patterns and its most probable class."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Wafer-map patterns ({len(predictions)} wafers)")
    for column in ("lot", "wafer", "product", "patterns", "most probable"):
        table.add_column(column)
    shown = predictions.head(rows)
    probabilities = shown[list(PROBABILITY_COLUMNS)].to_numpy()
    for (_, row), p in zip(shown.iterrows(), probabilities, strict=True):
        top = int(np.argmax(p))
        table.add_row(
            row.lot_id, row.wafer_id, row["product"] or "-", row.patterns, f"{PATTERN_CLASSES[top]} {p[top]:.2f}"
        )
    console.print(table)
    if len(predictions) > rows:
        console.print(f"... {len(predictions) - rows} more wafers in the CSV")
    counts = predictions["patterns"].str.split(SIDECAR_SEPARATOR).explode().value_counts()
    console.print("wafers per predicted class: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def make_classifier(args: argparse.Namespace) -> MapClassifier:
    if args.model:
        return SavedModelClassifier(args.model)
    if args.server:
        return RestClassifier(args.server, args.model_name, args.model_version, args.timeout)
    return GrpcClassifier(args.grpc, args.model_name, args.model_version, args.timeout)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`waferflow predict-patterns`' options (pipeline/cli.py)."""
    parser.add_argument("inputs", nargs="+", help="tester files or glob patterns (quote them); required")
    parser.add_argument(
        "--input-format", choices=sorted(READERS), help="reader for the files (default: from the file extension)"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="the pattern model's SavedModel directory (required: this, --server or --grpc)")
    target.add_argument(
        "--server", help="TF Serving REST base URL, e.g. http://localhost:8501 (required: this, --model or --grpc)"
    )
    target.add_argument(
        "--grpc", help="TF Serving gRPC target, e.g. localhost:8500 (required: this, --model or --server)"
    )
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="TF Serving model name (default: %(default)s)")
    parser.add_argument("--model-version", type=int, help="TF Serving model version (default: the latest)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per server request (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="maps per model call (default: %(default)s)")
    parser.add_argument(
        "--edge-exclusion-mm",
        type=float,
        default=DEFAULT_EDGE_EXCLUSION_MM,
        help="edge exclusion of the die grid, as the map ExampleGen's (default: %(default)s)",
    )
    parser.add_argument(
        "--bad-file-policy",
        choices=BAD_FILE_POLICIES,
        default="fail",
        help="a file that cannot be read or has no wafer geometry: fail naming it, or skip it and report its "
        "wafers as rejected (default: %(default)s)",
    )
    parser.add_argument("--out", required=True, help="predictions CSV (or .parquet); required")
    parser.add_argument("--quiet", action="store_true", help="no table on the console (default: off)")


def run(args: argparse.Namespace) -> int:
    """Classify the files' wafers and write the predictions; 0 when done."""
    paths = sorted({p for pattern in args.inputs for p in (fs.glob(pattern) or [pattern])})
    missing = [p for p in paths if not fs.exists(p)]
    if missing:
        raise FileNotFoundError(f"no such input files: {missing}")
    input_format = input_format_of(paths, args.input_format)
    classifier = make_classifier(args)
    try:
        read = read_maps(paths, input_format, args.bad_file_policy, args.edge_exclusion_mm)
        predictions = classify(read.maps, classifier, args.batch_size)
    finally:
        classifier.close()
    write_predictions(predictions, args.out)
    if not args.quiet:
        print_table(predictions)
    wafer_rejections = [r for r in read.rejected if r.wafer_id]
    file_rejections = [r for r in read.rejected if not r.wafer_id]
    print(
        f"classified {len(predictions)} of {read.wafers_read} wafers from {read.files} {input_format} files "
        f"with {classifier.name}: {args.out}"
    )
    if read.rejected:
        print(f"  rejected {len(wafer_rejections)} wafers and {len(file_rejections)} unreadable files:")
        for r in read.rejected:
            print(f"    {r.lot_id + ' ' + r.wafer_id + ': ' if r.wafer_id else ''}{r.reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
