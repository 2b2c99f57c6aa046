"""The features module and the Keras model builder."""

from __future__ import annotations

import os

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx.components.trainer.fn_args_utils import DataAccessor
from tfx_bsl.public import tfxio

from models import features, model, training

# A program of three tests, as the Transform would present it to the model.
SPEC = model.ModelInputs(
    dense=("min_margin_xf", "n_missing_tests_xf", "t1_margin_xf", "t1_xf", "t2_xf", "t3_xf", "x_xf"),
    categorical={"slot_xf": 5, "zone_xf": features.N_ZONES},
)


def test_model_inputs_are_the_transform_outputs_minus_the_label():
    keys = ["t1_xf", "t1_margin_xf", "slot_xf", "zone_xf", features.LABEL_KEY, "radius_xf"]
    dense, categorical = features.model_input_names(keys)
    assert dense == ["radius_xf", "t1_margin_xf", "t1_xf"]
    assert categorical == ["slot_xf", "zone_xf"]
    assert not set(features.ID_FEATURES) & set(features.NON_TEST_INPUTS)
    assert features.transformed_name("t12") == "t12_xf" and features.margin_name("t12") == "t12_margin_xf"


def _batch(n: int = 8, spec: model.ModelInputs = SPEC) -> dict:
    rng = np.random.default_rng(0)
    batch = {name: rng.normal(size=(n, 1)).astype("float32") for name in spec.dense}
    batch.update({name: rng.integers(0, size, (n, 1)) for name, size in spec.categorical.items()})
    return batch


def test_input_width_follows_the_program():
    wide = model.ModelInputs(dense=tuple(f"t{i}_xf" for i in range(300)), categorical=SPEC.categorical)
    narrow = model.build_model(model.get_hyperparameters(), SPEC)
    m = model.build_model(model.get_hyperparameters(), wide)
    assert m.get_layer("dense_features").output.shape[-1] == 300
    assert narrow.get_layer("dense_features").output.shape[-1] == len(SPEC.dense)
    assert m.predict(_batch(spec=wide), verbose=0).shape == (8, 1)


def test_default_model_is_128_64_32_and_outputs_one_logit():
    m = model.build_model(model.get_hyperparameters(), SPEC)
    widths = [m.get_layer(f"dense_{i}").units for i in range(3)]
    assert widths == [128, 64, 32]
    assert m.predict(_batch(), verbose=0).shape == (8, 1)


def test_hyperparameters_shape_the_model():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("units", 64)
    hp.Fixed("depth", 2)
    hp.Fixed("dropout", 0.0)
    hp.Fixed("learning_rate", 1e-3)
    m = model.build_model(hp, SPEC)
    hidden = [layer.units for layer in m.layers if isinstance(layer, keras.layers.Dense) and layer.name != "logit"]
    assert hidden == [64, 32]


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_mixed_precision_computes_low_precision_and_outputs_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        m = model.build_model(model.get_hyperparameters(), SPEC)
        assert m.get_layer("dense_0").compute_dtype == "bfloat16"
        assert m.get_layer("logit").compute_dtype == "float32"
        assert m(_batch()).dtype == "float32"
    finally:
        training.reset_policy()


def test_an_epoch_is_one_pass_so_steps_follow_the_example_count():
    assert training.steps_per_epoch(256, 256) == 1
    assert training.steps_per_epoch(257, 256) == 2
    # Ten times the dies, ten times the steps per epoch.
    assert training.steps_per_epoch(256_000, 256) == 10 * training.steps_per_epoch(25_600, 256) == 1000
    with pytest.raises(ValueError):
        training.steps_per_epoch(0, 256)


def test_platt_calibration_recovers_a_known_scale_and_bias():
    """Labels drawn from sigmoid(2 * z - 3): the fit on 200,000 seeded draws recovers 2 and -3.

    The bound 0.05 is about five standard errors of either coefficient at this size."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=200_000)
    labels = rng.random(200_000) < 1 / (1 + np.exp(-(2 * logits - 3)))
    calibration = training.fit_calibration(labels.astype(int), logits)
    assert calibration.scale == pytest.approx(2.0, abs=0.05)
    assert calibration.bias == pytest.approx(-3.0, abs=0.05)
    # Calibrated: the mean probability equals the observed rate (a property of the logistic fit).
    assert calibration.apply(logits).mean() == pytest.approx(labels.mean(), rel=1e-3)


def test_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        training.fit_calibration(np.zeros(10, int), np.arange(10.0))


def test_calibration_never_turns_the_ranking_round():
    """Logits that rank the labels backwards on validation: the fit keeps slope 1 and moves the
    intercept only, so that the mean prediction still equals the fail rate."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-(-1.0 * logits - 3)))).astype(int)
    calibration = training.fit_calibration(labels, logits)
    assert calibration.scale == 1.0
    assert calibration.apply(logits).mean() == pytest.approx(labels.mean(), rel=1e-6)


