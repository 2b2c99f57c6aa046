"""The pattern predict client (`waferflow predict-patterns`) on generated STDF files with pattern
labels: the maps it builds are the map ExampleGen's, its probabilities the SavedModel's
serving_default on the ExampleGen's examples; TF Serving's REST and gRPC contracts against a loopback
server that answers with the same SavedModel; bad files named or counted.
"""

from __future__ import annotations

import glob
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from data.patterns import LOT_KEY, MAP_KEY, MAP_SIZE, PATTERN_CLASSES, SIDECAR_PATTERN, WAFER_KEY, read_sidecar
from data.synthetic import GeneratorConfig
from data.wafer_maps import MapGeometryError
from data.writers import write_dataset
from pipeline import cli
from pipeline import predict_patterns as pp
from pipeline.predict import ServingError
from tests.example_gen_harness import run_example_gen
from tests.pattern_serving import train_small_model
from tests.stdf_builder import Stdf

MAPS = GeneratorConfig(lots=3, wafers_per_lot=4, seed=31, patterns=True, maps_only=True, defect_wafer_share=0.7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("pattern_files"))
    write_dataset(MAPS, out, "stdf")
    return out


@pytest.fixture(scope="module")
def stdf_files(dataset) -> list[str]:
    return sorted(glob.glob(os.path.join(dataset, "wafers", "*", "*.stdf")))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return train_small_model(str(tmp_path_factory.mktemp("pattern_model")), seed=3)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return tf.saved_model.load(model_dir)


@pytest.fixture(scope="module")
def map_examples(dataset, tmp_path_factory) -> list[tf.train.Example]:
    """Every split of the map ExampleGen (a real Beam run) over the same files."""
    from components.wafer_map_example_gen import executor

    out = str(tmp_path_factory.mktemp("map_examples"))
    _, splits = run_example_gen(
        executor.Executor,
        dataset,
        out,
        input_format="stdf",
        input_pattern="wafers/*/*.stdf",
        labels_pattern=SIDECAR_PATTERN,
    )
    return [e for split in splits.values() for e in split]


@pytest.fixture(scope="module")
def predictions(stdf_files, model_dir) -> pd.DataFrame:
    read = pp.read_maps(stdf_files, "stdf")
    return pp.classify(read.maps, pp.SavedModelClassifier(model_dir), batch_size=5)


def _key(example: tf.train.Example) -> tuple[str, str]:
    f = example.features.feature
    return f[LOT_KEY].bytes_list.value[0].decode(), f[WAFER_KEY].bytes_list.value[0].decode()


def test_client_probabilities_are_serving_default_on_the_example_gens_examples(
    stdf_files, map_examples, loaded, predictions
):
    read = pp.read_maps(stdf_files, "stdf")
    assert read.wafers_read == MAPS.lots * MAPS.wafers_per_lot == len(predictions) == len(map_examples)
    assert not read.rejected
    by_key = {_key(e): e for e in map_examples}
    # The same maps, bit for bit, as the ExampleGen's.
    for wafer_map in read.maps:
        stored = by_key[(wafer_map.lot_id, wafer_map.wafer_id)].features.feature[MAP_KEY].float_list.value
        np.testing.assert_array_equal(np.asarray(stored, np.float32), wafer_map.image.ravel())
    keys = list(zip(predictions["lot_id"], predictions["wafer_id"], strict=True))
    serialized = tf.constant([by_key[k].SerializeToString() for k in keys])
    out = loaded.signatures["serving_default"](examples=serialized)
    np.testing.assert_allclose(
        predictions[list(pp.PROBABILITY_COLUMNS)].to_numpy(), out["probabilities"].numpy(), atol=1e-6
    )
    expected = [pp.format_patterns(row) for row in out["patterns"].numpy()]
    assert predictions["patterns"].tolist() == expected
    assert set(predictions["product"]) == {by_key[keys[0]].features.feature["product"].bytes_list.value[0].decode()}


