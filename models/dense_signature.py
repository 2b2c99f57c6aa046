"""The dense-input serving signature: one float32 matrix of raw die features in, probability out.

`serving_default` parses serialized tf.Examples (ParseExampleV2) and runs the tf.Transform graph,
whose vocabulary lookup (string hash tables) and sparse handling are not TF Lite builtins and do
not convert to ONNX. `serve_dense` takes the same raw features as one matrix and re-expresses the
Transform (models/preprocessing.py) with the analyzer outputs of the Transform graph and the
program's limits baked in as constants, using only ops that TF Lite builtins and ONNX have
(compare, select, min / max, log, subtract, divide, sum, sqrt):

    dies: float32 [batch, len(columns)], columns in the model's own order (`dense_columns`):
          every parametric test of the learned program the model was trained on (program order:
          test number, then pin), the wafer context, x, y, head, site. A test that was not
          measured is NaN; head and site are numbers.
    ->    {'ft_fail_probability': float32 [batch, 1]}

The column order is stored with the model (`assets/dense_columns.json` in the SavedModel, and
`dense_columns.json` beside the TF Lite and ONNX files), so a client maps any file of that program
onto it by name. The re-expression is checked against the TFT layer itself at export time
(`check_against_transform`), so a change in preprocessing_fn that it does not follow fails the
Trainer instead of exporting a model that scores differently from `serving_default`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.coders import example_coder

from data.program import TestDef, TestProgram
from models import features, preprocessing

DENSE_SIGNATURE = "serve_dense"
DENSE_INPUT = "dies"
COLUMNS_FILE = "dense_columns.json"

_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")


def dense_columns(program: TestProgram, raw_feature_spec: dict) -> tuple[str, ...]:
    """The dense input's columns for a model: the program's tests the Transform saw, then the other
    inputs it saw (a screen without a value on any training die is not one), head and site."""
    tests = [t.feature for t in program.tests if t.feature in raw_feature_spec]
    others = [k for k in features.Z_SCORED if k in raw_feature_spec]
    return (*tests, *others, *features.SLOT)


def write_columns(columns: Sequence[str], directory: str) -> str:
    """`dense_columns.json` in `directory` (beside a .tflite / .onnx file); returns its path."""
    path = os.path.join(directory, COLUMNS_FILE)
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(list(columns), f)
    return path


def read_columns(model_path: str) -> tuple[str, ...]:
    """The dense column order stored with a model: a SavedModel directory (its assets), or a .tflite /
    .onnx file (the `dense_columns.json` beside it)."""
    if tf.io.gfile.isdir(model_path):
        candidates = [os.path.join(model_path, "assets", COLUMNS_FILE), os.path.join(model_path, COLUMNS_FILE)]
    else:
        candidates = [os.path.join(os.path.dirname(model_path), COLUMNS_FILE)]
    for path in candidates:
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                return tuple(json.load(f))
    raise FileNotFoundError(f"no {COLUMNS_FILE} stored with {model_path} (looked at {candidates})")


@dataclasses.dataclass
class ColumnMapping:
    """How a frame of dies maps onto a model's columns: tests the model does not know (ignored,
    counted) and tests it expects that the frame lacks (missing: NaN, never zero)."""

    unknown_tests: list[str]
    missing_tests: list[str]


def map_columns(frame: pd.DataFrame, columns: Sequence[str]) -> ColumnMapping:
    from data.program import is_test_feature

    present = {c for c in frame.columns if is_test_feature(c)}
    expected = {c for c in columns if is_test_feature(c)}
    return ColumnMapping(sorted(present - expected), sorted(expected - present))


def dense_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Dies (one row each, raw columns as the readers produce them) -> the `dies` input matrix.

    A test column the frame lacks (the file's program has no such test, or no die reached it) is all
    NaN, like a test that was not measured; a missing head is head 1 (single-head probers); every
    other model input must be present.
    """
    from data.program import is_test_feature

    out = []
    for name in columns:
        if name in frame.columns:
            out.append(pd.to_numeric(frame[name], errors="raise").to_numpy(np.float32))
        elif is_test_feature(name):
            out.append(np.full(len(frame), np.nan, np.float32))
        elif name == features.HEAD_KEY:
            out.append(np.ones(len(frame), np.float32))
        else:
            raise KeyError(f"dies lack the model input {name!r}")
    return np.stack(out, axis=1) if out else np.zeros((len(frame), 0), np.float32)


