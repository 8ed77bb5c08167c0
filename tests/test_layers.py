"""API, bad-input errors, serialization and docstrings of the core layers."""

from __future__ import annotations

import ast
import inspect
import re

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl import activations
from keras_mtl import layers

ALL_LAYERS = [getattr(layers, name) for name in layers.__all__]


def _x(*shape):
    return np.random.RandomState(0).standard_normal(shape).astype("float32")


# --- bad input -------------------------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: layers.Dense(0), r"`units`.*Received: units=0"),
        (
            lambda: layers.Dense(3, activation="no_such"),
            r"Unknown activation.*Received: activation='no_such'",
        ),
        (
            lambda: layers.Dense(3, activation="tanh", inactive_relu_monitor=True),
            r"requires `activation='relu'`. Received: activation='tanh'",
        ),
        (
            lambda: layers.Dense(
                3,
                activation="relu",
                inactive_relu_monitor=True,
                inactive_relu_monitor_decay=0.0,
            ),
            r"inactive_relu_monitor_decay.*Received: inactive_relu_monitor_decay=0.0",
        ),
        (lambda: layers.MLP([]), r"`output_dims`.*Received: output_dims=\[\]"),
        (lambda: layers.MLP([4, -1]), r"Received: output_dims=\[4, -1\]"),
        (
            lambda: layers.MLP([4, 2], activations=["relu"]),
            r"one entry per layer. Received: 1 activations for output_dims of length 2",
        ),
        (
            lambda: layers.MLP([4], initializers=["ones", "zeros"]),
            r"Received: 2 initializers for 1 layers",
        ),
        (
            lambda: layers.AddBias(data_format="nchw"),
            r"`data_format` must be one of.*Received: data_format='nchw'",
        ),
        (lambda: layers.LayerNorm(epsilon=0.0), r"Received: epsilon=0.0"),
        (
            lambda: layers.MergeTensorList("sum"),
            r"`merge_type` must be one of.*Received: merge_type='sum'",
        ),
        (lambda: layers.MergeTensorList(num_feature=0), r"Received: num_feature=0"),
        (lambda: layers.Activation(None), r"`activation` must be.*Received: None"),
    ],
)
def test_invalid_constructor_arguments(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


@pytest.mark.parametrize(
    ("layer", "inputs", "pattern"),
    [
        (layers.Dense(2), _x(3), r"expected min_ndim=2"),
        (
            layers.SumPooling(),
            [_x(2, 3), _x(2, 4)],
            r"identical shape. Received: shape \(2, 3\) at index 0 and \(2, 4\) "
            r"at index 1",
        ),
        (layers.MaxPooling(), [], r"non-empty list"),
        (
            layers.LogitCorrection(),
            [_x(4, 1), _x(4)],
            r"same shape. Received: logits.shape=\(4, 1\), sample_rate.shape=\(4,\)",
        ),
        (
            layers.LogitCorrection(),
            [_x(4, 2, 1)],
            r"Received: logits.shape=\(4, 2, 1\)",
        ),
        (layers.LogitCorrection(), [_x(4), _x(4), _x(4)], r"Received: a list of 3"),
        (
            layers.MergeTensorList("stack", num_feature=4),
            _x(2, 6),
            r"divisible by `num_feature`. Received: shape=\(2, 6\), num_feature=4",
        ),
        (layers.MergeTensorList(), _x(2, 2, 2, 2), r"rank-2 or rank-3.*\(2, 2, 2, 2\)"),
    ],
)
def test_invalid_inputs(layer, inputs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer(inputs)


def test_dense_input_dim_mismatch_after_build():
    layer = layers.Dense(2)
    layer(_x(3, 4))
    with pytest.raises(
        ValueError, match="expected axis -1 of input shape to have value 4"
    ):
        layer(_x(3, 5))


# --- behaviour not covered by specs ------------------------------------------


def test_kernel_norm_scale_starts_at_initial_column_norms():
    for trainable in (True, False):
        layer = layers.Dense(
            3,
            allow_kernel_norm=True,
            kernel_norm_trainable=trainable,
            kernel_initializer=keras.initializers.RandomNormal(seed=1),
        )
        plain = keras.layers.Dense(3)
        x = _x(5, 4)
        y = layer(x)
        plain.build((None, 4))
        plain.set_weights(
            [keras.ops.convert_to_numpy(layer.kernel.value), np.zeros(3, "float32")]
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(y),
            keras.ops.convert_to_numpy(plain(x)),
            atol=1e-5,
        )
        assert layer.kernel_norm.trainable is trainable


def test_weight_norm_in_float16_does_not_overflow():
    # Columns of norm 20 * sqrt(512) ~ 453: their float16 sum of squares
    # (~205k) would overflow to inf and zero the normalized kernel.
    layer = layers.Dense(
        2,
        allow_kernel_norm=True,
        kernel_initializer=keras.initializers.Constant(20.0),
        dtype="mixed_float16",
    )
    y = keras.ops.convert_to_numpy(layer(np.ones((3, 512), "float32")))
    assert y.dtype == np.float16
    # Normalized columns scaled back to their initial norms give `x @ W`.
    np.testing.assert_allclose(y, np.full((3, 2), 20.0 * 512), rtol=2e-3)


def test_relu_monitor_updates_only_in_training():
    layer = layers.Dense(4, activation="relu", inactive_relu_monitor=True)
    x = _x(16, 3)
    layer(x, training=False)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.inactive_relu_moving_avg.value), 0.0
    )
    layer(x, training=True)
    assert np.any(keras.ops.convert_to_numpy(layer.inactive_relu_moving_avg.value))