def test_the_small_model_finds_the_labelled_patterns(dataset, predictions):
    labels = {}
    for path in glob.glob(os.path.join(dataset, "patterns", "*.csv")):
        labels.update(read_sidecar(path))
    truth = np.array(
        [
            [int(c in labels[(lot, w)]) for c in PATTERN_CLASSES]
            for lot, w in zip(predictions.lot_id, predictions.wafer_id, strict=True)
        ]
    )
    scores = predictions[list(pp.PROBABILITY_COLUMNS)].to_numpy()
    # The labelled (wafer, class) pairs rank above the unlabelled ones: a few seconds of training on
    # 400 generated wafers learn the radial classes (Center, Donut, Edge-Ring) and Random well, the
    # local ones (Loc, Edge-Loc, Scratch) barely.
    assert truth.any() and roc_auc_score(truth.ravel(), scores.ravel()) > 0.8


def test_cli_writes_one_row_per_wafer_and_a_table(stdf_files, dataset, model_dir, predictions, tmp_path, capsys):
    out = tmp_path / "patterns.csv"
    pattern = os.path.join(dataset, "wafers", "*", "*.stdf")
    assert cli.main(["predict-patterns", pattern, "--model", model_dir, "--out", str(out)]) == 0
    written = pd.read_csv(out, dtype={"lot_id": str, "wafer_id": str, "product": str})
    assert tuple(written.columns) == pp.OUTPUT_COLUMNS
    pd.testing.assert_frame_equal(written, predictions, check_dtype=False, atol=1e-6)
    text = capsys.readouterr().out
    assert "Wafer-map patterns (12 wafers)" in text
    assert f"classified 12 of 12 wafers from {len(stdf_files)} stdf files" in text


def _no_geometry_file(tmp_path) -> str:
    stdf = Stdf().mir(lot="NOWCR").wir("W01")
    stdf.die(0, 0, {}).die(1, 0, {}, hard=5).wrr("W01")
    return stdf.write(tmp_path, "nowcr.stdf")