def dense_matrix_from_examples(serialized: Iterable[bytes], columns: Sequence[str], batch: int = 8192) -> np.ndarray:
    """Serialized tf.Examples (as the ingest writes them) -> the `dies` input matrix.

    A feature absent from an example (a test not measured) becomes NaN. Decoded in batches by
    tfx-bsl's C++ example decoder into Arrow lists (the first value of each), not one
    tf.train.Example at a time in Python.
    """
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    records = list(serialized)
    parts = []
    for start in range(0, len(records), batch):
        decoded = decoder.DecodeBatch(records[start : start + batch])
        part = np.full((decoded.num_rows, len(columns)), np.nan, np.float32)
        for i, name in enumerate(columns):
            index = decoded.schema.get_field_index(name)
            if index < 0:
                continue
            lists = decoded.column(index)
            if lists.null_count == len(lists):  # a kind-less feature: absent from every example
                continue
            offsets = lists.offsets.to_numpy()
            values = lists.values.to_numpy(zero_copy_only=False).astype(np.float32)
            has = np.diff(offsets) > 0
            part[has, i] = values[offsets[:-1][has]]
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros((0, len(columns)), np.float32)


@dataclasses.dataclass(frozen=True)
class TransformConstants:
    """What the dense path needs from the Transform: its analyzer outputs, the program, the grid."""

    columns: tuple[str, ...]
    tests: tuple[TestDef, ...]  # the program's tests among `columns`, same order
    median: tuple[float, ...]  # per test, on its feature scale (log for log-scale tests)
    scale: tuple[float, ...]  # per test: IQR / 1.349, 1 where the IQR is 0
    z_scored: tuple[str, ...]  # the z-scored raw inputs among `columns` (features.Z_SCORED)
    mean: tuple[float, ...]  # per z_scored feature, over the values present in the training split
    variance: tuple[float, ...]
    slot_vocabulary: tuple[float, ...]  # probe slots (head * SLOT_BASE + site) in vocabulary-id order
    centre: tuple[float, float]  # die grid centre and radius scale (data/program.py `Grid`)
    radius_scale: tuple[float, float]
    guard_band: float
    limit_features: bool = True  # margins and per-die summaries among the Transform's outputs

    @classmethod
    def from_transform_output(
        cls, tf_transform_output: tft.TFTransformOutput, guard_band: float = features.DEFAULT_GUARD_BAND
    ) -> TransformConstants:
        program = preprocessing.program_from_transform_output(tf_transform_output)
        raw_spec = tf_transform_output.raw_feature_spec()
        columns = dense_columns(program, raw_spec)
        tests = tuple(t for t in program.tests if t.feature in columns)
        z_scored = tuple(k for k in features.Z_SCORED if k in columns)
        stats, quartiles = _analyzer_outputs(tf_transform_output, z_scored, [t.feature for t in tests])
        missing = [k for k in z_scored if k not in stats] + [t.feature for t in tests if t.feature not in quartiles]
        if missing:
            raise ValueError(f"the Transform graph has no statistics for {missing}")
        vocabulary = tf_transform_output.vocabulary_by_name(features.vocabulary_name(features.SLOT_FEATURE))
        try:
            slots = tuple(float(v) for v in vocabulary)
        except ValueError as error:
            raise ValueError(f"slot vocabulary is not numeric, a dense input cannot carry it: {error}") from error
        scales = []
        for t in tests:
            q1, _, q3 = quartiles[t.feature]
            scale = (q3 - q1) / preprocessing.IQR_TO_SIGMA
            scales.append(scale if scale > 0 else 1.0)
        grid = program.grid
        return cls(
            columns=columns,
            tests=tests,
            median=tuple(quartiles[t.feature][1] for t in tests),
            scale=tuple(scales),
            z_scored=z_scored,
            mean=tuple(stats[k][0] for k in z_scored),
            variance=tuple(stats[k][1] for k in z_scored),
            slot_vocabulary=slots,
            centre=grid.centre() if grid else (0.0, 0.0),
            radius_scale=grid.radius_scale() if grid else (0.0, 0.0),
            guard_band=guard_band,
            limit_features=features.transformed_name(features.MIN_MARGIN)
            in tf_transform_output.transformed_feature_spec(),
        )


