"""The batch-scoring client (pipeline/predict.py): request building and response parsing in TF
Serving's REST JSON and gRPC (tensorflow-serving-api) formats, real round trips through loopback
servers that answer those formats with the real SavedModel, local scoring of the input files
through the SavedModel, TF Lite and ONNX, and files whose test program differs from the model's.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import threading
import types
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components.onnx_exporter.executor import ONNX_FILE
from components.tflite_exporter.executor import FLOAT32_FILE
from data.program import is_test_feature
from data.readers import PROGRAM_METADATA_KEY
from models import dense_signature, features
from models.scoring import SavedModelScorer, TFLiteScorer, example_columns
from pipeline import predict

MODEL_NAME = "waferflow"


@pytest.fixture(scope="module")
def wafers(served_model) -> list[pd.DataFrame]:
    return list(predict.read_dies(served_model.input_files, served_model.input_format))


@pytest.fixture(scope="module")
def few_dies(wafers) -> pd.DataFrame:
    return wafers[0].iloc[:3]


@pytest.fixture(scope="module")
def columns(served_model) -> tuple[str, ...]:
    """The pushed model's dense column order, as stored with it."""
    return dense_signature.read_columns(served_model.saved_model)


# --------------------------------------------------------------------------------------------
# Request and response formats


def test_rest_url_follows_the_tf_serving_route():
    assert predict.rest_url("http://h:8501/") == "http://h:8501/v1/models/waferflow:predict"
    assert predict.rest_url("http://h:8501", "m", 7) == "http://h:8501/v1/models/m/versions/7:predict"


def test_rest_request_for_serving_default_is_row_format_with_b64_examples(few_dies):
    body = predict.rest_request(few_dies)
    assert set(body) == {"signature_name", "instances"} and body["signature_name"] == "serving_default"
    assert len(body["instances"]) == 3 and all(set(i) == {"b64"} for i in body["instances"])
    example = tf.train.Example.FromString(base64.b64decode(body["instances"][1]["b64"]))
    feature = example.features.feature
    die = few_dies.iloc[1]
    tests = [c for c in few_dies.columns if is_test_feature(c)]
    measured = {t for t in tests if not np.isnan(die[t])}
    # What the model reads: the file's measured tests and the other inputs; no ids, bins or label.
    assert set(feature) == measured | set(features.NON_TEST_INPUTS)
    assert feature["x"].int64_list.value == [die["x"]] and feature["site"].int64_list.value == [die["site"]]
    assert feature["head"].int64_list.value == [die["head"]]
    assert feature[tests[0]].float_list.value == pytest.approx([die[tests[0]]])
    assert json.loads(json.dumps(body)) == body  # plain JSON


def test_rest_request_for_the_dense_signature_is_columnar_format(few_dies, columns):
    body = predict.rest_request(few_dies, dense_signature.DENSE_SIGNATURE, columns)
    assert body["signature_name"] == "serve_dense" and set(body["inputs"]) == {"dies"}
    rows = np.asarray(body["inputs"]["dies"], np.float32)
    assert rows.shape == (3, len(columns))
    np.testing.assert_array_equal(rows[:, columns.index("y")], few_dies["y"].to_numpy())
    test = next(c for c in columns if is_test_feature(c))
    np.testing.assert_array_equal(rows[:, columns.index(test)], few_dies[test].to_numpy(np.float32))
    with pytest.raises(ValueError, match="column order"):  # the order is the model's: it must be given
        predict.rest_request(few_dies, dense_signature.DENSE_SIGNATURE)
    with pytest.raises(ValueError):
        predict.rest_request(few_dies, "classify")


@pytest.mark.parametrize(
    "body, expected",
    [
        ('{"predictions": [[0.25], [0.5]]}', [0.25, 0.5]),  # row format, one output
        ('{"predictions": [{"ft_fail_probability": [0.25], "logit": [1.0]}]}', [0.25]),  # several outputs
        ('{"outputs": [[0.25], [0.5]]}', [0.25, 0.5]),  # columnar, one output
        ('{"outputs": {"ft_fail_probability": [[0.125]], "logit": [[2.0]]}}', [0.125]),
    ],
)
def test_parse_rest_response_formats(body, expected):
    np.testing.assert_allclose(predict.parse_rest_response(json.loads(body)), expected)


