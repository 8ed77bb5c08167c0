"""GradNorm: the loss against NumPy, the backend gradient norms, `model.fit`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_mtl import layers
from keras_mtl import models
from keras_mtl.backend.grad_norm import task_losses_and_grad_norms


def _np_grad_norm(losses, norms, theta, scale, loss_pow, relative_diff, eps):
    w = np.exp(theta - theta.max())
    w /= w.sum()
    wn = np.asarray(norms, np.float64) * w
    avg = wn.mean()
    diff = np.abs(wn - avg)
    if relative_diff:
        diff /= avg + eps
    return scale * np.sum(diff**loss_pow), float(np.dot(losses, w))


def _targets():
    rng = np.random.RandomState(0)
    h = rng.standard_normal((4, 3))
    t = [rng.standard_normal((4, 3)), 3.0 * rng.standard_normal((4, 3))]
    return h, t


def test_backend_gradient_norms_match_hand_computed():
    # L_0 = 0.5 ||h - t_0||^2 -> dL_0/dh = h - t_0; L_1 = sum(h * t_1) -> t_1;
    # L_2 = 7 does not depend on h -> norm 0.
    h, (t0, t1) = _targets()
    t0_k, t1_k = (keras.ops.convert_to_tensor(v, "float32") for v in (t0, t1))

    def loss_fn(shared):
        (s,) = shared
        return [
            0.5 * keras.ops.sum(keras.ops.square(s - t0_k)),
            keras.ops.sum(s * t1_k),
            keras.ops.convert_to_tensor(7.0),
        ]

    losses, norms = task_losses_and_grad_norms(
        loss_fn, [keras.ops.convert_to_tensor(h, "float32")]
    )
    np.testing.assert_allclose(
        [float(keras.ops.convert_to_numpy(v)) for v in losses],
        [0.5 * np.sum((h - t0) ** 2), np.sum(h * t1), 7.0],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(norms),
        [np.linalg.norm(h - t0), np.linalg.norm(t1), 0.0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_backend_gradient_norms_over_several_shared_tensors():
    rng = np.random.RandomState(1)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 5))
    ca, cb = rng.standard_normal((2, 3)), rng.standard_normal((2, 5))

    ca_k, cb_k = (keras.ops.convert_to_tensor(v, "float32") for v in (ca, cb))

    def loss_fn(shared):
        return [keras.ops.sum(shared[0] * ca_k) + keras.ops.sum(shared[1] * cb_k)]

    _, norms = task_losses_and_grad_norms(
        loss_fn, [keras.ops.convert_to_tensor(v, "float32") for v in (a, b)]
    )
    expected = np.sqrt(np.sum(ca**2) + np.sum(cb**2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norms), [expected], 1e-5)


@pytest.mark.parametrize(
    "scale, loss_pow, relative_diff",
    [(1.0, 2.0, False), (0.5, 1.0, False), (2.0, 3.0, True), (1.0, 2.0, True)],
)
def test_loss_matches_numpy_formula(scale, loss_pow, relative_diff):
    h, (t0, t1) = _targets()
    losses = [0.5 * np.sum((h - t0) ** 2), np.sum(h * t1), 0.25]
    norms = [np.linalg.norm(h - t0), np.linalg.norm(t1), 0.0]  # Hand-computed.
    theta = np.array([0.3, -0.2, 0.1])
    layer = layers.GradNorm(
        ["a", "b", "c"], scale=scale, loss_pow=loss_pow, relative_diff=relative_diff
    )
    layer.build(None)
    layer.grad_norm_weights.assign(theta.astype("float32"))
    gnorm, weighted = layer(
        [[np.float32(v) for v in losses], np.asarray(norms, "float32")]
    )
    want_gnorm, want_weighted = _np_grad_norm(
        losses, norms, theta, scale, loss_pow, relative_diff, 1e-6
    )
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(gnorm)), want_gnorm, 1e-5
    )
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(weighted)), want_weighted, 1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.task_weights).sum(), 1.0, 1e-6
    )


def test_uniform_weights_at_init_and_config_round_trip():
    layer = layers.GradNorm(["x", "y"], scale=0.5, loss_pow=1.5, relative_diff=True)
    layer.build(None)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.task_weights), 0.5)
    config = layer.get_config()
    assert layers.GradNorm.from_config(config).get_config() == config
    # get_weights is Keras's: the raw variables, not the softmaxed weights.
    np.testing.assert_array_equal(layer.get_weights()[0], [0.0, 0.0])


NAN, INF = float("nan"), float("inf")


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"loss_names": []}, "loss_names"),
        ({"loss_names": ["a", 1]}, "loss_names"),
        ({"loss_names": "ab"}, "loss_names='ab'"),
        ({"loss_names": ["a", "a"]}, r"distinct.*loss_names=\['a', 'a'\]"),
        ({"loss_names": ["a"], "loss_pow": 0.0}, "loss_pow=0.0"),
        ({"loss_names": ["a"], "loss_pow": NAN}, "loss_pow=nan"),
        ({"loss_names": ["a"], "loss_pow": INF}, "loss_pow=inf"),
        ({"loss_names": ["a"], "loss_pow": "2.0"}, "loss_pow='2.0'"),
        ({"loss_names": ["a"], "scale": -1.0}, "scale=-1.0"),
        ({"loss_names": ["a"], "scale": NAN}, "scale=nan"),
        ({"loss_names": ["a"], "scale": INF}, "scale=inf"),
        ({"loss_names": ["a"], "scale": "1.0"}, "scale='1.0'"),
        ({"loss_names": ["a"], "scale": True}, "scale=True"),
        ({"loss_names": ["a"], "epsilon": 0.0}, "epsilon=0.0"),
        ({"loss_names": ["a"], "epsilon": -1e-6}, "epsilon=-1e-06"),
        ({"loss_names": ["a"], "epsilon": NAN}, "epsilon=nan"),
        ({"loss_names": ["a"], "epsilon": INF}, "epsilon=inf"),
        ({"loss_names": ["a"], "epsilon": "1e-6"}, "epsilon='1e-6'"),
        ({"loss_names": ["a"], "relative_diff": 2}, "relative_diff=2"),
        ({"loss_names": ["a"], "relative_diff": "yes"}, "relative_diff='yes'"),
        ({"loss_names": ["a"], "relative_diff": None}, "relative_diff=None"),
    ],
)
def test_invalid_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.GradNorm(**kwargs)


@pytest.mark.backend_independent
def test_valid_arguments_round_trip():
    layer = layers.GradNorm(("a", "b"), scale=0, loss_pow=1, epsilon=1)
    config = layer.get_config()
    assert config["loss_names"] == ["a", "b"] and config["scale"] == 0.0
    assert layers.GradNorm.from_config(config).get_config() == config


def test_wrong_number_of_losses():
    layer = layers.GradNorm(["a", "b"])
    with pytest.raises(ValueError, match="`GradNorm` .*Expected 2 losses"):
        layer([[np.float32(1.0)], np.ones(2, "float32")])
    with pytest.raises(
        ValueError, match=r"`GradNorm` \(layer '.*'\) expects a list of 2 tensors"
    ):
        layer([np.ones(2, "float32")])
    with pytest.raises(ValueError, match=r"`losses\[1\]` a tensor of shape \(2,\)"):
        layer([[np.float32(1.0), np.ones(2, "float32")], np.ones(2, "float32")])


def test_integer_inputs_are_cast():
    layer = layers.GradNorm(["a", "b"])
    ints = [np.array([1, 2], "int32"), np.array([2, 4], "int32")]
    got = [float(keras.ops.convert_to_numpy(v)) for v in layer(ints)]
    np.testing.assert_allclose(got, [0.5, 1.5], rtol=1e-6)


def test_tensor_losses_equal_list_losses():
    losses = np.array([0.7, 2.5, 0.1], "float32")
    norms = np.array([1.5, 0.4, 3.0], "float32")
    layer = layers.GradNorm(["a", "b", "c"], loss_pow=1.5, relative_diff=True)
    layer.build(None)
    layer.grad_norm_weights.assign(np.array([0.2, -0.4, 0.1], "float32"))
    from_list = layer([[np.float32(v) for v in losses], norms])
    from_tensor = layer([keras.ops.convert_to_tensor(losses), norms])
    for a, b in zip(from_list, from_tensor, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )


@pytest.mark.parametrize(
    "losses, norms, pattern",
    [
        (
            np.ones(3, "float32"),
            np.ones(2, "float32"),
            r"`losses` a tensor of shape \(3,\)",
        ),
        (
            np.ones(1, "float32"),
            np.ones(2, "float32"),
            r"`losses` a tensor of shape \(1,\)",
        ),
        (
            np.ones(2, "float32"),
            np.ones(3, "float32"),
            r"`grad_norms` a tensor of shape \(3,\)",
        ),
        (
            np.ones(2, "float32"),
            [np.float32(1.0)] * 3,
            r"`grad_norms` a list of 3 entries",
        ),
    ],
)
def test_wrong_size_of_tensor_inputs(losses, norms, pattern):
    layer = layers.GradNorm(["a", "b"])
    with pytest.raises(ValueError, match=r"Expected 2 \w+ .*a \[2\] tensor") as err:
        layer([losses, norms])
    assert err.match(pattern)


def test_functional_model_returns_both_outputs():
    losses = keras.Input((), name="losses")
    norms = keras.Input((), name="norms")
    layer = layers.GradNorm(["a", "b"])
    model = keras.Model([losses, norms], layer([losses, norms]))
    args = [np.array([1.0, 2.0], "float32"), np.array([2.0, 4.0], "float32")]
    got = [float(keras.ops.convert_to_numpy(v)) for v in model(args)]
    want = [float(keras.ops.convert_to_numpy(v)) for v in layer(args)]
    # theta = 0: wn = [1, 2], avg 1.5, gnorm 2 * 0.25; weighted 0.5 * 3.
    np.testing.assert_allclose(want, [0.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _data(n=256):
    rng = np.random.RandomState(0)
    x = rng.standard_normal((n, 8)).astype("float32")
    y0 = x @ rng.standard_normal((8, 1)).astype("float32")
    y1 = 10.0 * np.sin(x @ rng.standard_normal((8, 1)).astype("float32"))
    return x, [y0, y1]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    shared = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu")])
    heads = [
        keras.Sequential([keras.Input((16,)), keras.layers.Dense(1)]) for _ in "ab"
    ]
    model = models.GradNormModel(
        shared, heads, ["mse", "mse"], layers.GradNorm(["a", "b"], scale=1.0)
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    return model


def test_model_bad_arguments():
    shared = keras.layers.Dense(4)
    heads = [keras.layers.Dense(1), keras.layers.Dense(1)]
    with pytest.raises(ValueError, match=r"`shared` must be a Keras layer"):
        models.GradNormModel(lambda x: x, heads, ["mse", "mse"])
    with pytest.raises(ValueError, match=r"`heads` must be a non-empty list"):
        models.GradNormModel(shared, [], [])
    with pytest.raises(ValueError, match=r"`heads` must be a non-empty list"):
        models.GradNormModel(shared, [heads[0], "dense"], ["mse", "mse"])
    with pytest.raises(ValueError, match=r"`task_losses` must hold.*'nope'"):
        models.GradNormModel(shared, heads, ["mse", "nope"])
    with pytest.raises(ValueError, match=r"same length"):
        models.GradNormModel(shared, heads, ["mse"])
    with pytest.raises(ValueError, match=r"`grad_norm` must be"):
        models.GradNormModel(shared, heads, ["mse", "mse"], grad_norm="gn")
    with pytest.raises(ValueError, match=r"one loss name per head"):
        models.GradNormModel(shared, heads, ["mse", "mse"], layers.GradNorm(["a"]))


def test_model_wrong_number_of_targets():
    x, y = _data(16)
    model = _model()
    with pytest.raises(ValueError, match=r"one target per head: 2. Received: 1"):
        model.task_losses_and_grad_norms(x, y[:1])


def test_model_fit_trains_the_task_weights():
    x, y = _data()
    model = _model()
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    theta = keras.ops.convert_to_numpy(model.grad_norm.grad_norm_weights)
    assert np.abs(theta).max() > 1e-3, theta
    # Task 1's losses (scale 10) have the larger gradient norms: its weight falls.
    weights = keras.ops.convert_to_numpy(model.grad_norm.task_weights)
    assert weights[1] < 0.5 < weights[0], weights
    assert np.isfinite(model.evaluate(x, y, verbose=0))
    preds = model.predict(x[:4], verbose=0)
    assert len(preds) == 2 and preds[0].shape == (4, 1)


def test_model_losses_and_norms_are_the_layer_inputs():
    # The norms GradNormModel feeds the layer equal hand-computed ones:
    # for a linear head v and mse, dL/dh = 2/B (h v - y) v^T.
    x, y = _data(16)
    model = _model()
    model(x[:2])
    losses, norms = model.task_losses_and_grad_norms(x, y, training=False)
    h = keras.ops.convert_to_numpy(model.shared(x)).astype(np.float64)
    for i, head in enumerate(model.heads):
        kernel, bias = (w.astype(np.float64) for w in head.get_weights())
        r = h @ kernel + bias - y[i]
        np.testing.assert_allclose(
            float(keras.ops.convert_to_numpy(losses[i])), np.mean(r**2), 1e-4
        )
        grad = 2.0 / len(x) * r @ kernel.T
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(norms)[i], np.linalg.norm(grad), 1e-4
        )


def test_model_saves_and_loads(tmp_path):
    x, y = _data(64)
    model = _model()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "grad_norm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, models.GradNormModel)
    assert loaded.get_config()["grad_norm"] == model.get_config()["grad_norm"]
    for a, b in zip(
        model.predict(x, verbose=0), loaded.predict(x, verbose=0), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.grad_norm.task_weights),
        keras.ops.convert_to_numpy(model.grad_norm.task_weights),
        atol=1e-6,
    )
    loaded.compile(optimizer=keras.optimizers.Adam(0.05))
    loaded.fit(x, y, epochs=1, batch_size=32, verbose=0)  # trains after reload