def _analyzer_outputs(
    tf_transform_output: tft.TFTransformOutput, z_scored: Sequence[str], tests: Sequence[str]
) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float, float]]]:
    """({raw feature: (mean, variance)} of the z-scored outputs, {test: (q25, median, q75)}).

    After analysis the transform function takes each analyzer's result as a captured constant.
    models/preprocessing.py runs one quantiles analyzer over the matrix of all tests (a captured
    [n_tests, 3] constant, row i the quartiles of test i) and one elementwise z-score analyzer over
    the matrix of the z-scored features (a captured mean and a captured variance, each
    [n_z_scored]). The mean and the variance have the same shape; they are told apart by use: the
    z-score takes the square root of the variance and subtracts the mean, possibly through a
    gather by column (the sparse input). TFT has no public accessor for analyzer values;
    `check_against_transform` guards this reading.
    """
    signature = tf.saved_model.load(tf_transform_output.transform_savedmodel_dir).signatures["serving_default"]
    graph = signature.graph
    calls = [op for op in graph.get_operations() if op.type in _CALL_OPS]
    if len(calls) != 1:
        raise ValueError(f"expected one function call in the transform signature, found {len(calls)}")
    (call,) = calls
    body_name = call.get_attr("f").name
    body = next(f for f in graph.as_graph_def().library.function if f.signature.name == body_name)

    captured = {t.ref(): v for t, v in zip(graph.internal_captures, signature.captured_inputs, strict=True)}
    matrices, vectors = {}, {}
    for arg, tensor in zip(body.signature.input_arg, call.inputs, strict=True):
        value = captured.get(tensor.ref())
        if value is None or value.dtype != tf.float32:
            continue
        if tests and value.shape == (len(tests), 3):
            matrices[arg.name] = value.numpy()
        elif z_scored and value.shape == (len(z_scored),):
            vectors[arg.name] = value.numpy()

    nodes = {n.name: n for n in body.node_def}

    def producer(endpoint: str) -> str:
        return endpoint.lstrip("^").split(":")[0]

    def captured_vector(endpoint: str) -> str | None:
        """The captured vector an op input reads, through gathers, reshapes and identities."""
        name = producer(endpoint)
        while name not in vectors:
            node = nodes.get(name)
            if node is None or node.op not in _PASS_THROUGH_OPS:
                return None
            name = producer(node.input[0])
        return name

    means, variances = set(), set()
    for node in body.node_def:
        if node.op == "Sub" and (arg := captured_vector(node.input[1])):
            means.add(arg)
        if node.op == "Sqrt" and (arg := captured_vector(node.input[0])):
            variances.add(arg)
    stats, quartiles = {}, {}
    if z_scored:
        if len(means) != 1 or len(variances) != 1 or means == variances:
            raise ValueError(
                f"expected one z-score mean and one variance vector of {len(z_scored)}, found {means} and {variances}"
            )
        mean, variance = vectors[means.pop()], vectors[variances.pop()]
        stats = {k: (float(mean[i]), float(variance[i])) for i, k in enumerate(z_scored)}
    if tests:
        if len(matrices) != 1:
            raise ValueError(f"expected one [{len(tests)}, 3] quartiles constant, found {len(matrices)}")
        (matrix,) = matrices.values()
        quartiles = {t: tuple(float(v) for v in matrix[i]) for i, t in enumerate(tests)}
    return stats, quartiles


# Ops a z-score's mean or variance passes through between the captured constant and its use.
_PASS_THROUGH_OPS = {
    "BroadcastTo",
    "GatherNd",
    "GatherV2",
    "Gather",
    "Identity",
    "Reshape",
    "Cast",
    "ExpandDims",
    "Squeeze",
}


