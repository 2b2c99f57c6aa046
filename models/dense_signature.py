"""The dense-input serving signature: one float32 matrix of raw die features in, probability out.

`serving_default` parses serialized tf.Examples (ParseExampleV2) and runs the tf.Transform graph,
whose vocabulary lookup (string hash tables) and sparse z-scoring are not TF Lite builtins and do
not convert to ONNX. `serve_dense` takes the same raw features as one matrix and re-expresses the
Transform with the analyzer outputs of the Transform graph baked in as constants, using only ops
that TF Lite builtins and ONNX have (compare, select, subtract, divide, sum, sqrt):

    dies: float32 [batch, len(DENSE_COLUMNS)], columns in `DENSE_COLUMNS` order
          (= features.MODEL_FEATURES: the 52 parametric tests, the 4 wafer-context features,
          x, y, site), a test that was not measured is NaN, the tester site is its number.
    ->    {'ft_fail_probability': float32 [batch, 1]}

The re-expression is checked against the TFT layer itself at export time
(`check_against_transform`), so a change in preprocessing_fn that it does not follow fails the
Trainer instead of exporting a model that scores differently from `serving_default`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_transform as tft

from models import features

DENSE_SIGNATURE = "serve_dense"
DENSE_INPUT = "dies"
DENSE_COLUMNS: tuple[str, ...] = features.MODEL_FEATURES
# Raw features the Transform z-scores (ignoring missing values), in DENSE_COLUMNS order.
Z_SCORED: tuple[str, ...] = features.PARAMETRIC + features.CONTEXT + features.COORDINATES

_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")


def dense_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Dies (one row each, raw columns as the readers produce them) -> the `dies` input matrix.

    A parametric test column that is absent (no die of the file reached it) is all NaN, like a
    test that was not measured; every other model feature must be present.
    """
    columns = []
    for name in DENSE_COLUMNS:
        if name in frame.columns:
            columns.append(pd.to_numeric(frame[name], errors="raise").to_numpy(np.float32))
        elif name in features.PARAMETRIC:
            columns.append(np.full(len(frame), np.nan, np.float32))
        else:
            raise KeyError(f"dies lack the model feature {name!r}")
    return np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0), np.float32)


def dense_matrix_from_examples(serialized: Iterable[bytes]) -> np.ndarray:
    """Serialized tf.Examples (as the ingest writes them) -> the `dies` input matrix.

    A feature absent from an example (a test not measured) becomes NaN.
    """
    rows = []
    for record in serialized:
        feature = tf.train.Example.FromString(record).features.feature
        row = np.full(len(DENSE_COLUMNS), np.nan, np.float32)
        for i, name in enumerate(DENSE_COLUMNS):
            if name not in feature:
                continue
            value = feature[name]
            values = value.float_list.value or value.int64_list.value
            if values:
                row[i] = values[0]
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, len(DENSE_COLUMNS)), np.float32)


@dataclasses.dataclass(frozen=True)
class TransformConstants:
    """What the Transform's analyzers computed: z-score statistics and the site vocabulary."""

    mean: tuple[float, ...]  # per Z_SCORED feature, over the values present in the training split
    variance: tuple[float, ...]
    site_vocabulary: tuple[float, ...]  # site numbers in vocabulary-id order

    @classmethod
    def from_transform_output(cls, tf_transform_output: tft.TFTransformOutput) -> TransformConstants:
        stats = _z_score_statistics(tf_transform_output)
        missing = [k for k in Z_SCORED if k not in stats]
        if missing:
            raise ValueError(f"the Transform graph has no z-score statistics for {missing}")
        vocabulary = tf_transform_output.vocabulary_by_name(features.vocabulary_name(features.SITE_KEY))
        try:
            sites = tuple(float(v) for v in vocabulary)
        except ValueError as error:
            raise ValueError(f"site vocabulary is not numeric, a dense input cannot carry it: {error}") from error
        return cls(
            mean=tuple(stats[k][0] for k in Z_SCORED),
            variance=tuple(stats[k][1] for k in Z_SCORED),
            site_vocabulary=sites,
        )


