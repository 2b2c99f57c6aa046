"""Score wafer-test files: `waferflow-predict` (or `python -m pipeline.predict`).

Reads dies from the pipeline's input files exactly as the ingest does (the format's reader, last
test of a die wins, wafer context from the whole wafer, sort-passing dies only: sort fails never
reach final test), scores them in batches and writes lot_id, wafer_id, x, y, part_id, probability
as CSV or Parquet (by the output's extension), and `ink` (probability >= the threshold) when the
model carries an operating point (models/operating_point.py). `--ink-maps DIR` also writes one ink
map per wafer for the assembly house, as text and CSV (see `render_ink_map`).

    # a TF Serving endpoint, REST (:8501) or gRPC (:8500); see pipeline/deploy/
    python -m pipeline.predict 'output/data/WF7N/wafers/*/*.stdf' --rest http://localhost:8501 --out p.csv
    python -m pipeline.predict 'output/data/WF7N/wafers/*/*.stdf' --grpc localhost:8500 --out p.parquet
    # no server: a SavedModel directory, a .tflite or an .onnx file
    python -m pipeline.predict 'output/data/WF7N/wafers/*/*.stdf' --model output/serving_model/waferflow/17 --out p.csv

Against a server, `--signature serving_default` (default) sends serialized tf.Examples;
`--signature serve_dense` sends the dense float matrix (models/dense_signature.py). A server does not
say what threshold its model was exported with: `--model-dir` (the pushed SavedModel directory)
gives the column order and the operating point; without it there is no ink column.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from data import fs
from data.program import is_test_feature
from data.readers import READERS, format_of_path
from data.wafers import assemble_lot
from models import dense_signature, features
from models.operating_point import OperatingPoint
from models.operating_point import find as find_operating_point
from models.scoring import SERVING_DEFAULT, Scorer, example_columns, load_scorer

OUTPUT_COLUMNS = ("lot_id", "wafer_id", "x", "y", "part_id", "probability")
INK_COLUMN = "ink"  # added after OUTPUT_COLUMNS when the model has an operating point
SIGNATURES = (SERVING_DEFAULT, dense_signature.DENSE_SIGNATURE)
DEFAULT_MODEL_NAME = "waferflow"


class ServingError(RuntimeError):
    """TF Serving answered with an error."""


# ---------------------------------------------------------------------------------------------
# Reading dies


def input_format_of(paths: list[str], input_format: str | None) -> str:
    """The reader to use: as given, or from the files' extension (.parquet, .stdf)."""
    if input_format:
        if input_format not in READERS:
            raise ValueError(f"unknown input format {input_format!r}; choose from {sorted(READERS)}")
        return input_format
    formats = set()
    for path in paths:
        try:
            formats.add(format_of_path(path))  # .stdf, .stdf.gz, .stdf.bz2, .parquet, ...
        except ValueError:
            formats.add(None)
    if len(formats) == 1 and None not in formats:
        return formats.pop()
    raise ValueError(
        f"cannot tell one input format from the file names ({sorted(map(str, formats))}): pass --input-format"
    )


@dataclasses.dataclass
class WaferDies:
    """One wafer as the predict client reads it."""

    lot_id: str
    wafer_id: str
    dies: pd.DataFrame  # every die, sort fails included: the wafer's extent and its fails, for ink maps
    passed: pd.DataFrame  # the sort-passing dies, with context and screens: what gets scored
    product: str = ""  # MIR PART_TYP of the wafer's newest file that names one; "" if none does


def read_wafers(
    paths: Iterable[str], input_format: str, known_tests: Iterable[str] | None = None
) -> Iterator[WaferDies]:
    """Every wafer in the files, lot by lot in lot and wafer order: all its dies and the ones that
    passed sort.

    The ingest's own per-lot code (data/wafers.py): every read of a wafer across the files in
    test-time order, the last test of a die wins, context and screens from the whole wafer (fails
    included) and ZPAT from the lot's wafers among the files given; `passed` then drops the dies
    that failed sort by their file's good bins.
    """
    reader = READERS[input_format]
    reads = defaultdict(list)
    for path in sorted(paths):
        for wafer in reader(path):
            reads[wafer.lot_id].append(wafer)
    for lot in sorted(reads):
        for wafer in assemble_lot(reads[lot], known_tests=known_tests):
            named = [r for r in reads[lot] if r.wafer_id == wafer.wafer_id and r.program]
            named = [r for r in named if r.program.revision.get("PART_TYP")]
            newest = max(named, key=lambda r: (r.start_time, r.source)) if named else None
            product = str(newest.program.revision["PART_TYP"]) if newest else ""
            yield WaferDies(wafer.lot_id, wafer.wafer_id, wafer.dies, wafer.passed, product)