def test_parse_rest_response_raises_tf_serving_errors():
    with pytest.raises(predict.ServingError, match="Servable not found"):
        predict.parse_rest_response({"error": "Servable not found for request: Latest(waferflow)"})
    with pytest.raises(predict.ServingError):
        predict.parse_rest_response({"model_version_status": []})


def test_grpc_request_carries_serialized_examples_or_the_dense_matrix(few_dies, columns):
    request = predict.grpc_request(few_dies, "m", 3)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # survives the wire
    assert request.model_spec.name == "m" and request.model_spec.version.value == 3
    assert request.model_spec.signature_name == "serving_default"
    tensor = request.inputs["examples"]
    assert tensor.dtype == tf.string.as_datatype_enum and [d.size for d in tensor.tensor_shape.dim] == [3]
    assert list(tensor.string_val) == dense_signature.raw_examples(few_dies, example_columns(few_dies))
    assert not predict.grpc_request(few_dies).model_spec.HasField("version")

    request = predict.grpc_request(few_dies, signature=dense_signature.DENSE_SIGNATURE, columns=columns)
    dense = request.inputs["dies"]
    assert dense.dtype == tf.float32.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(dense), dense_signature.dense_matrix(few_dies, columns))
    with pytest.raises(ValueError, match="column order"):
        predict.grpc_request(few_dies, signature=dense_signature.DENSE_SIGNATURE)


def test_parse_grpc_response():
    response = predict_pb2.PredictResponse()
    response.outputs[features.PROBABILITY_KEY].CopyFrom(tf.make_tensor_proto(np.array([[0.1], [0.7]], np.float32)))
    response = predict_pb2.PredictResponse.FromString(response.SerializeToString())
    np.testing.assert_allclose(predict.parse_grpc_response(response), [0.1, 0.7])
    with pytest.raises(predict.ServingError):
        predict.parse_grpc_response(predict_pb2.PredictResponse())


# --------------------------------------------------------------------------------------------
# Loopback servers answering TF Serving's APIs with the real SavedModel


