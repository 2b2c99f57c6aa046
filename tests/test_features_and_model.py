"""The features module and the Keras model builder."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import pytest

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


def test_class_weights_and_prior_shift_restore_calibration():
    weights = training.class_weights(0.04)
    assert weights[1] / weights[0] == pytest.approx(0.96 / 0.04)
    # A model fitted with these weights predicts odds inflated by w1/w0; the shift removes it.
    true_p = 0.04
    weighted_logit = np.log(true_p / (1 - true_p)) + np.log(weights[1] / weights[0])
    assert 1 / (1 + np.exp(-(weighted_logit - training.prior_shift(weights)))) == pytest.approx(true_p)
