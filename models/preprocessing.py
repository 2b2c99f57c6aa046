"""tf.Transform preprocessing for die examples, built from the test program the ingest learned.

The Transform component passes `custom_config` with `program_dir`, the ExampleGen's output
directory, where the ingest wrote `test_program.json` (pipeline/pipeline.py fills it in at run time
with a TFX placeholder). For every test of that program:

    t{N}_xf         robust z: (g(value) - median) / (IQR / 1.349), 0 where not measured
    t{N}_margin_xf  distance to the nearest limit in the same robust units, capped at MARGIN_CAP
                    (a test with no limit has no margin feature)

where g is the identity, or log for positive right-skewed tests (leakage, static power: the
program marks them `log_scale`). Median and IQR come from the training data (tft.quantiles over
the values present); the limits are the program's, baked into the graph as constants, so a limit
changed in a later revision never silently changes what a margin means, and serving computes
exactly what training saw. Per die: the smallest margin, the share of its tests with limits
that lie within the guard band of a limit, and the share of the program's tests not measured.
Besides the tests: the wafer context, the screens (DPAT, NNR, GDBN, ZPAT: data/screens.py) and
x / y z-scored, radius and radial zone from the program's die grid, and a vocabulary of probe
slots (head and site).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_transform as tft

from data.program import PROGRAM_FILE, TestDef, TestProgram
from models import features

PROGRAM_DIR_KEY = "program_dir"  # custom_config: directory holding test_program.json
PROGRAM_KEY = "program"  # custom_config: the program itself, as a dict (tests and tools)
GUARD_BAND_KEY = "guard_band"
LIMIT_FEATURES_KEY = "limit_features"  # False: no margins or summaries (the ablation in benchmarks/)
PROGRAM_ASSET_KEY = "test_program"
IQR_TO_SIGMA = 1.349  # IQR of a normal distribution in standard deviations
Z_CAP = 20.0  # a passing die this far from the median is an outlier whatever its exact value


def load_program(custom_config: dict | None) -> TestProgram:
    """The program named by the Transform's custom_config."""
    config = custom_config or {}
    if config.get(PROGRAM_KEY):
        return TestProgram.from_dict(config[PROGRAM_KEY])
    if not config.get(PROGRAM_DIR_KEY):
        raise ValueError(
            f"preprocessing_fn needs custom_config[{PROGRAM_DIR_KEY!r}] (the ingest's output) "
            f"or custom_config[{PROGRAM_KEY!r}], got {sorted(config)}"
        )
    path = f"{config[PROGRAM_DIR_KEY].rstrip('/')}/{PROGRAM_FILE}"
    with tf.io.gfile.GFile(path) as f:
        return TestProgram.from_json(f.read())


def _as_dense_nan(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """A [batch] float tensor with NaN where the die has no value (test not measured)."""
    if isinstance(x, tf.SparseTensor):
        batch = x.dense_shape[0]
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32), [batch, 1]),
            default_value=float("nan"),
        )
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=float("nan"), shape=[None, 1])
    return tf.reshape(tf.cast(x, tf.float32), [-1])


def _present_values(x: tf.Tensor) -> tf.SparseTensor:
    """The non-NaN entries of a [batch] tensor as a [batch, 1] SparseTensor: analyzers over it
    see only measured values (a NaN neither poisons a statistic nor pretends to be zero)."""
    present = tf.logical_not(tf.math.is_nan(x))
    indices = tf.where(present)
    return tf.SparseTensor(
        tf.concat([indices, tf.zeros_like(indices)], axis=1),
        tf.boolean_mask(x, present),
        tf.stack([tf.shape(x, out_type=tf.int64)[0], 1]),
    )


def _z_score_ignoring_missing(x: tf.Tensor) -> tf.Tensor:
    """Z-score with mean/variance over present values only; missing values become 0 (the mean)."""
    scaled = tft.scale_to_z_score(_present_values(x))
    return tf.reshape(tf.sparse.to_dense(scaled, default_value=0.0), [-1])