def test_the_output_bias_starts_the_network_at_the_base_rate():
    counts = training.SplitCounts(examples=1000, positives=30)
    m = model.build_model(model.get_hyperparameters(), SPEC, output_bias=counts.base_logit)
    assert float(m.get_layer("logit").bias.numpy()[0]) == pytest.approx(np.log(0.03 / 0.97))


def _transformed_split(directory, n: int) -> tuple[str, tft.TFTransformOutput]:
    """`n` transformed examples (one float feature and the label) in a gzipped TFRecord file, and
    a transform output directory holding their schema, as the Transform component writes both."""
    spec = {"t1_xf": tf.io.FixedLenFeature([], tf.float32), features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    metadata_io.write_metadata(
        metadata, os.path.join(directory, "transform", tft.TFTransformOutput.TRANSFORMED_METADATA_DIR)
    )
    path = os.path.join(directory, "examples.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(n):
            example = tf.train.Example()
            example.features.feature["t1_xf"].float_list.value.append(float(i))
            example.features.feature[features.LABEL_KEY].int64_list.value.append(i % 3 == 0)
            writer.write(example.SerializeToString())
    return path, tft.TFTransformOutput(os.path.join(directory, "transform"))


def _factory(file_pattern, options, schema):
    return tfxio.TFExampleRecord(file_pattern=file_pattern, schema=schema).TensorFlowDataset(options)


ACCESSOR = DataAccessor(tf_dataset_factory=_factory, record_batch_factory=None, data_view_decode_fn=None)


def _passes(dataset, steps: int, passes: int) -> list[list[float]]:
    """The `t1_xf` values of `passes` consecutive epochs of `steps` batches each."""
    batches = [batch["t1_xf"].numpy().reshape(-1).tolist() for batch, _ in dataset.take(steps * passes)]
    return [sum(batches[i * steps : (i + 1) * steps], []) for i in range(passes)]


def test_a_training_split_that_fits_is_read_once_and_each_epoch_is_one_reshuffled_pass(tmp_path):
    """Held in memory: the count comes from the one read, every epoch of `steps` batches holds
    every die exactly once (the last batch partial), each epoch in a new order, the same seed
    gives the same orders, and the files are not read again (deleting them changes nothing)."""
    path, transform_output = _transformed_split(str(tmp_path), 100)
    split = training.train_split([path], ACCESSOR, transform_output, batch_size=32, seed=3)
    assert split.in_memory and split.counts == training.SplitCounts(examples=100, positives=34)
    assert split.steps == 4 and split.bytes_held == 100 * (4 + 8)  # one float32 feature, an int64 label
    os.remove(path)
    epochs = _passes(split.dataset, split.steps, 3)
    assert all(sorted(epoch) == [float(i) for i in range(100)] for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != [float(i) for i in range(100)]
    again = training.in_memory_dataset({"t1_xf": np.arange(100, dtype=np.float32)}, np.zeros(100), 32, seed=3)
    assert _passes(again, 4, 3) == epochs


def test_a_training_split_over_the_memory_cap_streams_from_the_files_and_is_still_counted(tmp_path):
    path, transform_output = _transformed_split(str(tmp_path), 100)
    split = training.train_split([path], ACCESSOR, transform_output, batch_size=32, seed=3, max_in_memory_bytes=600)
    assert not split.in_memory and split.bytes_held == 0
    assert split.counts == training.SplitCounts(examples=100, positives=34) and split.steps == 4
    # Streamed, the records repeat before they are batched: 4 batches of 32 cross into the next pass.
    values = _passes(split.dataset, 4, 1)[0]
    assert len(values) == 128 and set(values) <= {float(i) for i in range(100)}
    os.remove(path)
    with pytest.raises(tf.errors.OpError):
        _passes(split.dataset, 4, 1)


def test_validation_is_read_from_the_files_once_then_from_memory(tmp_path):
    """Every epoch's evaluation sees each validation die exactly once, in the same order, and
    only the first pass reads the files: deleting them after it leaves later passes intact
    (while an uncached pass over the same files fails)."""
    accessor = ACCESSOR
    path, transform_output = _transformed_split(str(tmp_path), 100)

    def one_pass(dataset) -> list[float]:
        return [float(v) for batch, _ in dataset for v in batch["t1_xf"].numpy().reshape(-1)]

    validation = training.validation_dataset([path], accessor, transform_output, batch_size=32)
    first = one_pass(validation)
    assert first == [float(i) for i in range(100)]
    assert training.count_split(validation) == training.SplitCounts(examples=100, positives=34)
    os.remove(path)
    assert one_pass(validation) == first
    with pytest.raises(tf.errors.OpError):
        one_pass(training.input_fn([path], accessor, transform_output, 32, num_epochs=1, shuffle=False))