def test_a_file_without_geometry_or_unreadable_fails_naming_it_or_is_counted(stdf_files, model_dir, tmp_path, capsys):
    no_wcr = _no_geometry_file(tmp_path)
    with pytest.raises(MapGeometryError, match="nowcr.stdf"):
        pp.read_maps([*stdf_files, no_wcr], "stdf")
    broken = tmp_path / "broken.stdf"
    broken.write_bytes(b"\x02\x00\x00\x0a\x02" + b"\xff" * 7)
    with pytest.raises(pp.InputFileError, match="broken.stdf"):
        pp.read_maps([stdf_files[0], str(broken)], "stdf")
    read = pp.read_maps([*stdf_files, no_wcr, str(broken)], "stdf", policy="skip")
    assert len(read.maps) == 12 and read.wafers_read == 13
    assert [(r.lot_id, r.wafer_id, os.path.basename(r.file)) for r in read.rejected] == [
        ("", "", "broken.stdf"),
        ("NOWCR", "W01", "nowcr.stdf"),
    ]
    args = ["predict-patterns", *stdf_files, no_wcr, "--model", model_dir, "--out", str(tmp_path / "p.csv")]
    assert cli.main(args) == 1
    assert "nowcr.stdf" in capsys.readouterr().err
    assert cli.main([*args, "--bad-file-policy", "skip", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "classified 12 of 13 wafers" in text and "rejected 1 wafers and 0 unreadable files" in text
    assert len(pd.read_csv(tmp_path / "p.csv")) == 12


def test_a_model_without_serve_map_is_a_clear_error(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: x, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.f})
    with pytest.raises(ValueError, match="no 'serve_map' signature"):
        pp.SavedModelClassifier(str(tmp_path / "m"))


# --------------------------------------------------------------------------------------------
# TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) and gRPC PredictionService


def test_rest_request_is_columnar_with_the_named_map_input():
    maps = np.random.default_rng(0).integers(0, 2, (3, MAP_SIZE, MAP_SIZE, 2)).astype(np.float32)
    body = json.loads(json.dumps(pp.rest_request(maps)))
    assert body["signature_name"] == "serve_map" and list(body["inputs"]) == [MAP_KEY]
    np.testing.assert_array_equal(np.asarray(body["inputs"][MAP_KEY], np.float32), maps)


def test_parse_rest_response_row_and_columnar_formats_and_errors():
    p = np.linspace(0, 1, 16, dtype=np.float32).reshape(2, 8)
    d = (p >= 0.5).astype(np.int64)
    rows = {"predictions": [{"probabilities": p[i].tolist(), "patterns": d[i].tolist()} for i in range(2)]}
    columns = {"outputs": {"probabilities": p.tolist(), "patterns": d.tolist()}}
    for body in (rows, columns):
        probabilities, patterns = pp.parse_rest_response(json.loads(json.dumps(body)), 2)
        np.testing.assert_allclose(probabilities, p)
        np.testing.assert_array_equal(patterns, d)
    with pytest.raises(ServingError, match="Servable not found"):
        pp.parse_rest_response({"error": "Servable not found for request: Latest(x)"}, 2)
    with pytest.raises(ServingError, match="pattern model"):
        pp.parse_rest_response({"predictions": [[0.3], [0.4]]}, 2)  # the die model's bare probabilities
    with pytest.raises(ServingError, match="for 3 maps"):
        pp.parse_rest_response(columns, 3)


def _handler(loaded, model_name: str):
    """TF Serving's REST predict route over the real SavedModel: columnar in, columnar out."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
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
            if not route or route.group(1) != model_name:
                return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fn = loaded.signatures[body["signature_name"]]
            out = fn(**{k: tf.constant(np.asarray(v, np.float32)) for k, v in body["inputs"].items()})
            return self._reply(200, {"outputs": {k: v.numpy().tolist() for k, v in out.items()}})

    return Handler


@pytest.fixture(scope="module")
def rest_server(loaded):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(loaded, pp.DEFAULT_MODEL_NAME))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cli_against_a_rest_server_writes_the_local_models_predictions(rest_server, stdf_files, predictions, tmp_path):
    out = tmp_path / "rest.csv"
    args = ["predict-patterns", *stdf_files, "--server", rest_server, "--out", str(out), "--quiet"]
    assert cli.main([*args, "--batch-size", "5"]) == 0
    written = pd.read_csv(out, dtype={"lot_id": str, "wafer_id": str, "product": str})
    pd.testing.assert_frame_equal(written, predictions, check_dtype=False, atol=1e-6)
    with pytest.raises(ServingError, match="Servable not found"):
        pp.RestClassifier(rest_server, model_name="other").classify(np.zeros((1, MAP_SIZE, MAP_SIZE, 2), np.float32))


def test_grpc_request_and_response(loaded):
    from tensorflow_serving.apis import predict_pb2

    maps = np.random.default_rng(1).integers(0, 2, (2, MAP_SIZE, MAP_SIZE, 2)).astype(np.float32)
    request = pp.grpc_request(maps, "m", 4)
    assert (request.model_spec.name, request.model_spec.signature_name, request.model_spec.version.value) == (
        "m",
        "serve_map",
        4,
    )
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs[MAP_KEY]), maps)
    out = loaded.signatures["serve_map"](**{MAP_KEY: tf.constant(maps)})
    response = predict_pb2.PredictResponse()
    for name, value in out.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    probabilities, patterns = pp.parse_grpc_response(response, 2)
    np.testing.assert_allclose(probabilities, out["probabilities"].numpy())
    np.testing.assert_array_equal(patterns, out["patterns"].numpy())
    del response.outputs["patterns"]
    with pytest.raises(ServingError, match="patterns"):
        pp.parse_grpc_response(response, 2)