def read_dies(
    paths: Iterable[str], input_format: str, known_tests: Iterable[str] | None = None
) -> Iterator[pd.DataFrame]:
    """One DataFrame per wafer: its sort-passing dies with the wafer context and screen features
    (`read_wafers`' `passed`)."""
    for wafer in read_wafers(paths, input_format, known_tests):
        yield wafer.passed


# ---------------------------------------------------------------------------------------------
# TF Serving REST API (https://www.tensorflow.org/tfx/serving/api_rest)


def rest_url(base_url: str, model_name: str = DEFAULT_MODEL_NAME, version: int | None = None) -> str:
    """POST target: {base}/v1/models/{name}[/versions/{version}]:predict"""
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version is not None else "")
    return base_url.rstrip("/") + path + ":predict"


def rest_request(dies: pd.DataFrame, signature: str = SERVING_DEFAULT, columns: tuple[str, ...] = ()) -> dict:
    """The JSON body of a predict request.

    serving_default (one input, `examples`, a string tensor): row format, one instance per die,
    the serialized tf.Example base64-encoded as {"b64": ...}.
    serve_dense (one input, `dies`): columnar format, {"inputs": {"dies": [[floats in the model's
    `columns` order], ...]}}; an unmeasured test is NaN (TF Serving's JSON parser accepts NaN).
    """
    if signature == SERVING_DEFAULT:
        records = dense_signature.raw_examples(dies, example_columns(dies))
        instances = [{"b64": base64.b64encode(r).decode("ascii")} for r in records]
        return {"signature_name": signature, "instances": instances}
    if signature == dense_signature.DENSE_SIGNATURE:
        matrix = dense_signature.dense_matrix(dies, _need_columns(columns))
        return {"signature_name": signature, "inputs": {dense_signature.DENSE_INPUT: matrix.tolist()}}
    raise ValueError(f"signature must be one of {SIGNATURES}")


def _need_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    if not columns:
        raise ValueError(
            "serve_dense needs the model's column order: pass --dense-columns (the SavedModel "
            "directory, or its assets/dense_columns.json)"
        )
    return columns


def parse_rest_response(body: dict) -> np.ndarray:
    """Probabilities [n] from a predict response, row ("predictions") or columnar ("outputs").

    With a single output TF Serving returns the values bare ([[p], ...]); with several, each row is
    an object ({"ft_fail_probability": [p], ...}) or `outputs` is an object keyed by output name.
    """
    if "error" in body:
        raise ServingError(body["error"])
    if "predictions" in body:
        rows = body["predictions"]
        values = [row[features.PROBABILITY_KEY] if isinstance(row, dict) else row for row in rows]
    elif "outputs" in body:
        outputs = body["outputs"]
        values = outputs[features.PROBABILITY_KEY] if isinstance(outputs, dict) else outputs
    else:
        raise ServingError(f"not a predict response: keys {sorted(body)}")
    return np.asarray(values, np.float32).reshape(-1)


class RestClient(Scorer):
    """Scores through TF Serving's REST API."""

    def __init__(
        self,
        base_url: str,
        model_name: str = DEFAULT_MODEL_NAME,
        version: int | None = None,
        signature: str = SERVING_DEFAULT,
        timeout_s: float = 60.0,
        columns: tuple[str, ...] = (),
        operating_point: OperatingPoint | None = None,
    ):
        import requests  # imported here: only the REST client needs it

        self.columns, self.operating_point = columns, operating_point
        self.url = rest_url(base_url, model_name, version)
        self.signature, self.timeout_s = signature, timeout_s
        self._session = requests.Session()
        self.name = f"TF Serving REST {self.url}"

    def prepare(self, dies: pd.DataFrame) -> dict:
        return rest_request(dies, self.signature, self.columns)

    def predict(self, prepared: dict) -> np.ndarray:
        response = self._session.post(
            self.url, data=json.dumps(prepared), timeout=self.timeout_s, headers={"Content-Type": "application/json"}
        )
        try:
            body = response.json()
        except ValueError as error:
            raise ServingError(f"HTTP {response.status_code} from {self.url}: {response.text[:200]}") from error
        if response.status_code != 200 and "error" not in body:
            raise ServingError(f"HTTP {response.status_code} from {self.url}: {body}")
        return parse_rest_response(body)