def _z_score_statistics(tf_transform_output: tft.TFTransformOutput) -> dict[str, tuple[float, float]]:
    """{raw feature: (mean, variance)} for every output of the Transform that is a z-score.

    tft.scale_to_z_score computes `(x - mean) / sqrt(variance)` with the analyzer outputs passed
    into the transform function as captured scalars. For each transformed output, walk its
    producers back through the function body to the one Sub whose right operand is a captured
    scalar (the mean) and the one Sqrt of a captured scalar (the variance). TFT has no public
    accessor for analyzer values; the check in `check_against_transform` guards this reading.
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
    scalars = {}
    for arg, tensor in zip(body.signature.input_arg, call.inputs, strict=True):
        value = captured.get(tensor.ref())
        if value is not None and value.dtype == tf.float32 and value.shape.rank == 0:
            scalars[arg.name] = float(value.numpy())

    nodes = {n.name: n for n in body.node_def}

    def producer(endpoint: str) -> str:
        return endpoint.lstrip("^").split(":")[0]

    keys = tf.nest.flatten(tf.nest.map_structure(lambda spec: spec.name, signature.structured_outputs))
    wanted = {features.transformed_name(k): k for k in Z_SCORED}
    stats = {}
    for key, output in zip(keys, signature.outputs, strict=True):
        if key not in wanted:
            continue
        # output = Identity(call:k); call output k is the body's k-th output argument.
        index = int(output.op.inputs[0].name.split(":")[1])
        means, variances, stack, seen = [], [], [producer(body.ret[body.signature.output_arg[index].name])], set()
        while stack:
            name = stack.pop()
            if name in seen or name not in nodes:
                continue
            seen.add(name)
            node = nodes[name]
            if node.op == "Sub" and producer(node.input[1]) in scalars:
                means.append(scalars[producer(node.input[1])])
            if node.op == "Sqrt" and producer(node.input[0]) in scalars:
                variances.append(scalars[producer(node.input[0])])
            stack.extend(producer(i) for i in node.input)
        if len(means) != 1 or len(variances) != 1:
            raise ValueError(f"{key}: expected one z-score mean and variance, found {means} and {variances}")
        stats[wanted[key]] = (means[0], variances[0])
    return stats


class DenseTransform(tf.Module):
    """The Transform (models/preprocessing.py) for the dense `dies` matrix, builtin ops only.

    Returns the transformed model inputs, each a [batch] tensor like the TFT layer's outputs.
    """

    def __init__(self, constants: TransformConstants):
        super().__init__()
        std = np.sqrt(np.asarray(constants.variance, np.float32))
        self._z_columns = [DENSE_COLUMNS.index(k) for k in Z_SCORED]
        self._mean = tf.constant(np.asarray(constants.mean, np.float32))
        # scale_to_z_score leaves a zero-variance feature centred but unscaled.
        self._std = tf.constant(np.where(std == 0, np.float32(1), std).astype(np.float32))
        self._n_parametric = len(features.PARAMETRIC)
        self._sites = tf.constant(np.asarray(constants.site_vocabulary, np.float32))
        self._n_sites = len(constants.site_vocabulary)

    def __call__(self, dies: tf.Tensor) -> dict[str, tf.Tensor]:
        column = {name: dies[:, i] for i, name in enumerate(DENSE_COLUMNS)}
        raw = tf.gather(dies, self._z_columns, axis=1)
        # x != x is the NaN test: IsNan is not a TF Lite builtin, NotEqual is.
        missing = tf.not_equal(raw, raw)
        z = tf.where(missing, tf.zeros_like(raw), (raw - self._mean) / self._std)
        out = {features.transformed_name(k): z[:, i] for i, k in enumerate(Z_SCORED)}
        out[features.transformed_name(features.N_MISSING)] = tf.reduce_sum(
            tf.cast(missing[:, : self._n_parametric], tf.float32), axis=1
        )

        geometry = features.GEOMETRY
        x_mm = column["x"] * geometry.die_width_mm
        y_mm = column["y"] * geometry.die_height_mm
        radius = tf.sqrt(x_mm * x_mm + y_mm * y_mm) / geometry.usable_radius_mm
        out[features.transformed_name(features.RADIUS)] = radius
        # Bucketize: zone i holds boundaries[i-1] <= radius < boundaries[i], i.e. the count of
        # boundaries at or below the radius.
        boundaries = tf.constant(features.ZONE_BOUNDARIES, tf.float32)
        out[features.transformed_name(features.ZONE)] = tf.cast(
            tf.reduce_sum(tf.cast(radius[:, None] >= boundaries[None, :], tf.int32), axis=1), tf.int64
        )

        # Vocabulary lookup as arithmetic: the id of the matching site, or the single OOV bucket
        # (id = vocabulary size) for a site never seen in training.
        match = tf.cast(tf.equal(column[features.SITE_KEY][:, None], self._sites[None, :]), tf.float32)
        ids = tf.range(self._n_sites, dtype=tf.float32)
        site_id = tf.reduce_sum(match * ids, axis=1) + (1.0 - tf.reduce_max(match, axis=1)) * self._n_sites
        out[features.transformed_name(features.SITE_KEY)] = tf.cast(site_id, tf.int64)
        return out


def probe_dies(constants: TransformConstants, n: int = 256, seed: int = 0) -> pd.DataFrame:
    """Synthetic raw dies spread around the training statistics, with missing tests and an
    unseen site: inputs for checking the dense path against the Transform, not realistic data."""
    rng = np.random.default_rng(seed)
    frame = {}
    for i, name in enumerate(Z_SCORED):
        std = np.sqrt(constants.variance[i]) or 1.0
        frame[name] = (constants.mean[i] + std * rng.normal(size=n) * 2).astype(np.float32)
    # Stop on first fail: the tail of the program unmeasured on some dies.
    first_missing = rng.integers(1, len(features.PARAMETRIC) * 3, size=n)
    for j, name in enumerate(features.PARAMETRIC):
        frame[name][first_missing <= j] = np.nan
    for key in features.COORDINATES:
        frame[key] = rng.integers(-14, 15, size=n)
    sites = list(constants.site_vocabulary) + [max(constants.site_vocabulary, default=0) + 1]
    frame[features.SITE_KEY] = rng.choice(np.asarray(sites, np.int64), size=n)
    return pd.DataFrame(frame)


def raw_examples(frame: pd.DataFrame) -> list[bytes]:
    """Model features of each die as serialized tf.Examples, typed as the ingest types them
    (integer columns -> int64_list, the rest -> float_list); NaN (not measured) is left out."""
    present = [k for k in DENSE_COLUMNS if k in frame.columns]
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


def dense_function(loaded) -> tf.types.experimental.ConcreteFunction:
    """`serve_dense` of a loaded SavedModel as a concrete function `dies -> probability`, traced
    afresh so that converters can freeze its variables and captured constants into the graph."""
    serve = loaded.signatures[DENSE_SIGNATURE]

    @tf.function(input_signature=[tf.TensorSpec([None, len(DENSE_COLUMNS)], tf.float32, name=DENSE_INPUT)])
    def dense(dies):
        return serve(**{DENSE_INPUT: dies})

    return dense.get_concrete_function()


def check_against_transform(
    dense: DenseTransform, tft_layer, raw_feature_spec: dict, constants: TransformConstants, atol: float = 1e-5
) -> float:
    """Largest difference between `dense` and the TFT layer on probe dies; raises above `atol`."""
    frame = probe_dies(constants)
    ints = [k for k, v in raw_feature_spec.items() if v.dtype.is_integer]
    for key in ints:  # integer features (counts, coordinates) arrive as integers
        frame[key] = np.round(frame[key].to_numpy(np.float64)).astype(np.int64)
    parsed = tf.io.parse_example(tf.constant(raw_examples(frame)), raw_feature_spec)
    expected = tft_layer(parsed)
    actual = dense(tf.constant(dense_matrix(frame)))
    worst = 0.0
    for key, value in actual.items():
        reference = tf.reshape(tf.cast(expected[key], value.dtype), [-1]).numpy().astype(np.float64)
        diff = float(np.max(np.abs(value.numpy().astype(np.float64) - reference)))
        if not diff <= atol * max(1.0, float(np.max(np.abs(reference)))):
            raise ValueError(f"dense transform disagrees with the Transform graph on {key}: max diff {diff}")
        worst = max(worst, diff)
    return worst
