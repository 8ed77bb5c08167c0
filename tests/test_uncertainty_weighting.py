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


NAN, INF = float("nan"), float("inf")


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "name, value",
    [
        ("num_tasks", 0),
        ("num_tasks", 2.5),
        ("num_tasks", "2"),
        ("num_tasks", True),
        ("initial_log_variance", "a"),
        ("initial_log_variance", "1.0"),
        ("initial_log_variance", NAN),
        ("initial_log_variance", INF),
        ("initial_log_variance", -INF),
        ("initial_log_variance", True),
        ("initial_log_variance", None),
    ],
)
def test_invalid_arguments(name, value):
    kwargs = {"num_tasks": 2, name: value}
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {name}="):
        layers.UncertaintyWeighting(**kwargs)


@pytest.mark.backend_independent
def test_valid_arguments_round_trip():
    layer = layers.UncertaintyWeighting(num_tasks=1, initial_log_variance=-3)
    assert layer.initial_log_variance == -3.0
    config = layer.get_config()
    assert layers.UncertaintyWeighting.from_config(config).get_config() == config


def test_wrong_number_of_losses():
    with pytest.raises(
        ValueError,
        match=r"`UncertaintyWeighting` \(layer '.*'\) expects a list of 2 losses",
    ):
        layers.UncertaintyWeighting(2)([np.ones(3, "float32")] * 3)
    layer = layers.UncertaintyWeighting(2)
    layer([np.ones(3, "float32")] * 2)
    with pytest.raises(ValueError, match="list of 2 losses"):
        layer([np.ones(3, "float32")])


@pytest.mark.parametrize(
    "shapes", [[(4, 1), (4,)], [(4,), (5,)], [(), (4,)], [(4, 2), (4, 3)]]
)
def test_losses_of_different_shapes_are_refused(shapes):
    """They used to broadcast silently, e.g. (4, 1) and (4,) to (4, 4)."""
    losses = [np.ones(shape, "float32") for shape in shapes]
    with pytest.raises(ValueError, match=r"expects losses of one shape"):
        layers.UncertaintyWeighting(2)(losses)
    # Also after building on equal shapes, and symbolically.
    layer = layers.UncertaintyWeighting(2)
    layer([np.ones(shapes[0], "float32")] * 2)
    with pytest.raises(ValueError, match=r"expects losses of one shape"):
        layer(losses)
    symbolic = [keras.Input(shape[1:]) for shape in shapes if shape]
    if len(symbolic) == 2 and shapes[0][1:] != shapes[1][1:]:
        with pytest.raises(ValueError, match=r"expects losses of one shape"):
            layer(symbolic)


def test_integer_losses_and_an_empty_batch():
    layer = layers.UncertaintyWeighting(2)
    ints = [np.array([1, 2], "int32"), np.array([3, 4], "int32")]
    got = layer(ints)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got),
        keras.ops.convert_to_numpy(layer([i.astype("float32") for i in ints])),
    )
    empty = layer([np.zeros((0,), "float32")] * 2)
    assert tuple(empty.shape) == (0,)


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