# ---------------------------------------------------------------------------------------------
# TF Serving gRPC API (tensorflow_serving.apis.PredictionService/Predict)


def grpc_request(
    dies: pd.DataFrame,
    model_name: str = DEFAULT_MODEL_NAME,
    version: int | None = None,
    signature: str = SERVING_DEFAULT,
    columns: tuple[str, ...] = (),
):
    """A PredictRequest: `examples` DT_STRING [n] of serialized tf.Examples (serving_default) or
    `dies` DT_FLOAT [n, len(columns)] (serve_dense)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if signature == SERVING_DEFAULT:
        records = dense_signature.raw_examples(dies, example_columns(dies))
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(records, dtype=tf.string, shape=[len(records)]))
    elif signature == dense_signature.DENSE_SIGNATURE:
        matrix = dense_signature.dense_matrix(dies, _need_columns(columns))
        request.inputs[dense_signature.DENSE_INPUT].CopyFrom(tf.make_tensor_proto(matrix, dtype=tf.float32))
    else:
        raise ValueError(f"signature must be one of {SIGNATURES}")
    return request


def parse_grpc_response(response) -> np.ndarray:
    """Probabilities [n] from a PredictResponse."""
    import tensorflow as tf

    if features.PROBABILITY_KEY not in response.outputs:
        raise ServingError(f"response has no {features.PROBABILITY_KEY!r} output: {sorted(response.outputs)}")
    return tf.make_ndarray(response.outputs[features.PROBABILITY_KEY]).astype(np.float32).reshape(-1)


class GrpcClient(Scorer):
    """Scores through TF Serving's gRPC PredictionService."""

    def __init__(
        self,
        target: str,
        model_name: str = DEFAULT_MODEL_NAME,
        version: int | None = None,
        signature: str = SERVING_DEFAULT,
        timeout_s: float = 60.0,
        columns: tuple[str, ...] = (),
        operating_point: OperatingPoint | None = None,
    ):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model_name, self.version, self.signature, self.timeout_s = model_name, version, signature, timeout_s
        self.columns, self.operating_point = columns, operating_point
        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.name = f"TF Serving gRPC {target}"

    def prepare(self, dies: pd.DataFrame):
        return grpc_request(dies, self.model_name, self.version, self.signature, self.columns)

    def predict(self, prepared) -> np.ndarray:
        return parse_grpc_response(self._stub.Predict(prepared, timeout=self.timeout_s))

    def close(self) -> None:
        self._channel.close()


# ---------------------------------------------------------------------------------------------
# Batch scoring