class DenseTransform(tf.Module):
    """The Transform (models/preprocessing.py) for the dense `dies` matrix, builtin ops only.

    Returns the transformed model inputs, each a [batch] tensor like the TFT layer's outputs.
    """

    def __init__(self, constants: TransformConstants):
        super().__init__()
        c = constants
        self.columns = c.columns
        index = {name: i for i, name in enumerate(c.columns)}
        self._tests = c.tests
        self._test_columns = [index[t.feature] for t in c.tests]
        self._log = tf.constant([t.log_scale for t in c.tests], tf.bool)
        self._median = tf.constant(np.asarray(c.median, np.float32))
        self._scale = tf.constant(np.asarray(c.scale, np.float32))
        # Limits on each test's feature scale; +-inf where a side has no limit (the cap wins).
        lo = [preprocessing._on_scale(t, t.lo_limit) for t in c.tests]
        hi = [preprocessing._on_scale(t, t.hi_limit) for t in c.tests]
        self._has_margin = [a is not None or b is not None for a, b in zip(lo, hi, strict=True)]
        self._lo = tf.constant(np.asarray([-math.inf if v is None else v for v in lo], np.float32))
        self._hi = tf.constant(np.asarray([math.inf if v is None else v for v in hi], np.float32))
        std = np.sqrt(np.asarray(c.variance, np.float32))
        self._z_scored = c.z_scored
        self._z_columns = [index[k] for k in c.z_scored]
        self._mean = tf.constant(np.asarray(c.mean, np.float32))
        # scale_to_z_score leaves a zero-variance feature centred but unscaled.
        self._std = tf.constant(np.where(std == 0, np.float32(1), std).astype(np.float32))
        self._slots = tf.constant(np.asarray(c.slot_vocabulary, np.float32))
        self._n_slots = len(c.slot_vocabulary)
        self._centre, self._radius_scale = c.centre, c.radius_scale
        self._guard_band = c.guard_band
        self._limit_features = c.limit_features

    def __call__(self, dies: tf.Tensor) -> dict[str, tf.Tensor]:
        column = {name: dies[:, i] for i, name in enumerate(self.columns)}
        out = {}
        cap = features.MARGIN_CAP
        raw = tf.gather(dies, self._test_columns, axis=1)
        # x != x is the NaN test: IsNan is not a TF Lite builtin, NotEqual is.
        missing = tf.not_equal(raw, raw)
        safe = tf.where(missing, tf.ones_like(raw), raw)
        g = tf.where(self._log[None, :], tf.math.log(tf.maximum(safe, 1e-30)), safe)
        z = tf.clip_by_value((g - self._median) / self._scale, -preprocessing.Z_CAP, preprocessing.Z_CAP)
        z = tf.where(missing, tf.zeros_like(z), z)
        margin = tf.minimum((g - self._lo) / self._scale, (self._hi - g) / self._scale)
        margin = tf.where(missing, tf.fill(tf.shape(margin), cap), tf.clip_by_value(margin, -cap, cap))
        margins = []
        for i, test in enumerate(self._tests):
            out[features.transformed_name(test.feature)] = z[:, i]
            if self._has_margin[i] and self._limit_features:
                out[features.margin_name(test.feature)] = margin[:, i]
                margins.append(margin[:, i])
        out[features.transformed_name(features.N_MISSING)] = tf.reduce_mean(tf.cast(missing, tf.float32), axis=1)
        batch = tf.shape(dies)[0]
        if self._limit_features:
            if margins:
                stacked = tf.stack(margins, axis=1)
                smallest = tf.reduce_min(stacked, axis=1)
                near = tf.reduce_mean(tf.cast(stacked < self._guard_band, tf.float32), axis=1)
            else:
                smallest, near = tf.fill([batch], cap), tf.zeros([batch])
            out[features.transformed_name(features.MIN_MARGIN)] = smallest
            out[features.transformed_name(features.N_NEAR_LIMIT)] = near

        other = tf.gather(dies, self._z_columns, axis=1)
        other_missing = tf.not_equal(other, other)
        zo = tf.where(other_missing, tf.zeros_like(other), (other - self._mean) / self._std)
        for i, k in enumerate(self._z_scored):
            out[features.transformed_name(k)] = zo[:, i]

        (cx, cy), (sx, sy) = self._centre, self._radius_scale
        dx, dy = (column["x"] - cx) * sx, (column["y"] - cy) * sy
        radius = tf.sqrt(dx * dx + dy * dy)
        out[features.transformed_name(features.RADIUS)] = radius
        # Bucketize: zone i holds boundaries[i-1] <= radius < boundaries[i], i.e. the count of
        # boundaries at or below the radius.
        boundaries = tf.constant(features.ZONE_BOUNDARIES, tf.float32)
        out[features.transformed_name(features.ZONE)] = tf.cast(
            tf.reduce_sum(tf.cast(radius[:, None] >= boundaries[None, :], tf.int32), axis=1), tf.int64
        )

        # Vocabulary lookup as arithmetic: the id of the matching slot, or the single OOV bucket
        # (id = vocabulary size) for a slot never seen in training.
        slot = column[features.HEAD_KEY] * features.SLOT_BASE + column[features.SITE_KEY]
        match = tf.cast(tf.equal(slot[:, None], self._slots[None, :]), tf.float32)
        ids = tf.range(self._n_slots, dtype=tf.float32)
        slot_id = tf.reduce_sum(match * ids, axis=1) + (1.0 - tf.reduce_max(match, axis=1)) * self._n_slots
        out[features.transformed_name(features.SLOT_FEATURE)] = tf.cast(slot_id, tf.int64)
        return out


