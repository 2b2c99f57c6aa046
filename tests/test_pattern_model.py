"""The pattern model: Transform, D4 augmentation, CNN builders, metrics, Grad-CAM, and run_fn with
each transfer strategy through `base_model`, on real tf.Example files and a real tft_beam transform.

Maps are drawn by tests/pattern_maps.py with the generator's defect densities: product A on a fine
die grid (the base), product B on a coarse one (the target). Everything is seeded.
"""

from __future__ import annotations

import itertools
import json
import os

import apache_beam as beam
import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from sklearn.metrics import roc_auc_score
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx_bsl.public import tfxio

from data.patterns import LABEL_KEY, LOT_KEY, MAP_KEY, MAP_SIZE, PATTERN_CLASSES, PRODUCT_KEY, WAFER_KEY
from models import gradcam, pattern_metrics, pattern_model, pattern_preprocessing, pattern_trainer, training
from tests.pattern_maps import draw_map, make_maps, write_examples

RAW_SPEC = {
    MAP_KEY: tf.io.FixedLenFeature([MAP_SIZE * MAP_SIZE * 2], tf.float32),
    LABEL_KEY: tf.io.FixedLenFeature([len(PATTERN_CLASSES)], tf.int64),
    PRODUCT_KEY: tf.io.FixedLenFeature([], tf.string),
    LOT_KEY: tf.io.FixedLenFeature([], tf.string),
    WAFER_KEY: tf.io.FixedLenFeature([], tf.string),
}
# A small network for the tests (the defaults are measured in benchmarks/pattern_model_choice.py).
SMALL_HP = {"architecture": "resnet", "width": 8, "depth": 3, "dropout": 0.1, "learning_rate": 5e-3}


def _hp(**overrides) -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name, value in {**SMALL_HP, **overrides}.items():
        hp.Fixed(name, value)
    return hp


def _transform(raw_dir: str, out_dir: str) -> None:
    """tft_beam over the raw TFRecords: the transform graph, and each split's transformed examples."""
    schema = schema_utils.schema_from_feature_spec(RAW_SPEC)
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp")):
        # The transform is analysed on product A's training split (as a Transform over the base
        # product would), then applied to every split.
        for split in sorted(os.listdir(raw_dir), key=lambda s: s != "train-A"):
            source = tfxio.TFExampleRecord(file_pattern=os.path.join(raw_dir, split, "*"), schema=schema)
            raw = p | f"Read{split}" >> source.BeamSource()
            if split == "train-A":
                transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(
                    pattern_preprocessing.preprocessing_fn
                )
                _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(out_dir, "transform"))
            splits = (raw, source.TensorAdapterConfig()), transform_fn
            transformed, metadata = splits | f"Transform{split}" >> tft_beam.TransformDataset()
            coder = tft.coders.ExampleProtoCoder(metadata.schema)
            _ = (
                transformed
                | f"Encode{split}" >> beam.Map(coder.encode)
                | f"Write{split}"
                >> beam.io.WriteToTFRecord(os.path.join(out_dir, split, "data"), file_name_suffix=".tfrecord")
            )


def _write_raw_metadata(out_dir: str) -> None:
    """The raw schema beside the transform graph, as TFX's Transform writes it (the serving
    signature parses with it)."""
    schema = schema_utils.schema_from_feature_spec(RAW_SPEC)
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema), os.path.join(out_dir, "transform", "metadata"))


