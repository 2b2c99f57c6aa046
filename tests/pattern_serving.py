"""A small, real pattern serving model for the tests of what reads one (the predict client, the
report): a real Transform graph (tft_beam over the map examples' schema), a small CNN trained for a
few seconds on the maps of generated pattern-mode STDF files (the generator's own patterns, maps built
as the map ExampleGen builds them), thresholds fitted on held-out wafers, exported by
models/pattern_trainer.py `export` with its three signatures and the Keras model beside them.

run_fn itself is tested in tests/test_pattern_model.py; this skips the Trainer's data plumbing so
that each test module pays seconds, not a minute, for its model.
"""

from __future__ import annotations

import glob
import os

import apache_beam as beam
import keras
import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx_bsl.public import tfxio

from data.patterns import (
    LABEL_KEY,
    LOT_KEY,
    MAP_KEY,
    MAP_SIZE,
    PATTERN_CLASSES,
    PRODUCT_KEY,
    WAFER_KEY,
    labels_to_multi_hot,
    read_sidecar,
)
from data.readers import read_stdf
from data.synthetic import GeneratorConfig
from data.wafer_maps import wafer_map_of
from data.writers import write_dataset
from models import pattern_metrics, pattern_model, pattern_preprocessing, pattern_trainer
from tests.pattern_maps import write_examples

RAW_SPEC = {
    MAP_KEY: tf.io.FixedLenFeature([MAP_SIZE * MAP_SIZE * 2], tf.float32),
    LABEL_KEY: tf.io.FixedLenFeature([len(PATTERN_CLASSES)], tf.int64),
    PRODUCT_KEY: tf.io.FixedLenFeature([], tf.string),
    LOT_KEY: tf.io.FixedLenFeature([], tf.string),
    WAFER_KEY: tf.io.FixedLenFeature([], tf.string),
}
SMALL_HP = {"architecture": "resnet", "width": 8, "depth": 3, "dropout": 0.1, "learning_rate": 5e-3}


def _transform_graph(root: str, sample_file: str) -> tft.TFTransformOutput:
    """The Transform's graph, analysed over a few examples, with the raw schema beside it (TFX's
    Transform writes both; the serving signature parses with the raw one)."""
    schema = schema_utils.schema_from_feature_spec(RAW_SPEC)
    out = os.path.join(root, "transform")
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=os.path.join(root, "tft_tmp")):
        source = tfxio.TFExampleRecord(file_pattern=sample_file, schema=schema)
        raw = p | source.BeamSource()
        transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(
            pattern_preprocessing.preprocessing_fn
        )
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema), os.path.join(out, "metadata"))
    return tft.TFTransformOutput(out)


def generated_maps(config: GeneratorConfig, out: str) -> tuple[np.ndarray, np.ndarray]:
    """(maps, multi-hot labels) of a generated pattern-mode STDF dataset, one per wafer."""
    write_dataset(config, out, "stdf")
    labels = {}
    for path in sorted(glob.glob(os.path.join(out, "patterns", "*.csv"))):
        labels.update(read_sidecar(path))
    maps, multi_hot = [], []
    for path in sorted(glob.glob(os.path.join(out, "wafers", "*", "*.stdf"))):
        for read in read_stdf(path):  # maps-only files: one read per wafer
            maps.append(wafer_map_of([read]).image)
            multi_hot.append(labels_to_multi_hot(labels[(read.lot_id, read.wafer_id)]))
    return np.stack(maps), np.asarray(multi_hot, np.int64)


TRAIN = GeneratorConfig(lots=16, wafers_per_lot=25, seed=101, patterns=True, maps_only=True, defect_wafer_share=0.7)
HELD_OUT = GeneratorConfig(lots=6, wafers_per_lot=25, seed=102, patterns=True, maps_only=True, defect_wafer_share=0.7)


def train_small_model(root: str, seed: int = 0, epochs: int = 30) -> str:
    """The serving model directory of a small pattern model trained on generated wafers (`TRAIN`),
    thresholds fitted on `HELD_OUT`; seeded."""
    os.makedirs(root, exist_ok=True)
    maps, labels = generated_maps(TRAIN, os.path.join(root, "train_data"))
    held_maps, held_labels = generated_maps(HELD_OUT, os.path.join(root, "held_out_data"))
    sample = os.path.join(root, "sample.tfrecord")
    write_examples(sample, maps[:16], labels[:16], "A")
    transform_output = _transform_graph(root, sample)
    keras.utils.set_random_seed(seed)
    hp = keras_tuner.HyperParameters()
    for name, value in SMALL_HP.items():
        hp.Fixed(name, value)
    model = pattern_model.build_pattern_model(hp)
    model.fit(maps, labels.astype(np.float32), batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    probabilities = tf.sigmoid(model(held_maps, training=False)).numpy()
    thresholds = pattern_metrics.fit_thresholds(held_labels, probabilities)
    model_dir = os.path.join(root, "serving_model")
    pattern_trainer.export(model, transform_output, thresholds, model_dir)
    return model_dir