def probe_dies(constants: TransformConstants, n: int = 256, seed: int = 0) -> pd.DataFrame:
    """Synthetic raw dies spread around the training statistics and the limits, with missing tests
    and an unseen slot: inputs for checking the dense path against the Transform, not realistic data."""
    rng = np.random.default_rng(seed)
    frame = {}
    for i, test in enumerate(constants.tests):
        g = constants.median[i] + constants.scale[i] * rng.normal(size=n) * 3
        frame[test.feature] = (np.exp(g) if test.log_scale else g).astype(np.float32)
        frame[test.feature][rng.random(n) < 0.1] = np.nan
    for i, name in enumerate(constants.z_scored):
        std = np.sqrt(constants.variance[i]) or 1.0
        frame[name] = (constants.mean[i] + std * rng.normal(size=n) * 2).astype(np.float32)
    slots = list(constants.slot_vocabulary) + [max(constants.slot_vocabulary, default=0) + 1]
    chosen = rng.choice(np.asarray(slots, np.int64), size=n)
    frame[features.HEAD_KEY] = chosen // features.SLOT_BASE
    frame[features.SITE_KEY] = chosen % features.SLOT_BASE
    return pd.DataFrame(frame)


def raw_examples(frame: pd.DataFrame, columns: Sequence[str]) -> list[bytes]:
    """Model inputs of each die as serialized tf.Examples, typed as the ingest types them
    (integer columns -> int64_list, the rest -> float_list); NaN (not measured) is left out."""
    present = [k for k in columns if k in frame.columns]
    ints = {k for k in present if pd.api.types.is_integer_dtype(frame[k])}
    records = []
    for row in frame[present].to_dict("records"):
        feature = {}
        for key, value in row.items():
            if key in ints:
                feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
            elif not np.isnan(value):
                feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        records.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return records


def loaded_columns(loaded) -> tuple[str, ...]:
    """The dense column order of a SavedModel loaded with tf.saved_model.load (its asset)."""
    with tf.io.gfile.GFile(loaded.dense_columns_asset.asset_path.numpy().decode()) as f:
        return tuple(json.load(f))


def dense_function(loaded) -> tf.types.experimental.ConcreteFunction:
    """`serve_dense` of a loaded SavedModel as a concrete function `dies -> probability`, traced
    afresh so that converters can freeze its variables and captured constants into the graph."""
    serve = loaded.signatures[DENSE_SIGNATURE]
    n_columns = len(loaded_columns(loaded))

    @tf.function(input_signature=[tf.TensorSpec([None, n_columns], tf.float32, name=DENSE_INPUT)])
    def dense(dies):
        return serve(**{DENSE_INPUT: dies})

    return dense.get_concrete_function()


def check_against_transform(
    dense: DenseTransform, tft_layer, raw_feature_spec: dict, constants: TransformConstants, atol: float = 1e-4
) -> float:
    """Largest difference between `dense` and the TFT layer on probe dies; raises above `atol`
    (relative to the output's magnitude: the robust z of a log-scale test goes through a log)."""
    frame = probe_dies(constants)
    ints = [k for k, v in raw_feature_spec.items() if v.dtype.is_integer]
    for key in ints:  # integer features (counts, coordinates, slots) arrive as integers
        if key in frame:
            frame[key] = np.round(np.nan_to_num(frame[key].to_numpy(np.float64))).astype(np.int64)
    parsed = tf.io.parse_example(tf.constant(raw_examples(frame, constants.columns)), raw_feature_spec)
    expected = tft_layer(parsed)
    actual = dense(tf.constant(dense_matrix(frame, constants.columns)))
    worst = 0.0
    for key, value in actual.items():
        reference = tf.reshape(tf.cast(expected[key], value.dtype), [-1]).numpy().astype(np.float64)
        diff = float(np.max(np.abs(value.numpy().astype(np.float64) - reference)))
        if not diff <= atol * max(1.0, float(np.max(np.abs(reference)))):
            raise ValueError(f"dense transform disagrees with the Transform graph on {key}: max diff {diff}")
        worst = max(worst, diff)
    return worst
