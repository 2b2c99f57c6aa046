"""The features module and the Keras model builder."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import pytest

from models import features, model, training


def test_model_features_exclude_label_oracle_and_ids():
    assert features.LABEL_KEY not in features.MODEL_FEATURES
    assert features.ORACLE_KEY not in features.MODEL_FEATURES
    assert not set(features.ID_FEATURES) & set(features.MODEL_FEATURES)
    assert len(set(features.MODEL_FEATURES)) == len(features.MODEL_FEATURES)
    assert features.transformed_name("site") == "site_xf"


def _batch(n: int = 8) -> dict:
    rng = np.random.default_rng(0)
    batch = {name: rng.normal(size=(n, 1)).astype("float32") for name in features.DENSE_XF}
    batch[features.transformed_name(features.SITE_KEY)] = rng.integers(0, 5, (n, 1))
    batch[features.transformed_name(features.ZONE)] = rng.integers(0, features.N_ZONES, (n, 1))
    return batch


def test_default_model_is_128_64_32_and_outputs_one_logit():
    m = model.build_model(model.get_hyperparameters(), site_vocab_size=4)
    widths = [m.get_layer(f"dense_{i}").units for i in range(3)]
    assert widths == [128, 64, 32]
    assert m.predict(_batch(), verbose=0).shape == (8, 1)


def test_hyperparameters_shape_the_model():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("units", 64)
    hp.Fixed("depth", 2)
    hp.Fixed("dropout", 0.0)
    hp.Fixed("learning_rate", 1e-3)
    m = model.build_model(hp, site_vocab_size=4)
    hidden = [layer.units for layer in m.layers if isinstance(layer, keras.layers.Dense) and layer.name != "logit"]
    assert hidden == [64, 32]


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_mixed_precision_computes_low_precision_and_outputs_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        m = model.build_model(model.get_hyperparameters(), site_vocab_size=4)
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