def test_mlp_layer_activations_are_not_shared():
    mlp = layers.MLP([3, 3, 1], activations="prelu")
    mlp(_x(2, 4))
    alphas = [w.path for w in mlp.weights if w.path.endswith("alpha")]
    assert alphas == ["mlp/activation_0/alpha", "mlp/activation_1/alpha"]


def test_regularizers_add_losses():
    layer = layers.AddBias(regularizer="l2", initializer="ones")
    layer(_x(2, 3))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.losses[0]), 0.03, rtol=1e-6
    )


def test_pooling_accepts_tuples_and_keeps_caller_list():
    a, b = _x(2, 3), _x(2, 3) + 1
    for pooled in (layers.SumPooling()((a, b)), layers.SumPooling()([a, b])):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), a + b, rtol=1e-6)
    fields = [_x(2, 6)]
    keras_mtl.merge_tensor_list(fields, "stack", num_feature=3)
    assert fields[0].shape == (2, 6)


def test_merge_tensor_list_keep_list():
    out = keras_mtl.merge_tensor_list([_x(2, 3), _x(2, 3)], "concat", keep_list=True)
    assert isinstance(out, list) and tuple(out[0].shape) == (2, 6)


# --- activation registry -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(activations.ALL_ACTIVATION_NAMES))
def test_registry_round_trip(name):
    fn = activations.get(name.upper())
    again = activations.get(activations.serialize(fn))
    x = keras.ops.convert_to_tensor(_x(2, 5))
    if isinstance(fn, keras.layers.Layer):
        assert type(again) is type(fn)
    else:
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(again(x)),
            keras.ops.convert_to_numpy(fn(x)),
            rtol=1e-6,
        )


@pytest.mark.backend_independent
def test_registry_rejects_lambdas_and_junk():
    with pytest.raises(ValueError, match="Cannot serialize a lambda"):
        activations.serialize(lambda x: x)
    with pytest.raises(ValueError, match="Received: activation=3"):
        activations.get(3)
    assert activations.get(None) is None


def test_custom_registered_activation_round_trips():
    @keras.saving.register_keras_serializable(package="test_keras_mtl")
    def shifted_relu(x):
        return keras.activations.relu(x - 1.0)

    layer = layers.Dense(2, activation=shifted_relu)
    clone = layers.Dense.from_config(layer.get_config())
    assert clone.activation is shifted_relu


# --- serialization of every argument -------------------------------------------


def _round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    return clone


def test_every_argument_round_trips():
    _round_trip(
        layers.Dense(
            3,
            activation="sigmoid2",
            use_bias=False,
            kernel_initializer=keras.initializers.Orthogonal(gain=2.0, seed=3),
            bias_initializer="ones",
            kernel_regularizer=keras.regularizers.L1(0.1),
            bias_regularizer="l2",
            allow_kernel_norm=True,
            kernel_norm_trainable=True,
        )
    )
    _round_trip(
        layers.Dense(
            3,
            activation="relu",
            inactive_relu_monitor=True,
            inactive_relu_monitor_decay=0.5,
        )
    )
    mlp = _round_trip(
        layers.MLP(
            [4, 2],
            activations=["prelu", "sigmoid2"],
            initializers=["he_normal"],
            kernel_regularizer="l2",
            use_weight_norm=False,
            use_learnable_weight_norm=False,
            use_bias=False,
            bias_regularizer="l1",
            enable_batch_normalization=True,
            batch_normalization_momentum=0.9,
            batch_normalization_renorm=True,
            batch_normalization_renorm_clipping={"rmax": 2.0, "rmin": 0.5, "dmax": 1.0},
            batch_normalization_renorm_momentum=0.8,
            name="tower",
        )
    )
    assert mlp.name == "tower"
    _round_trip(
        layers.AddBias(
            initializer="ones", regularizer="l2", data_format="channels_first"
        )
    )
    _round_trip(layers.LayerNorm(initializer="zeros", regularizer="l1", epsilon=1e-3))
    _round_trip(layers.LogitCorrection(activation="tanh", sample_bias=True))
    _round_trip(layers.MergeTensorList(None, num_feature=3, axis=2, keep_list=True))
    _round_trip(layers.Activation("PReLU"))


def test_model_save_load_round_trip(tmp_path):
    inputs = keras.Input((6,))
    x = layers.MLP(
        [8, 4], activations=["prelu", "sigmoid2"], enable_batch_normalization=True
    )(inputs)
    x = layers.LayerNorm()(x)
    outputs = layers.Dense(1, allow_kernel_norm=True, kernel_norm_trainable=True)(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    data = _x(5, 6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(data)),
        keras.ops.convert_to_numpy(model(data)),
        atol=1e-6,
    )


# --- docstrings ----------------------------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=lambda c: c.__name__)
def test_docstring_defaults_match_signature(cls):
    doc = inspect.getdoc(cls)
    assert doc and doc.splitlines()[0].strip(), "missing one-line summary"
    assert "Args:" in doc and "Example:" in doc
    params = inspect.signature(cls.__init__).parameters
    for name, param in params.items():
        if name in ("self", "kwargs"):
            continue
        match = re.search(rf"^\s+{name}:(.*?)(?=^\s+\w+:|\Z)", doc, re.M | re.S)
        assert match, f"`{name}` is not documented"
        default = re.search(r"Defaults\s+to\s+`([^`]*)`", match.group(1))
        if param.default is inspect.Parameter.empty:
            continue
        assert default, f"`{name}` does not state its default"
        assert ast.literal_eval(default.group(1)) == param.default, (
            f"`{name}`: docstring says {default.group(1)}, signature {param.default!r}"
        )