def _run_signature(loaded, signature: str, value) -> np.ndarray:
    fn = loaded.signatures[signature]
    (input_name,) = fn.structured_input_signature[1]
    return fn(**{input_name: tf.constant(value)})[features.PROBABILITY_KEY].numpy()


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, loaded):
        self.loaded = loaded

    def Predict(self, request, context):  # noqa: N802 (gRPC API)
        if request.model_spec.name != MODEL_NAME:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {request.model_spec.name}")
        ((name, tensor),) = request.inputs.items()
        values = _run_signature(
            self.loaded, request.model_spec.signature_name or "serving_default", tf.make_ndarray(tensor)
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        response.outputs[features.PROBABILITY_KEY].CopyFrom(tf.make_tensor_proto(values))
        return response


@pytest.fixture(scope="module")
def grpc_server(served_model):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(tf.saved_model.load(served_model.saved_model)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def _decode_b64(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value


def _rest_handler(loaded):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 (http.server API)
            route = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:predict", self.path)
            if not route or route.group(1) != MODEL_NAME:
                return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = body.get("signature_name", "serving_default")
            if "instances" in body:  # row format: one input, so each instance is its value
                values = _run_signature(loaded, signature, _decode_b64(body["instances"]))
                return self._reply(200, {"predictions": values.tolist()})
            (value,) = body["inputs"].values() if isinstance(body["inputs"], dict) else (body["inputs"],)
            values = _run_signature(loaded, signature, np.asarray(_decode_b64(value), np.float32))
            return self._reply(200, {"outputs": values.tolist()})

    return Handler


@pytest.fixture(scope="module")
def rest_server(served_model):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(tf.saved_model.load(served_model.saved_model)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def local_reference(served_model, wafers) -> pd.DataFrame:
    return predict.score(wafers[:2], SavedModelScorer(served_model.saved_model))


@pytest.mark.parametrize("signature", ["serving_default", "serve_dense"])
def test_grpc_round_trip_matches_the_local_saved_model(grpc_server, wafers, local_reference, columns, signature):
    client = predict.GrpcClient(grpc_server, signature=signature, version=1, columns=columns)
    try:
        result = predict.score(wafers[:2], client, batch_size=200)
    finally:
        client.close()
    # A server client without --model-dir knows no operating point: the same dies, no ink column.
    expected = local_reference.drop(columns=["probability", predict.INK_COLUMN], errors="ignore")
    pd.testing.assert_frame_equal(result.drop(columns="probability"), expected)
    np.testing.assert_allclose(result["probability"], local_reference["probability"], atol=1e-6)


def test_grpc_unknown_model_is_an_error(grpc_server, few_dies):
    client = predict.GrpcClient(grpc_server, model_name="other")
    with pytest.raises(grpc.RpcError):
        client(few_dies)
    client.close()


@pytest.mark.parametrize("signature", ["serving_default", "serve_dense"])
def test_rest_round_trip_matches_the_local_saved_model(rest_server, wafers, local_reference, columns, signature):
    client = predict.RestClient(rest_server, signature=signature, columns=columns)
    result = predict.score(wafers[:2], client, batch_size=300)
    np.testing.assert_allclose(result["probability"], local_reference["probability"], atol=1e-6)


def test_rest_unknown_model_is_an_error(rest_server, few_dies):
    with pytest.raises(predict.ServingError, match="Servable not found"):
        predict.RestClient(rest_server, model_name="other")(few_dies)


def test_cli_against_servers_writes_the_same_predictions(served_model, rest_server, grpc_server, tmp_path):
    files = served_model.input_files[:2]
    dense = ["--signature", "serve_dense", "--dense-columns", served_model.saved_model]
    outputs = {}
    for name, target in (
        ("rest", ["--rest", rest_server]),
        ("grpc", ["--grpc", grpc_server]),
        ("rest_dense", ["--rest", rest_server, *dense]),
        ("grpc_dense", ["--grpc", grpc_server, *dense]),
        ("local", ["--model", served_model.saved_model]),
    ):
        out = str(tmp_path / f"{name}.csv")
        assert predict.main([*files, *target, "--batch-size", "100", "--out", out]) == 0
        outputs[name] = pd.read_csv(out)
    for name in ("rest", "grpc", "rest_dense", "grpc_dense"):
        np.testing.assert_allclose(outputs[name]["probability"], outputs["local"]["probability"], atol=1e-6)
    with pytest.raises(ValueError, match="--dense-columns"):  # serve_dense without the model's column order
        predict.main([*files, "--rest", rest_server, "--signature", "serve_dense", "--out", str(tmp_path / "x.csv")])


# --------------------------------------------------------------------------------------------
# Local scoring and the features it builds


def test_cli_scores_every_sort_passing_die_with_each_local_model(served_model, tmp_path):
    pattern = os.path.join(
        os.path.dirname(os.path.dirname(served_model.input_files[0])), "*", f"*.{served_model.input_format}"
    )
    models = {
        "saved_model.csv": served_model.saved_model,
        "tflite.parquet": os.path.join(served_model.tflite_dir, FLOAT32_FILE),
        "onnx.csv": os.path.join(served_model.onnx_dir, ONNX_FILE),
    }
    results = {}
    for out, model in models.items():
        path = str(tmp_path / out)
        predict.main([pattern, "--model", model, "--out", path])
        results[out] = pd.read_parquet(path) if out.endswith(".parquet") else pd.read_csv(path)
    manifest = json.load(open(os.path.join(served_model.config.dataset_dir, "manifest.json")))
    reference = results["saved_model.csv"]
    # The model carries its operating point (chosen on validation): every die gets an ink decision.
    assert list(reference.columns) == [*predict.OUTPUT_COLUMNS, predict.INK_COLUMN]
    assert len(reference) == manifest["sort_pass"]
    assert not reference.duplicated(["lot_id", "wafer_id", "x", "y"]).any()
    assert reference["probability"].between(0, 1).all() and reference["probability"].std() > 0
    for out in ("tflite.parquet", "onnx.csv"):
        assert (results[out]["part_id"].astype(str) == reference["part_id"].astype(str)).all()
        np.testing.assert_allclose(results[out]["probability"], reference["probability"], atol=1e-4)


def test_scored_features_are_the_ingest_features(served_model, wafers):
    """read_dies + raw_examples must build what the ingest wrote: same die, same probability."""
    files = glob.glob(os.path.join(served_model.examples_uri, "Split-test", "*"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    keys = []
    for record in records:
        f = tf.train.Example.FromString(record).features.feature
        keys.append(
            (
                f["lot_id"].bytes_list.value[0].decode(),
                f["wafer_id"].bytes_list.value[0].decode(),
                f["x"].int64_list.value[0],
                f["y"].int64_list.value[0],
            )
        )
    scorer = SavedModelScorer(served_model.saved_model)
    ingested = pd.DataFrame(keys, columns=["lot_id", "wafer_id", "x", "y"])
    ingested["ingest"] = scorer.predict(tf.constant(records))
    scored = predict.score(wafers, scorer)
    joined = ingested.merge(scored, on=["lot_id", "wafer_id", "x", "y"], how="left", validate="one_to_one")
    assert joined["probability"].notna().all()
    np.testing.assert_allclose(joined["probability"], joined["ingest"], atol=1e-6)


def test_input_format_from_extension():
    assert predict.input_format_of(["a/b.parquet", "c.parquet"], None) == "parquet"
    assert predict.input_format_of(["a.stdf"], None) == "stdf"
    # Compressed tester files: the format is the extension under the compression's.
    assert predict.input_format_of(["a/W01.stdf.gz", "a/W02.stdf.bz2", "b/W01.stdf"], None) == "stdf"
    assert predict.input_format_of(["W01.parquet.gz"], None) == "parquet"
    assert predict.input_format_of(["a.bin"], "parquet") == "parquet"
    with pytest.raises(ValueError):
        predict.input_format_of(["a.parquet", "b.stdf"], None)
    with pytest.raises(ValueError):
        predict.input_format_of(["a.stdf.zip"], None)
    with pytest.raises(ValueError):
        predict.input_format_of(["a.stdf"], "csv")


# --------------------------------------------------------------------------------------------
# Files whose test program is not the model's


EXTRA_TEST = "t99999"  # a test number no program of the generator uses


@pytest.fixture(scope="module")
def changed_program(served_model, columns, tmp_path_factory):
    """One input file rewritten as a later program revision would write it: one test the model
    expects removed (column and program), one test the model never saw added. Returns the test
    removed, the changed file and the original file."""
    assert served_model.input_format == "parquet"  # this rewrite is of a columnar file
    original = served_model.input_files[0]
    table = pq.read_table(original)
    dropped = [c for c in columns if is_test_feature(c)][2]
    metadata = dict(table.schema.metadata)
    program = json.loads(metadata[PROGRAM_METADATA_KEY])
    program["tests"] = [t for t in program["tests"] if t["feature"] != dropped]
    program["tests"].append({"number": 99999, "name": "new_iddq_pin_leak", "units": "A", "hi_limit": 1e-6})
    metadata[PROGRAM_METADATA_KEY] = json.dumps(program).encode()
    values = np.random.default_rng(0).normal(5e-7, 1e-7, table.num_rows).astype(np.float32)
    table = table.drop_columns([dropped]).append_column(EXTRA_TEST, pa.array(values))
    path = str(tmp_path_factory.mktemp("changed_program") / os.path.basename(original))
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return types.SimpleNamespace(dropped=dropped, path=path, original=original)


def _score_file(path: str, scorer, change=None) -> pd.DataFrame:
    wafers = predict.read_dies([path], "parquet", predict.model_tests(scorer))
    return predict.score([change(w) if change else w for w in wafers], scorer)


def _with_column(path: str, column: str, value: float, out_dir) -> str:
    """A copy of a Parquet wafer file with one test's readings replaced (before any screen sees them)."""
    table = pq.read_table(path)
    index = table.column_names.index(column)
    table = table.set_column(index, column, pa.array(np.full(table.num_rows, value, np.float32)))
    out = str(out_dir / f"{column}_{value}_{os.path.basename(path)}")
    pq.write_table(table, out)
    return out


@pytest.mark.parametrize("model", ["saved_model", "serve_dense", "tflite"])
def test_a_file_with_another_program_is_mapped_onto_the_model_by_name(served_model, changed_program, model, tmp_path):
    """The extra test is ignored (in the screens too) and counted; the missing one is scored as not
    measured (NaN), the way a die that never reached it is, never as a zero reading."""
    scorer = {
        "saved_model": lambda: SavedModelScorer(served_model.saved_model),
        "serve_dense": lambda: SavedModelScorer(served_model.saved_model, dense_signature.DENSE_SIGNATURE),
        "tflite": lambda: TFLiteScorer(os.path.join(served_model.tflite_dir, FLOAT32_FILE)),
    }[model]()
    dropped = changed_program.dropped
    changed = _score_file(changed_program.path, scorer)
    assert changed.attrs["unknown_tests"] == [EXTRA_TEST]
    assert changed.attrs["missing_tests"] == [dropped]

    not_measured = _score_file(_with_column(changed_program.original, dropped, np.nan, tmp_path), scorer)
    assert not_measured.attrs["unknown_tests"] == [] and not_measured.attrs["missing_tests"] == []
    pd.testing.assert_frame_equal(changed.drop(columns="probability"), not_measured.drop(columns="probability"))
    np.testing.assert_allclose(changed["probability"], not_measured["probability"], atol=1e-6)

    measured = _score_file(changed_program.original, scorer)
    zero = _score_file(_with_column(changed_program.original, dropped, 0.0, tmp_path), scorer)
    assert np.abs(changed["probability"] - measured["probability"]).max() > 1e-4  # the test matters
    assert np.abs(changed["probability"] - zero["probability"]).max() > 1e-4  # and is not read as 0


def test_cli_reports_tests_it_could_not_map(served_model, changed_program, tmp_path, capsys):
    out = str(tmp_path / "p.csv")
    assert predict.main([changed_program.path, "--model", served_model.saved_model, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert f"1 tests in the files the model does not know (ignored): {EXTRA_TEST}" in printed
    assert (
        f"1 tests the model expects that the files lack (scored as not measured): {changed_program.dropped}" in printed
    )


def test_skew_against_the_training_window_flags_drifted_dies(served_model, tmp_path, capsys):
    """`--skew-against` a run's output: the run's own files read no skew (they are the training
    window's population; the largest JS is measured, not zero), files from a process 1.5 sigmas of
    threshold voltage away (span 3 at 0.5 per span, the generator's drift) do."""
    import dataclasses

    from data.writers import write_dataset
    from tests.conftest import SMALL

    def skew_of(pattern: str, name: str) -> dict:
        out = str(tmp_path / name)
        argv = [pattern, "--model", served_model.saved_model, "--out", out]
        assert predict.main([*argv, "--skew-against", served_model.config.output_dir]) == 0
        with open(f"{out}.skew.json") as f:
            return json.load(f)

    own = os.path.join(served_model.config.dataset_dir, "wafers", "*", f"*.{served_model.input_format}")
    same = skew_of(own, "same.csv")
    assert same["scored_dies"] > 0 and len(same["features"]) > 10
    assert not same["skewed_features"] and 0 < same["max_js"] < same["js_bound"], same["features"][:3]
    assert "pre_transform_stats" in same["training_statistics"]

    drifted_dir = str(tmp_path / "drifted")
    write_dataset(dataclasses.replace(SMALL, span=3, drift_per_span=0.5), drifted_dir, served_model.input_format)
    drifted = skew_of(os.path.join(drifted_dir, "wafers", "*", f"*.{served_model.input_format}"), "drifted.csv")
    assert drifted["skewed_features"], drifted["features"][:3]
    assert "skew of" in capsys.readouterr().out
