"""UncertaintyWeighting: formula, arguments and training to s_i = log(L_i)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_mtl import layers


def test_forward_matches_formula():
    layer = layers.UncertaintyWeighting(2)
    layer.build(None)
    layer.log_variances.assign(np.array([0.3, -0.7], "float32"))
    l0, l1 = np.array([1.0, 2.0], "float32"), np.array([0.5, 4.0], "float32")
    want = np.exp(-0.3) * l0 + 0.3 + np.exp(0.7) * l1 - 0.7
    got = keras.ops.convert_to_numpy(layer([l0, l1]))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_config_round_trip():
    layer = layers.UncertaintyWeighting(3, initial_log_variance=0.5)
    config = layer.get_config()
    assert layers.UncertaintyWeighting.from_config(config).get_config() == config
    layer.build(None)
    np.testing.assert_allclose(layer.get_weights()[0], [0.5] * 3)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"num_tasks": 0}, "num_tasks=0"),
        ({"num_tasks": 2, "initial_log_variance": "a"}, "initial_log_variance"),
    ],
)
def test_invalid_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.UncertaintyWeighting(**kwargs)


def test_wrong_number_of_losses():
    with pytest.raises(ValueError, match="list of 2 losses"):
        layers.UncertaintyWeighting(2)([np.ones(3, "float32")] * 3)


def test_fit_drives_log_variances_to_log_losses():
    # With fixed losses L_i the objective exp(-s) L + s is minimal at log L.
    means = np.array([0.2, 5.0])
    rng = np.random.RandomState(0)
    data = [m * rng.uniform(0.5, 1.5, size=(256,)).astype("float32") for m in means]
    inputs = [keras.Input(()), keras.Input(())]
    uw = layers.UncertaintyWeighting(2)
    model = keras.Model(inputs, uw(inputs))
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=lambda y_true, y_pred: keras.ops.mean(y_pred),
    )
    model.fit(data, np.zeros(256, "float32"), epochs=40, batch_size=64, verbose=0)
    s = keras.ops.convert_to_numpy(uw.log_variances)
    np.testing.assert_allclose(s, np.log([d.mean() for d in data]), atol=0.1)