def _data_accessor() -> DataAccessor:
    """What the Trainer gets from TFX for Examples artifacts: tfxio datasets over tf.Example files."""

    def factory(file_pattern, options, schema):
        return tfxio.TFExampleRecord(file_pattern=file_pattern, schema=schema).TensorFlowDataset(options)

    return DataAccessor(tf_dataset_factory=factory, record_batch_factory=None, data_view_decode_fn=None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Raw and transformed map examples: product A (500 train, 200 eval), product B (120, 120)."""
    root = tmp_path_factory.mktemp("pattern_data")
    raw = root / "raw"
    sizes = {"train-A": (500, 1), "eval-A": (200, 2), "train-B": (120, 3), "eval-B": (120, 4)}
    arrays = {}
    for split, (n, seed) in sizes.items():
        product = split[-1]
        maps, labels = make_maps(n, product, seed)
        arrays[split] = maps, labels
        os.makedirs(raw / split)
        write_examples(str(raw / split / "data.tfrecord"), maps, labels, product)
    _transform(str(raw), str(root))
    _write_raw_metadata(str(root))
    return {"root": str(root), "arrays": arrays}


def _fn_args(data, tmp_path, product: str, config: dict, base_model: str | None = None) -> FnArgs:
    root = data["root"]
    return FnArgs(
        train_files=[os.path.join(root, f"train-{product}", "*")],
        eval_files=[os.path.join(root, f"eval-{product}", "*")],
        transform_output=os.path.join(root, "transform"),
        serving_model_dir=str(tmp_path / "serving"),
        model_run_dir=str(tmp_path / "run"),
        data_accessor=_data_accessor(),
        hyperparameters=_hp().get_config(),
        custom_config={"seed": 1, "batch_size": 16, "strategy": "mirrored", **config},
        base_model=base_model,
    )


@pytest.fixture(scope="module")
def base_model(data, tmp_path_factory):
    """A base model trained from scratch on product A by run_fn under MirroredStrategy, in float32
    (mixed_bfloat16 runs 4-12x slower on this CPU; fine_tune below runs under it)."""
    tmp = tmp_path_factory.mktemp("base")
    config = {"transfer": "scratch", "epochs": 15, "patience": 15, "mixed_precision": False}
    run_args = _fn_args(data, tmp, "A", config)
    pattern_trainer.run_fn(run_args)
    return run_args.serving_model_dir


def _serialized(maps: np.ndarray, labels: np.ndarray, tmp_path) -> list[bytes]:
    path = str(tmp_path / "serve.tfrecord")
    write_examples(path, maps, labels, "B")
    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


# --- Transform ----------------------------------------------------------------------------------


def test_transform_reshapes_the_map_and_passes_labels_and_product(data):
    root = data["root"]
    output = tft.TFTransformOutput(os.path.join(root, "transform"))
    spec = output.transformed_feature_spec()
    assert spec[pattern_preprocessing.MAP_XF].shape == list(pattern_preprocessing.MAP_SHAPE)
    assert spec[LABEL_KEY].dtype == tf.float32 and spec[PRODUCT_KEY].dtype == tf.string
    first = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(root, "train-A", "*")))))
    parsed = tf.io.parse_single_example(first, spec)
    maps, labels = data["arrays"]["train-A"]
    # The transformed example is one of the written maps, reshaped (Beam may reorder the rows).
    hits = [i for i in range(len(maps)) if np.array_equal(parsed[pattern_preprocessing.MAP_XF].numpy(), maps[i])]
    assert hits and np.array_equal(parsed[LABEL_KEY].numpy(), labels[hits[0]].astype(np.float32))
    assert parsed[PRODUCT_KEY].numpy() == b"A"


# --- Augmentation ---------------------------------------------------------------------------------


def _d4(image: np.ndarray) -> list[np.ndarray]:
    return [pattern_preprocessing.dihedral(image, k, f).numpy() for k, f in itertools.product(range(4), (0, 1))]


def test_d4_is_an_exact_permutation_of_pixels_that_keeps_each_pixels_radius():
    # Label each pixel by its index: every D4 image must hold each index exactly once, and the
    # pixel at each place must come from a place at the same distance from the wafer centre: the
    # radial structure that defines Center, Donut, Edge-Ring is unchanged.
    index = np.arange(MAP_SIZE * MAP_SIZE, dtype=np.float32).reshape(MAP_SIZE, MAP_SIZE, 1)
    centre = (MAP_SIZE - 1) / 2
    rows, cols = np.divmod(np.arange(MAP_SIZE * MAP_SIZE), MAP_SIZE)
    radius = np.hypot(rows - centre, cols - centre).reshape(MAP_SIZE, MAP_SIZE)
    images = _d4(index)
    assert len({im.tobytes() for im in images}) == 8  # eight distinct elements
    for image in images:
        source = image[..., 0].astype(np.int64)
        assert np.array_equal(np.sort(source.ravel()), np.arange(MAP_SIZE * MAP_SIZE))
        assert np.allclose(radius.ravel()[source], radius)


def test_augmented_maps_keep_their_labels_and_both_channels_move_together():
    maps, labels = make_maps(16, "A", seed=5)
    dataset = tf.data.Dataset.from_tensor_slices((maps, labels.astype(np.float32)))
    augmented = list(pattern_preprocessing.augment(dataset, seed=3))
    moved = 0
    for (image, label), original, original_label in zip(augmented, maps, labels, strict=True):
        assert np.array_equal(label.numpy(), original_label)
        # The augmented map (both channels) is one element of D4 applied to the original.
        candidates = _d4(original)
        assert any(np.array_equal(image.numpy(), c) for c in candidates)
        moved += not np.array_equal(image.numpy(), original)
    assert moved >= 8  # 7 of 8 elements move the map: most of 16 draws do
    # On-wafer disc is D4-invariant for a centred wafer: the physics of the map are kept.
    assert all(np.array_equal(c[..., 0], maps[0][..., 0]) for c in _d4(maps[0]))


# --- Model builders -------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", pattern_model.ARCHITECTURES)
def test_builders_split_backbone_and_head_and_output_float32_logits(architecture):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = pattern_model.build_pattern_model(_hp(architecture=architecture))
        assert pattern_model.backbone_blocks(model) == ["stem", "block_0", "block_1", "block_2"]
        assert pattern_model.head_layers(model) == ["head_pool", "head_dropout", "head_logits"]
        assert model.get_layer("block_0").compute_dtype == "bfloat16"
        out = model(np.zeros((3, *pattern_preprocessing.MAP_SHAPE), np.float32))
        assert out.shape == (3, len(PATTERN_CLASSES)) and out.dtype == "float32"
        assert pattern_model.hyperparameters_of(model) == {"architecture": architecture, "width": 8, "depth": 3}
    finally:
        training.reset_policy()


def test_default_hyperparameters_build_the_measured_default():
    model = pattern_model.build_pattern_model(pattern_model.get_hyperparameters())
    assert model.name == "pattern_resnet" and len(pattern_model.backbone_blocks(model)) == 4


def test_layer_scaled_adam_steps_each_variable_by_its_scale():
    # Adam's first step is lr * g / (|g| + eps) ~ lr per coordinate, whatever the gradient's size:
    # the step ratio between two variables is their scale ratio, which gradient scaling cannot give.
    a, b = keras.Variable(np.zeros(3, np.float32)), keras.Variable(np.zeros(3, np.float32))
    optimizer = pattern_trainer.LayerScaledAdam({id(a): 0.1}, learning_rate=0.01)
    optimizer.apply_gradients([(tf.constant([1.0, -2.0, 50.0]), a), (tf.constant([1.0, -2.0, 50.0]), b)])
    np.testing.assert_allclose(np.abs(a.numpy()), 0.001, rtol=1e-3)
    np.testing.assert_allclose(np.abs(b.numpy()), 0.01, rtol=1e-3)


# --- Metrics --------------------------------------------------------------------------------------


def test_none_is_scored_as_a_ninth_class():
    labels = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [0] * 8, [0] * 8, [0, 1, 0, 0, 0, 0, 0, 1]])
    predicted = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [0] * 8, [1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]])
    assert pattern_metrics.with_none(labels)[:, -1].tolist() == [0, 1, 1, 0]
    recall = pattern_metrics.per_class_recall(labels, predicted)
    assert recall["none"] == 0.5 and recall["Center"] == 1.0 and recall["Scratch"] == 0.0
    assert np.isnan(recall["Loc"])
    # F1: Center 2/3 (1 TP, 1 FP), Donut 1, none 2/3 (1 TP, 1 FN), Scratch 0 (labelled, missed); the
    # five classes neither labelled nor predicted have no F1 and are left out: mean over 4.
    assert pattern_metrics.macro_f1(labels, predicted) == pytest.approx((2 / 3 + 1 + 2 / 3 + 0) / 4)
    # The Evaluator's TFMA metrics give the same figures, fed in two batches as TFMA would.
    macro = pattern_metrics.PatternMacroF1()
    for rows in (slice(0, 1), slice(1, 4)):
        macro.update_state(labels[rows], predicted[rows])
    assert float(macro.result()) == pytest.approx(pattern_metrics.macro_f1(labels, predicted))
    for name, value in recall.items():
        metric = pattern_metrics.PatternRecall(name)
        metric.update_state(labels, predicted)
        assert float(metric.result()) == pytest.approx(value, nan_ok=True), name


def test_thresholds_are_chosen_per_class_on_validation():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 8)) < 0.2).astype(np.int64)
    probabilities = rng.random((400, 8)) * 0.3
    probabilities[:, 5] += 0.1 * labels[:, 5]  # Near-full: a weak but clean signal below 0.5
    probabilities[:, 0] = np.where(labels[:, 0] == 1, 0.9, 0.6)  # Center: clean above 0.6
    thresholds = pattern_metrics.fit_thresholds(labels, probabilities)
    assert 0.6 < thresholds[0] <= 0.9 and thresholds[5] < 0.5
    assert pattern_metrics.report(labels, probabilities, thresholds)["recall"]["Center"] == 1.0


# --- Trainer, export, Grad-CAM, transfer ---------------------------------------------------------


def _keras(serving_dir: str) -> keras.Model:
    return keras.models.load_model(os.path.join(serving_dir, pattern_trainer.KERAS_MODEL_PATH), compile=False)


def test_base_model_exports_both_signatures_with_eight_probabilities(data, base_model, tmp_path):
    maps, labels = data["arrays"]["eval-A"]
    loaded = tf.saved_model.load(base_model)
    by_example = loaded.signatures["serving_default"](
        examples=tf.constant(_serialized(maps[:20], labels[:20], tmp_path))
    )
    by_map = loaded.signatures["serve_map"](**{MAP_KEY: tf.constant(maps[:20])})
    p = by_example[pattern_trainer.PROBABILITIES_KEY].numpy()
    assert p.shape == (20, 8) and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p, by_map[pattern_trainer.PROBABILITIES_KEY].numpy(), atol=1e-6)
    thresholds = json.load(open(os.path.join(base_model, pattern_trainer.THRESHOLDS_PATH)))
    assert list(thresholds) == list(PATTERN_CLASSES)
    expected = (p >= np.array(list(thresholds.values()), np.float32)).astype(np.int64)
    assert np.array_equal(by_example[pattern_trainer.PATTERNS_KEY].numpy(), expected)
    # The base model learned the radial classes: a few hundred maps and epochs are far from the
    # benchmark's budget (macro-F1 there, benchmarks/pattern_model_choice.py), but the centre disc and
    # the edge ring are the easiest signatures and must already separate on held-out maps.
    probabilities = tf.sigmoid(_keras(base_model)(maps)).numpy()
    for name in ("Center", "Edge-Ring"):
        c = PATTERN_CLASSES.index(name)
        assert roc_auc_score(labels[:, c], probabilities[:, c]) > 0.9, name


def test_gradcam_of_a_center_map_peaks_at_the_centre(base_model):
    # A Center map's fails sit in a disc of radius ~0.2-0.3 of the wafer around the centre and the
    # rest of the wafer shows the 2% background, the same as a "none" map: the only evidence that
    # separates Center from none is at the centre, so the class's gradient-weighted activations
    # there exceed those in the outer ring (r > 0.7), where a Center and a none map look alike.
    model = _keras(base_model)
    rng = np.random.default_rng(11)

    centre = (MAP_SIZE - 1) / 2
    rows, cols = np.mgrid[0:MAP_SIZE, 0:MAP_SIZE]
    r = np.hypot(rows - centre, cols - centre) / (MAP_SIZE / 2)
    inner, outer = [], []
    for _ in range(5):
        heat, cls = gradcam.gradcam(model, draw_map(("Center",), 32, rng), PATTERN_CLASSES.index("Center"))
        assert heat.shape == (MAP_SIZE, MAP_SIZE) and heat.dtype == np.float32 and cls == 0
        inner.append(heat[r < 0.3].mean())
        outer.append(heat[(r > 0.7) & (r < 1.0)].mean())
    assert np.mean(inner) > 2 * np.mean(outer)


def _weights(model: keras.Model, names: list[str]) -> list[np.ndarray]:
    return [w for n in names for w in model.get_layer(n).get_weights()]


def _kernels(model: keras.Model, names: list[str]) -> list[np.ndarray]:
    """The convolution kernels (batch-norm scales start at 1 in any model and would correlate)."""
    return [w for w in _weights(model, names) if w.ndim == 4]


def _correlation(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    x, y = np.concatenate([w.ravel() for w in a]), np.concatenate([w.ravel() for w in b])
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.parametrize("strategy", pattern_trainer.TRANSFER_STRATEGIES)
def test_transfer_from_base_model(strategy, data, base_model, tmp_path):
    epochs = 5 if strategy == "gradual_unfreeze" else 2  # gradual: one epoch per stage (head + 4 blocks)
    # fine_tune also runs under the mixed-precision policy (mixed_bfloat16 on CPU): the per-variable
    # learning rates and the transfer of float32 weights into a bf16-computing model.
    # Another seed than the base model's: a fresh initialisation shares nothing with the base.
    config = {
        "transfer": strategy,
        "epochs": epochs,
        "patience": 5,
        "mixed_precision": strategy == "fine_tune",
        "seed": 2,
    }
    run_args = _fn_args(data, tmp_path, "B", config, base_model=base_model)
    pattern_trainer.run_fn(run_args)

    base, target = _keras(base_model), _keras(run_args.serving_model_dir)
    backbone = pattern_model.backbone_blocks(base)
    similarity = _correlation(_kernels(base, backbone), _kernels(target, backbone))
    if strategy == "feature_extraction":
        # Frozen: the backbone, moving statistics included, is the base model's, bit for bit;
        # the new head was trained.
        for a, b in zip(_weights(base, backbone), _weights(target, backbone), strict=True):
            np.testing.assert_array_equal(a, b)
        head = pattern_model.head_layers(base)
        assert not np.allclose(_weights(base, head)[0], _weights(target, head)[0])
    elif strategy == "scratch":
        assert similarity < 0.5  # fresh initialisation, unrelated to the base model
    else:
        # Trained from the base model's weights: still close to them, and every block moved.
        assert similarity > 0.9
        for name in backbone:
            assert not np.allclose(_kernels(base, [name])[0], _kernels(target, [name])[0])
    summary = json.load(open(os.path.join(run_args.model_run_dir, pattern_trainer.BUDGET_FILE)))
    assert summary["transfer"] == strategy and summary["train_examples"] == 120
    if strategy == "gradual_unfreeze":
        assert [s["trainable_blocks"] for s in summary["stages"]] == [0, 1, 2, 3, 4]

    maps, labels = data["arrays"]["eval-B"]
    served = tf.saved_model.load(run_args.serving_model_dir).signatures["serving_default"]
    p = served(examples=tf.constant(_serialized(maps[:10], labels[:10], tmp_path)))[pattern_trainer.PROBABILITIES_KEY]
    assert p.shape == (10, 8)


def test_transfer_without_base_model_is_a_clear_error(data, tmp_path):
    with pytest.raises(ValueError, match="base_model"):
        pattern_trainer.run_fn(_fn_args(data, tmp_path, "B", {"transfer": "fine_tune"}))
    with pytest.raises(FileNotFoundError, match="no pattern Keras model"):
        pattern_trainer.run_fn(_fn_args(data, tmp_path, "B", {"transfer": "fine_tune"}, str(tmp_path)))
    with pytest.raises(ValueError, match="transfer='nope'"):
        pattern_trainer.run_fn(_fn_args(data, tmp_path, "B", {"transfer": "nope"}))


def test_tuner_searches_width_depth_and_learning_rate_with_the_budget_from_the_data(data, tmp_path):
    root = data["root"]
    fn_args = FnArgs(
        train_files=[os.path.join(root, "train-B", "*")],
        eval_files=[os.path.join(root, "eval-B", "*")],
        transform_graph_path=os.path.join(root, "transform"),
        working_dir=str(tmp_path / "tuner"),
        data_accessor=_data_accessor(),
        custom_config={"max_trials": 1, "epochs": 1, "batch_size": 32},
    )
    result = pattern_trainer.tuner_fn(fn_args)
    space = {p.name for p in result.tuner.oracle.hyperparameters.space}
    assert {"width", "depth", "learning_rate"} <= space
    assert result.fit_kwargs["steps_per_epoch"] == 4  # 120 maps in batches of 32
    result.tuner.search(**result.fit_kwargs, verbose=0)
    best = result.tuner.get_best_hyperparameters()[0]
    assert best.get("width") in pattern_model.PatternHyperParameters.WIDTH_CHOICES