def robust_centre_and_scale(g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Median and IQR / 1.349 of the present values of `g` over the training data (analyzers).

    A test whose IQR is zero (a discrete reading) falls back to a scale of 1 in its own units."""
    present = tf.boolean_mask(g, tf.logical_not(tf.math.is_nan(g)))
    quartiles = tf.reshape(tft.quantiles(present, num_buckets=4, epsilon=0.001), [-1])
    scale = (quartiles[2] - quartiles[0]) / IQR_TO_SIGMA
    return quartiles[1], tf.where(scale > 0, scale, tf.ones_like(scale))


def _on_scale(test: TestDef, value: float | None) -> float | None:
    """A limit on the test's feature scale; a non-positive limit of a log-scale test is no limit."""
    if value is None:
        return None
    if test.log_scale:
        return math.log(value) if value > 0 else None
    return float(value)


def test_features(test: TestDef, raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """(robust z, margin or None, missing indicator) of one test's raw [batch] values (NaN = missing)."""
    present = tf.logical_not(tf.math.is_nan(raw))
    safe = tf.where(present, raw, tf.ones_like(raw))
    g = tf.where(present, tf.math.log(tf.maximum(safe, 1e-30)) if test.log_scale else safe, raw)
    median, scale = robust_centre_and_scale(g)
    z = tf.where(present, tf.clip_by_value((g - median) / scale, -Z_CAP, Z_CAP), tf.zeros_like(g))
    lo, hi = _on_scale(test, test.lo_limit), _on_scale(test, test.hi_limit)
    margin = None
    if lo is not None or hi is not None:
        margin = tf.fill(tf.shape(g), features.MARGIN_CAP)
        if lo is not None:
            margin = tf.minimum(margin, (g - lo) / scale)
        if hi is not None:
            margin = tf.minimum(margin, (hi - g) / scale)
        margin = tf.where(present, tf.maximum(margin, -features.MARGIN_CAP), features.MARGIN_CAP)
    return z, margin, tf.cast(tf.logical_not(present), tf.float32)


# Called by the Transform component (and reused by the serving graph through the TFT layer).
def preprocessing_fn(inputs: dict, custom_config: dict | None = None) -> dict:
    """Raw die features -> model features, plus the label (see the module docstring)."""
    program = load_program(custom_config)
    _ship_program(custom_config)
    guard_band = float((custom_config or {}).get(GUARD_BAND_KEY, features.DEFAULT_GUARD_BAND))
    with_limits = bool((custom_config or {}).get(LIMIT_FEATURES_KEY, True))
    outputs = {}
    batch_like = _as_dense_nan(inputs["x"])
    n_missing = tf.zeros_like(batch_like)
    margins = []
    for test in program.tests:
        if test.feature not in inputs:  # in the program but on no example (only on sort fails)
            continue
        z, margin, missing = test_features(test, _as_dense_nan(inputs[test.feature]))
        outputs[features.transformed_name(test.feature)] = z
        n_missing += missing
        if margin is not None and with_limits:
            outputs[features.margin_name(test.feature)] = margin
            margins.append(margin)
    # Counts as shares of the program: bounded inputs whatever the number of tests (30 or 300), and
    # a range an int8 TF Lite model's first layer can represent.
    n_tests = max(1, sum(t.feature in inputs for t in program.tests))
    outputs[features.transformed_name(features.N_MISSING)] = n_missing / n_tests
    if with_limits:
        if margins:
            stacked = tf.stack(margins, axis=1)
            smallest = tf.reduce_min(stacked, axis=1)
            near = tf.reduce_mean(tf.cast(stacked < guard_band, tf.float32), axis=1)
        else:  # a program without limits: every die is far from them
            smallest, near = tf.fill(tf.shape(batch_like), features.MARGIN_CAP), tf.zeros_like(batch_like)
        outputs[features.transformed_name(features.MIN_MARGIN)] = smallest
        outputs[features.transformed_name(features.N_NEAR_LIMIT)] = near

    for key in features.Z_SCORED:
        if key in inputs:  # a screen with no value on any die (ZPAT on one-wafer lots) is not a feature
            outputs[features.transformed_name(key)] = _z_score_ignoring_missing(_as_dense_nan(inputs[key]))

    radius = die_radius(_as_dense_nan(inputs["x"]), _as_dense_nan(inputs["y"]), program)
    outputs[features.transformed_name(features.RADIUS)] = radius
    outputs[features.transformed_name(features.ZONE)] = tf.cast(
        tf.raw_ops.Bucketize(input=radius, boundaries=list(features.ZONE_BOUNDARIES)), tf.int64
    )

    head = _as_dense_nan(inputs[features.HEAD_KEY]) if features.HEAD_KEY in inputs else tf.ones_like(batch_like)
    slot = tf.cast(head, tf.int64) * features.SLOT_BASE + tf.cast(_as_dense_nan(inputs[features.SITE_KEY]), tf.int64)
    outputs[features.transformed_name(features.SLOT_FEATURE)] = tft.compute_and_apply_vocabulary(
        tf.strings.as_string(slot),
        num_oov_buckets=features.NUM_OOV_BUCKETS,
        vocab_filename=features.vocabulary_name(features.SLOT_FEATURE),
    )

    if features.LABEL_KEY in inputs:
        outputs[features.LABEL_KEY] = tf.reshape(tf.cast(inputs[features.LABEL_KEY], tf.int64), [-1])
    return outputs


def _ship_program(custom_config: dict | None) -> None:
    """Make the program file an asset of the transform graph, so the Trainer and every model
    exported from it carry the program it was built for (`program_from_transform_output`)."""
    program_dir = (custom_config or {}).get(PROGRAM_DIR_KEY)
    if not program_dir:
        return
    path = tf.constant(f"{program_dir.rstrip('/')}/{PROGRAM_FILE}")
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS, path)
    tft.annotate_asset(PROGRAM_ASSET_KEY, PROGRAM_FILE)


def program_from_transform_output(tf_transform_output: tft.TFTransformOutput) -> TestProgram:
    """The test program a transform graph was built from (shipped as its asset)."""
    path = tf_transform_output.vocabulary_file_by_name(PROGRAM_ASSET_KEY)
    with tf.io.gfile.GFile(path) as f:
        return TestProgram.from_json(f.read())


def die_radius(x: tf.Tensor, y: tf.Tensor, program: TestProgram) -> tf.Tensor:
    """Distance of each die from the wafer centre, 1 at the wafer's edge (data/program.py `Grid`)."""
    if program.grid is None:
        return tf.zeros_like(x)
    cx, cy = program.grid.centre()
    sx, sy = program.grid.radius_scale()
    dx, dy = (x - cx) * sx, (y - cy) * sy
    return tf.sqrt(dx * dx + dy * dy)