def score(wafers: Iterable[pd.DataFrame], scorer: Scorer, batch_size: int = 512) -> pd.DataFrame:
    """Score dies in batches of `batch_size`; one output row per die, and the `ink` decision
    (probability >= threshold) when the scorer has an operating point."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    frames = [w for w in wafers if len(w)]
    dies = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(OUTPUT_COLUMNS[:-1]))
    probabilities = np.zeros(len(dies), np.float32)
    for start in range(0, len(dies), batch_size):
        batch = dies.iloc[start : start + batch_size]
        result = scorer(batch)
        if result.shape != (len(batch),):
            raise ServingError(f"{scorer.name} returned {result.shape[0]} predictions for {len(batch)} dies")
        probabilities[start : start + len(batch)] = result
    out = dies[list(OUTPUT_COLUMNS[:-1])].copy()
    out["probability"] = probabilities
    if scorer.operating_point is not None:
        out[INK_COLUMN] = scorer.operating_point.ink(probabilities)
    out = out.reset_index(drop=True)
    # Tests the files have that the model does not know (ignored) and tests the model expects that
    # the files lack (scored as not measured, never as zero): counted, and printed by `main`.
    if scorer.columns:
        mapping = dense_signature.map_columns(dies, scorer.columns)
        out.attrs["unknown_tests"], out.attrs["missing_tests"] = mapping.unknown_tests, mapping.missing_tests
    return out


def write_predictions(predictions: pd.DataFrame, path: str) -> None:
    """CSV, or Parquet if the path ends in .parquet; local or gs:// (through data/fs.py)."""
    if not fs.has_scheme(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buffer = io.BytesIO()
    if path.endswith(".parquet"):
        predictions.to_parquet(buffer, index=False)
    else:
        predictions.to_csv(buffer, index=False)
    fs.write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Ink maps: what the assembly house picks by

NO_DIE, GOOD, INKED, SORT_FAIL = ".", "1", "X", "F"
LEGEND = (
    (NO_DIE, "no die (outside the wafer / not tested)"),
    (GOOD, "passed sort, not inked (good)"),
    (INKED, "inked (passed sort, final-test fail risk at or above the threshold)"),
    (SORT_FAIL, "failed sort"),
)


def ink_codes(dies: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
    """x, y, code of every die of one wafer, in map order (rows from the largest y down, each from
    the smallest x): F for a sort fail, else X if `scored` inks it, else 1.

    `dies` is the wafer's full die table (x, y, sort_pass); `scored` its sort-passing dies with the
    `ink` decision (x, y, ink), each exactly once.
    """
    merged = dies[["x", "y", "sort_pass"]].merge(
        scored[["x", "y", INK_COLUMN]], on=["x", "y"], how="outer", validate="one_to_one", indicator=True
    )
    passed = merged["sort_pass"].eq(True).to_numpy()  # a die only `scored` has: not a passing die
    stray = merged[(merged["_merge"] == "right_only") | ((merged["_merge"] == "both") & ~passed)]
    unscored = merged[(merged["_merge"] == "left_only") & passed]
    if len(stray) or len(unscored):
        raise ValueError(
            f"scored dies do not match the wafer's sort-passing dies: {len(stray)} scored that are not "
            f"(e.g. {stray[['x', 'y']].head(3).to_dict('records')}), {len(unscored)} not scored "
            f"(e.g. {unscored[['x', 'y']].head(3).to_dict('records')})"
        )
    inked = merged[INK_COLUMN].eq(True).to_numpy()
    code = np.where(~passed, SORT_FAIL, np.where(inked, INKED, GOOD))
    out = pd.DataFrame({"x": merged["x"].astype(np.int64), "y": merged["y"].astype(np.int64), "code": code})
    return out.sort_values(["y", "x"], ascending=[False, True], ignore_index=True)


def _ascii(value: object) -> str:
    """Printable ASCII, anything else as '?': a header line stays one line and any reader reads it."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(value))


def ink_map_grid(codes: pd.DataFrame) -> list[str]:
    """The map's rows, top (largest y) to bottom, one character per position from the smallest x to
    the largest, over the extent of the wafer's dies; `.` where there is no die."""
    if codes.empty:
        return []
    x0, x1, y0, y1 = codes["x"].min(), codes["x"].max(), codes["y"].min(), codes["y"].max()
    grid = np.full((y1 - y0 + 1, x1 - x0 + 1), NO_DIE)
    grid[y1 - codes["y"].to_numpy(), codes["x"].to_numpy() - x0] = codes["code"].to_numpy()
    return ["".join(row) for row in grid]


def ink_map_counts(codes: pd.DataFrame) -> dict[str, int]:
    """How many positions of the map hold each code (NO_DIE: the rest of the grid)."""
    rows = ink_map_grid(codes)
    return {code: sum(row.count(code) for row in rows) for code, _ in LEGEND}


def render_ink_map(
    codes: pd.DataFrame, lot_id: str, wafer_id: str, operating_point: OperatingPoint, product: str = ""
) -> str:
    """One wafer's ink map as plain ASCII text: `KEY: value` header lines, the legend, then `MAP:`
    and the grid (`ink_map_grid`), one line per row.

    TOP_ROW_Y and LEFT_COLUMN_X place the grid: row r, column c is the die at x = LEFT_COLUMN_X + c,
    y = TOP_ROW_Y - r.
    """
    rows = ink_map_grid(codes)
    counts = ink_map_counts(codes)
    op = operating_point
    header = {
        "LOT": lot_id,
        "WAFER": wafer_id,
        "PRODUCT": product or "unknown",
        "THRESHOLD": repr(float(op.threshold)),
        "INK_RULE": "final-test fail probability >= THRESHOLD",
        "ESCAPE_COST": f"{op.escape_cost:g}",
        "OVERKILL_COST": f"{op.overkill_cost:g}",
        "ROWS": len(rows),
        "COLUMNS": len(rows[0]) if rows else 0,
        "TOP_ROW_Y": int(codes["y"].max()) if rows else "",
        "LEFT_COLUMN_X": int(codes["x"].min()) if rows else "",
        "DIES": len(codes),
        "GOOD(1)": counts[GOOD],
        "INKED(X)": counts[INKED],
        "SORT_FAIL(F)": counts[SORT_FAIL],
        "NO_DIE(.)": counts[NO_DIE],
    }
    lines = [f"{key}: {_ascii(value)}".rstrip() for key, value in header.items()]
    lines += [f"LEGEND: {code} {meaning}" for code, meaning in LEGEND]
    lines += ["MAP:", *rows]
    return "\n".join(lines) + "\n"


def ink_map_csv(codes: pd.DataFrame) -> str:
    """x, y, code of every die (positions without a die are not rows), in map order."""
    return codes[["x", "y", "code"]].to_csv(index=False, lineterminator="\n")


def _file_stem(lot_id: str, wafer_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{lot_id}_{wafer_id}")


def write_ink_maps(
    directory: str, wafers: Iterable[WaferDies], predictions: pd.DataFrame, operating_point: OperatingPoint
) -> list[str]:
    """`<lot>_<wafer>.txt` (`render_ink_map`) and `.csv` (`ink_map_csv`) for each wafer, local or
    gs://; returns the paths written. `wafers` need only lot_id, wafer_id, product and dies' x, y,
    sort_pass; `predictions` is `score`'s output with its ink column."""
    if INK_COLUMN not in predictions:
        raise ValueError("ink maps need the ink decision: the predictions have no ink column")
    if not fs.has_scheme(directory):
        os.makedirs(directory, exist_ok=True)
    ids = predictions[["lot_id", "wafer_id"]].astype(str)
    groups = ids.groupby(["lot_id", "wafer_id"], sort=False).groups
    scored = {key: predictions.loc[rows] for key, rows in groups.items()}
    paths, stems = [], set()
    for wafer in wafers:
        stem = _file_stem(wafer.lot_id, wafer.wafer_id)
        if stem in stems:
            raise ValueError(f"two wafers would write the same ink map {stem!r}")
        stems.add(stem)
        mine = scored.get((str(wafer.lot_id), str(wafer.wafer_id)), predictions.iloc[:0])
        codes = ink_codes(wafer.dies, mine)
        text = render_ink_map(codes, wafer.lot_id, wafer.wafer_id, operating_point, wafer.product)
        for suffix, content in ((".txt", text), (".csv", ink_map_csv(codes))):
            path = os.path.join(directory, stem + suffix)
            fs.write_bytes(path, content.encode("ascii"))
            paths.append(path)
    return paths


def make_scorer(args: argparse.Namespace) -> Scorer:
    if args.model:
        return load_scorer(args.model, args.signature)
    columns = dense_signature.read_columns(args.dense_columns) if args.dense_columns else ()
    op = find_operating_point(args.dense_columns) if args.dense_columns else None
    if args.rest:
        return RestClient(args.rest, args.model_name, args.model_version, args.signature, args.timeout, columns, op)
    return GrpcClient(args.grpc, args.model_name, args.model_version, args.signature, args.timeout, columns, op)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, each with its help and default (also `waferflow predict`'s, pipeline/cli.py)."""
    parser.add_argument("inputs", nargs="+", help="tester files or glob patterns (quote them); required")
    parser.add_argument(
        "--input-format", choices=sorted(READERS), help="reader for the files (default: from the file extension)"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--model", help="local model: SavedModel directory, .tflite or .onnx file (required: this, --rest or --grpc)"
    )
    target.add_argument(
        "--rest", help="TF Serving REST base URL, e.g. http://localhost:8501 (required: this, --model or --grpc)"
    )
    target.add_argument(
        "--grpc", help="TF Serving gRPC target, e.g. localhost:8500 (required: this, --model or --rest)"
    )
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="TF Serving model name (default: %(default)s)")
    parser.add_argument("--model-version", type=int, help="TF Serving model version (default: the latest)")
    parser.add_argument(
        "--signature",
        choices=SIGNATURES,
        default=SERVING_DEFAULT,
        help="server or SavedModel signature; TF Lite and ONNX are always dense (default: %(default)s)",
    )
    parser.add_argument(
        "--model-dir",
        "--dense-columns",
        dest="dense_columns",
        help="with --rest/--grpc: the pushed SavedModel directory (or its assets/dense_columns.json) whose "
        "dense column order and operating point to use; needed for --signature serve_dense and for the ink "
        "decision, used to report unmapped tests (default: none, so no ink column from a server)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=512, help="dies per request / model call (default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per server request (default: %(default)s)")
    parser.add_argument("--out", required=True, help="predictions file: .csv or .parquet, by extension; required")
    parser.add_argument(
        "--skew-against",
        metavar="PATH",
        help="also measure training-serving skew of the scored dies' tests (TFDV Jensen-Shannon) against the "
        "training data: a run's output directory (its newest training window), a statistics artifact "
        "directory or a FeatureStats.pb; writes <out>.skew.json (default: no skew measured)",
    )
    parser.add_argument(
        "--pipeline-name",
        default="waferflow",
        help="with --skew-against a run's output directory: which pipeline (default: %(default)s)",
    )
    parser.add_argument(
        "--skew-bound",
        type=float,
        default=0.2,  # the drift check's bound (components/drift_check/executor.py), not imported: no TFX here
        help="Jensen-Shannon divergence a test of the scored dies may reach (default: %(default)s)",
    )
    parser.add_argument(
        "--ink-maps",
        metavar="DIR",
        help="also write each wafer's ink map, <lot>_<wafer>.txt and .csv, into DIR (needs the model's "
        "operating point; default: none written)",
    )


def model_tests(scorer: Scorer) -> list[str] | None:
    """The tests a model knows (its stored column order), for `read_wafers`; None if unknown (a server
    without --model-dir): then the screens use every test of the files."""
    return [c for c in scorer.columns if is_test_feature(c)] if scorer.columns else None


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(sys.argv[1:] if argv is None else argv))


def run(args: argparse.Namespace) -> int:
    """Score the files parsed options name and write the predictions (and ink maps); 0 when done."""
    paths = sorted({p for pattern in args.inputs for p in (fs.glob(pattern) or [pattern])})
    missing = [p for p in paths if not fs.exists(p)]
    if missing:
        raise FileNotFoundError(f"no such input files: {missing}")
    input_format = input_format_of(paths, args.input_format)
    scorer = make_scorer(args)
    op = scorer.operating_point
    where = args.model or args.dense_columns
    no_op = (
        f"no operating point stored with {where}"
        if where
        else "a server does not say its model's operating point: pass --model-dir (the pushed SavedModel directory)"
    )
    if args.ink_maps and op is None:
        raise ValueError(f"--ink-maps needs the model's operating point: {no_op}")
    # Ink maps need every die's position and sort result, not only the scored dies: keep those.
    kept: list[WaferDies] = []
    scored_tests: list[pd.DataFrame] = []  # for --skew-against

    def passing() -> Iterator[pd.DataFrame]:
        for wafer in read_wafers(paths, input_format, model_tests(scorer)):
            if args.ink_maps:
                positions = wafer.dies[["x", "y", "sort_pass"]]
                kept.append(dataclasses.replace(wafer, dies=positions, passed=wafer.passed[["x", "y"]]))
            if args.skew_against:
                scored_tests.append(wafer.passed[[c for c in wafer.passed.columns if is_test_feature(c)]])
            yield wafer.passed

    predictions = score(passing(), scorer, args.batch_size)
    write_predictions(predictions, args.out)
    print(
        f"scored {len(predictions)} sort-passing dies from {len(paths)} {input_format} files "
        f"with {scorer.name}: {args.out}"
    )
    if op is None:
        print(f"  no ink column: {no_op}")
    else:
        inked = int(predictions[INK_COLUMN].sum())
        print(
            f"  inked {inked} of {len(predictions)} dies: probability >= {op.threshold:.6g} "
            f"(escape:overkill cost {op.escape_cost:g}:{op.overkill_cost:g})"
        )
    if args.skew_against:
        from pipeline import skew  # TFX and TFDV: only when asked for

        record = skew.scored_skew(pd.concat(scored_tests), args.skew_against, args.pipeline_name, args.skew_bound)
        with open(f"{args.out}.skew.json", "w") as f:
            json.dump(record, f, indent=1)
        print("  " + skew.format_skew(record) + f" ({args.out}.skew.json)")
    if args.ink_maps:
        written = write_ink_maps(args.ink_maps, kept, predictions, op)
        print(f"  ink maps of {len(kept)} wafers: {args.ink_maps} ({len(written)} files)")
    for key, what in (
        ("unknown_tests", "tests in the files the model does not know (ignored)"),
        ("missing_tests", "tests the model expects that the files lack (scored as not measured)"),
    ):
        found = predictions.attrs.get(key) or []
        if found:
            print(f"  {len(found)} {what}: {', '.join(found[:20])}{' ...' if len(found) > 20 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
