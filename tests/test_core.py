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
from tests._helpers import assert_bad_argument_named
from tests._helpers import bad_arguments
from tests._helpers import config_round_trip

# The public classes (`__all__` also lists functions such as `nas_masks`).
ALL_LAYERS = [
    getattr(layers, name)
    for name in layers.__all__
    if inspect.isclass(getattr(layers, name))
]


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
        (
            lambda: layers.Activation(None),
            r"`activation` must be.*Received: activation=None",
        ),
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
        (
            layers.LogitCorrection(),
            [_x(4), _x(4), _x(4)],
            r"`LogitCorrection` \(layer '.*'\) expects a list of 1 or 2 tensors. "
            r"Received: 3 tensor\(s\)",
        ),
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


# --- every constructor argument is checked ---------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_BOOLS = [2, "yes", None]

# (layer class, a valid configuration, argument, bad values)
BAD_ARGUMENTS = [
    (layers.Dense, {"units": 2}, "units", [0, 2.5, "3", True, None]),
    (layers.Dense, {"units": 2}, "activation", ["nope", 3]),
    (layers.Dense, {"units": 2}, "use_bias", BAD_BOOLS),
    (layers.Dense, {"units": 2}, "kernel_initializer", ["nope", 3]),
    (layers.Dense, {"units": 2}, "bias_initializer", ["nope"]),
    (layers.Dense, {"units": 2}, "kernel_regularizer", ["nope", 3]),
    (layers.Dense, {"units": 2}, "bias_regularizer", ["nope"]),
    (layers.Dense, {"units": 2}, "allow_kernel_norm", BAD_BOOLS),
    (layers.Dense, {"units": 2}, "kernel_norm_trainable", BAD_BOOLS),
    (layers.Dense, {"units": 2}, "inactive_relu_monitor", BAD_BOOLS),
    (
        layers.Dense,
        {"units": 2},
        "inactive_relu_monitor_decay",
        [NAN, INF, "0.1", 0.0, 1.5, True],
    ),
    (layers.MLP, {"output_dims": [4, 2]}, "output_dims", ["3", [], [4, 0], [2.5]]),
    (layers.MLP, {"output_dims": [4, 2]}, "output_dims", [True, None]),
    (layers.MLP, {"output_dims": [4, 2]}, "activations", ["nope", ["relu", "x"]]),
    (layers.MLP, {"output_dims": [4, 2]}, "initializers", ["nope", ["ones", 3]]),
    (layers.MLP, {"output_dims": [4, 2]}, "kernel_regularizer", ["nope"]),
    (layers.MLP, {"output_dims": [4, 2]}, "bias_regularizer", ["nope"]),
    (layers.MLP, {"output_dims": [4, 2]}, "use_weight_norm", BAD_BOOLS),
    (layers.MLP, {"output_dims": [4, 2]}, "use_learnable_weight_norm", BAD_BOOLS),
    (layers.MLP, {"output_dims": [4, 2]}, "use_bias", BAD_BOOLS),
    (layers.MLP, {"output_dims": [4, 2]}, "enable_batch_normalization", BAD_BOOLS),
    (layers.MLP, {"output_dims": [4, 2]}, "batch_normalization_renorm", BAD_BOOLS),
    (
        layers.MLP,
        {"output_dims": [4, 2]},
        "batch_normalization_momentum",
        [1.5, -0.1, NAN, INF, "0.9", True],
    ),
    (
        layers.MLP,
        {"output_dims": [4, 2]},
        "batch_normalization_renorm_momentum",
        [1.5, NAN, "0.9"],
    ),
    (
        layers.MLP,
        {"output_dims": [4, 2]},
        "batch_normalization_renorm_clipping",
        [
            [1.0],
            {"rmax": 2.0, "r": 1.0},
            {"rmin": 2.0, "rmax": 1.0},
            {"dmax": -1.0},
            {"dmax": NAN},
            {"rmax": "2"},
        ],
    ),
    (layers.AddBias, {}, "initializer", ["nope", 3]),
    (layers.AddBias, {}, "regularizer", ["nope"]),
    (layers.AddBias, {}, "data_format", ["nchw", None]),
    (layers.LayerNorm, {}, "initializer", ["nope"]),
    (layers.LayerNorm, {}, "regularizer", ["nope"]),
    (layers.LayerNorm, {}, "epsilon", [0.0, 0, -1e-6, NAN, INF, "1e-6", True]),
    (layers.LogitCorrection, {}, "activation", ["nope"]),
    (layers.LogitCorrection, {}, "sample_bias", BAD_BOOLS),
    (layers.MergeTensorList, {}, "merge_type", ["sum", ""]),
    (layers.MergeTensorList, {}, "num_feature", [0, 2.5, "3", True]),
    (layers.MergeTensorList, {}, "axis", [2.5, "3", True, None]),
    (layers.MergeTensorList, {}, "keep_list", BAD_BOOLS),
    (layers.Activation, {"activation": "relu"}, "activation", ["nope", 3, None]),
]


@pytest.mark.backend_independent
@pytest.mark.parametrize("cls, config, name, value", bad_arguments(BAD_ARGUMENTS))
def test_bad_argument_raises_value_error_naming_it(cls, config, name, value):
    assert_bad_argument_named(cls, config, name, value)


@pytest.mark.backend_independent
def test_valid_edge_values_are_accepted_and_round_trip():
    # "int or list of int": an int is a list of one.
    assert config_round_trip(layers.MLP(3)).output_dims == [3]
    assert layers.MLP((4, 2)).output_dims == [4, 2]
    for momentum in (0.0, 1.0, 1):
        config_round_trip(layers.MLP([2], batch_normalization_momentum=momentum))
    clipping = {"rmax": INF, "rmin": 0.0, "dmax": None}
    config_round_trip(layers.MLP([2], batch_normalization_renorm_clipping=clipping))
    assert config_round_trip(layers.LayerNorm(epsilon=1)).epsilon == 1.0
    config_round_trip(layers.MergeTensorList(axis=-1))
    config_round_trip(layers.MergeTensorList(axis=0, num_feature=None))
    # `None` initializers mean the documented defaults.
    dense = config_round_trip(
        layers.Dense(2, kernel_initializer=None, bias_initializer=None)
    )
    assert isinstance(dense.kernel_initializer, keras.initializers.GlorotUniform)
    assert isinstance(dense.bias_initializer, keras.initializers.Zeros)
    assert isinstance(layers.AddBias(initializer=None).initializer, type(_zeros()))
    assert isinstance(
        layers.LayerNorm(initializer=None).initializer, keras.initializers.Ones
    )
    config_round_trip(layers.Dense(2, activation="prelu"))
    config_round_trip(layers.LogitCorrection(activation="prelu"))


def _zeros():
    return keras.initializers.get("zeros")


# --- call inputs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "built", "bad"),
    [
        (lambda: layers.Activation("prelu"), (3, 4), (3, 5)),
        (layers.AddBias, (3, 4), (3, 5)),
        (lambda: layers.AddBias(data_format="channels_first"), (2, 3, 4), (2, 4, 4)),
        (layers.LayerNorm, (3, 4), (3, 5)),
        (lambda: layers.MLP([3, 2]), (3, 4), (3, 5)),
    ],
    ids=["activation_prelu", "add_bias", "add_bias_nchw", "layer_norm", "mlp"],
)
def test_feature_size_other_than_built_names_the_layer(make, built, bad):
    layer = make()
    layer(_x(*built))
    pattern = rf"`{type(layer).__name__}` \(layer '{layer.name}'\) expects inputs"
    with pytest.raises(ValueError, match=pattern + r".*Received: inputs of shape"):
        layer(_x(*bad))
    with pytest.raises(ValueError, match=pattern):  # Symbolic, as in a model.
        layer(keras.Input(bad[1:]))


def test_dense_feature_size_other_than_built_symbolic():
    layer = layers.Dense(2)
    layer(_x(3, 4))
    with pytest.raises(ValueError, match=r"of layer 'dense'.*value 4.*\(None, 5\)"):
        layer(keras.Input((5,)))


@pytest.mark.parametrize(
    ("make", "values"),
    [
        (lambda: layers.Activation("sigmoid"), [[0, 1, 2], [3, 4, 5]]),
        (lambda: layers.AddBias(initializer="ones"), [[0, 1, 2], [3, 4, 5]]),
        (lambda: layers.Dense(2, kernel_initializer="ones"), [[0, 1, 2], [3, 4, 5]]),
        (lambda: layers.Dense(2, activation="prelu"), [[0, -1, 2], [3, 4, -5]]),
        (layers.LayerNorm, [[0, 1, 5], [3, 4, 5]]),
        (
            lambda: layers.MLP([3, 2], enable_batch_normalization=True),
            [[0, 1, 2], [3, 4, 5]],
        ),
        (lambda: layers.LogitCorrection(sample_bias=True), ([[1], [2]], [[1], [3]])),
    ],
    ids=["activation", "add_bias", "dense", "dense_prelu", "layer_norm", "mlp", "lc"],
)
def test_integer_inputs_are_cast_to_the_compute_dtype(make, values):
    """Integer inputs give the float outputs of the same float values, on
    every backend (TensorFlow used to raise dtype errors)."""
    layer = make()
    if isinstance(values, tuple):  # A list input.
        as_float = [np.asarray(v, "float32") for v in values]
        as_int = [np.asarray(v, "int32") for v in values]
    else:
        as_float, as_int = np.asarray(values, "float32"), np.asarray(values, "int32")
    want = keras.ops.convert_to_numpy(layer(as_float))
    got = layer(as_int)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-6)


@pytest.mark.parametrize("rate", [0.0, -0.5, np.inf, np.nan])
def test_logit_correction_refuses_host_rates_outside_positive_finite(rate):
    layer = layers.LogitCorrection()
    rates = np.array([[0.5], [rate]], "float32")
    with pytest.raises(ValueError, match=r"sample rates that are finite and > 0"):
        layer([np.zeros((2, 1), "float32"), rates])


def test_logit_correction_clips_tensor_rates_to_a_finite_floor():
    """Tensor rates are not copied to the host: rates <= 0 use the smallest
    positive normal float, +inf the largest finite one (documented)."""
    layer = layers.LogitCorrection()
    rates = keras.ops.convert_to_tensor(
        np.array([[0.5], [0.0], [-2.0], [np.inf]], "float32")
    )
    got = keras.ops.convert_to_numpy(layer([keras.ops.zeros((4, 1)), rates]))
    info = np.finfo(np.float32)
    np.testing.assert_allclose(
        got[:, 0],
        [np.log(2.0), -np.log(info.tiny), -np.log(info.tiny), -np.log(info.max)],
        rtol=1e-6,
    )
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize(
    ("layer", "inputs", "pattern"),
    [
        (layers.MergeTensorList(axis=5), [_x(2, 3), _x(2, 3)], r"axis in \[-2, 1\]"),
        (
            layers.MergeTensorList("stack", axis=-4),
            [_x(2, 3), _x(2, 3)],
            r"axis in \[-3, 2\].*Received: axis=-4",
        ),
        (
            layers.MergeTensorList("stack"),
            [_x(2, 3), _x(2, 4)],
            r"shapes identical. Received: shape \(2, 3\) at index 0 and \(2, 4\)",
        ),
        (
            layers.MergeTensorList(axis=0),
            [_x(2, 3), _x(2, 4)],
            r"equal except on axis 0. Received: shape \(2, 3\)",
        ),
        (layers.MergeTensorList(), [_x(2, 3), _x(2, 3, 1)], r"equal except on axis 1"),
        (layers.MergeTensorList(None, axis=3), _x(2, 3, 4), r"axis in \[-3, 2\]"),
        (layers.MergeTensorList(), [], r"at least one tensor"),
    ],
)
def test_merge_tensor_list_bad_inputs_name_the_layer(layer, inputs, pattern):
    with pytest.raises(
        ValueError, match=rf"`MergeTensorList` \(layer '.*'\).*{pattern}"
    ):
        layer(inputs)


def test_merge_tensor_list_keeps_integer_dtypes():
    ints = np.arange(6, dtype="int32").reshape(2, 3)
    out = layers.MergeTensorList()([ints, ints])
    assert keras.backend.standardize_dtype(out.dtype) == "int32"


def test_pooling_dtypes_are_the_same_on_every_backend():
    ints = np.arange(6, dtype="int32").reshape(2, 3)
    for cls, dtype in [
        (layers.SumPooling, "int32"),
        (layers.MaxPooling, "int32"),
        (layers.AvgPooling, "float32"),
    ]:
        out = cls()([ints, ints + 1])
        assert keras.backend.standardize_dtype(out.dtype) == dtype, cls


# --- an empty batch -------------------------------------------------------------


def _empty(*shape):
    return np.zeros((0, *shape), "float32")


# Every layer of this file's modules and of the multi-task modules, with a batch
# of size 0 (GradNorm has no batch axis: its inputs are one value per task).
EMPTY_BATCH = [
    ("activation_prelu", lambda: layers.Activation("prelu"), lambda: _empty(3)),
    ("add_bias", layers.AddBias, lambda: _empty(3)),
    (
        "add_bias_nchw",
        lambda: layers.AddBias(data_format="channels_first"),
        lambda: _empty(3, 2),
    ),
    ("dense_prelu", lambda: layers.Dense(2, activation="prelu"), lambda: _empty(3)),
    (
        "dense_monitor",
        lambda: layers.Dense(2, activation="relu", inactive_relu_monitor=True),
        lambda: _empty(3),
    ),
    ("layer_norm", layers.LayerNorm, lambda: _empty(3)),
    (
        "mlp_batch_norm",
        lambda: layers.MLP(
            [4, 2], activations="prelu", enable_batch_normalization=True
        ),
        lambda: _empty(3),
    ),
    ("logit_correction", layers.LogitCorrection, lambda: [_empty(1), _empty(1)]),
    ("merge_concat", layers.MergeTensorList, lambda: [_empty(2), _empty(3)]),
    ("merge_stack", lambda: layers.MergeTensorList("stack"), lambda: [_empty(2)] * 2),
    (
        "merge_split",
        lambda: layers.MergeTensorList(None, num_feature=2),
        lambda: _empty(4),
    ),
    ("sum_pooling", layers.SumPooling, lambda: [_empty(3)] * 2),
    ("avg_pooling", layers.AvgPooling, lambda: [_empty(3)] * 2),
    ("max_pooling", layers.MaxPooling, lambda: [_empty(3)] * 3),
    (
        "mmoe_noise_topk_batch_norm",
        lambda: layers.MMoE(
            2,
            [4, 3],
            "relu",
            num_experts=3,
            gate_type="noise_topk",
            top_k=2,
            enable_batch_normalization=True,
        ),
        lambda: _empty(5),
    ),
    (
        "mmoe_per_expert",
        lambda: layers.MMoE(2, [[4, 3], [3]], "relu"),
        lambda: [_empty(5), _empty(2)],
    ),
    (
        "cgc",
        lambda: layers.CGC(2, [3], shared_output=True, return_gates=True),
        lambda: _empty(4),
    ),
    ("ple", lambda: layers.PLE(2, [4, 3], return_gates=True), lambda: _empty(4)),
    ("snr", lambda: layers.SNR(2, 3, use_ste=True), lambda: [_empty(4)] * 3),
    (
        "uncertainty_weighting",
        lambda: layers.UncertaintyWeighting(2),
        lambda: [_empty()] * 2,
    ),
]


@pytest.mark.parametrize(
    ("make", "inputs"),
    [pytest.param(m, i, id=name) for name, m, i in EMPTY_BATCH],
)
@pytest.mark.parametrize("training", [False, True])
def test_an_empty_batch_gives_an_empty_output(make, inputs, training):
    """Batch size 0: empty outputs, finite losses and no NaN in any weight
    (batch-norm statistics and the ReLU monitor are not updated)."""
    layer = make()
    outputs = keras.tree.flatten(layer(inputs(), training=training))
    assert outputs
    for output in outputs:
        assert tuple(output.shape)[0] == 0, output.shape
    for loss in layer.losses:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(loss)))
    for weight in layer.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(weight.value))), weight


# --- Dense(activation="prelu") ----------------------------------------------------


def test_dense_prelu_weight_exists_after_build_with_a_stable_path():
    inputs = keras.Input((4,))
    first, second = layers.Dense(3, activation="prelu"), layers.Dense(3, "prelu")
    model = keras.Model(inputs, second(first(inputs)))
    # kernel 4*3 + bias 3 + alpha 3, then 3*3 + 3 + 3: no weight appears late.
    assert model.count_params() == 18 + 15
    assert [w.path for w in model.weights if w.path.endswith("alpha")] == [
        f"{first.name}/activation/alpha",
        f"{second.name}/activation/alpha",
    ]
    single = keras.Model(inputs, layers.Dense(3, activation="prelu")(inputs))
    assert single.count_params() == 18
    layer = layers.Dense(3, activation="prelu")
    layer.build((None, 4))
    assert sorted(w.path.split("/", 1)[1] for w in layer.weights) == [
        "activation/alpha",
        "bias",
        "kernel",
    ]
    # A layer activation passed as an instance is copied, never shared.
    prelu = keras.layers.PReLU()
    a, b = layers.Dense(2, activation=prelu), layers.Dense(2, activation=prelu)
    assert a.activation is not b.activation and a.activation is not prelu


def test_dense_prelu_saves_and_loads(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(3, activation="prelu")(inputs))
    alpha = next(w for w in model.weights if w.path.endswith("alpha"))
    alpha.assign(np.array([0.1, 0.2, 0.3], "float32"))
    path = tmp_path / "dense_prelu.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    data = -np.abs(_x(5, 4))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(data)),
        keras.ops.convert_to_numpy(model(data)),
        atol=1e-6,
    )


def test_logit_correction_prelu_weight_exists_after_build():
    layer = layers.LogitCorrection(activation="prelu")
    layer.build([(None, 1), (None, 1)])
    assert [w.path for w in layer.weights] == [f"{layer.name}/activation/alpha"]


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

    clone = config_round_trip(layers.Dense(2, activation=shifted_relu))
    assert clone.activation is shifted_relu


# --- serialization of every argument -------------------------------------------


def test_every_argument_round_trips():
    config_round_trip(
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
    config_round_trip(
        layers.Dense(
            3,
            activation="relu",
            inactive_relu_monitor=True,
            inactive_relu_monitor_decay=0.5,
        )
    )
    mlp = config_round_trip(
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
    config_round_trip(
        layers.AddBias(
            initializer="ones", regularizer="l2", data_format="channels_first"
        )
    )
    config_round_trip(
        layers.LayerNorm(initializer="zeros", regularizer="l1", epsilon=1e-3)
    )
    config_round_trip(layers.LogitCorrection(activation="tanh", sample_bias=True))
    config_round_trip(
        layers.MergeTensorList(None, num_feature=3, axis=2, keep_list=True)
    )
    config_round_trip(layers.Activation("PReLU"))


@pytest.mark.backend_independent
def test_batch_norm_weights_keep_the_paths_of_keras_batch_norm(tmp_path):
    # A `.keras` file stores the layers of a list under their class names
    # (`batch_norms/batch_normalization`), so the MLP's own
    # `BatchNormalization` keeps Keras's name: files saved when the MLP used
    # `keras.layers.BatchNormalization` load, and the other way round.
    import h5py

    mlp = layers.MLP([3, 2, 1], enable_batch_normalization=True)
    model = keras.Sequential([keras.Input((4,)), mlp])
    assert all(
        isinstance(bn, keras.layers.BatchNormalization) for bn in mlp.batch_norms
    )
    path = tmp_path / "mlp.weights.h5"
    model.save_weights(path)
    with h5py.File(path) as f:
        stored = []
        f.visit(lambda name: stored.append(name) if name.endswith("vars") else None)
    assert [n for n in stored if "batch" in n] == [
        "layers/mlp/batch_norm_in/vars",
        "layers/mlp/batch_norms/batch_normalization/vars",
        "layers/mlp/batch_norms/batch_normalization_1/vars",
    ]


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


@pytest.mark.backend_independent
def test_all_lists_every_export_once():
    """`keras_mtl.layers.__all__` is the module's whole public surface (the
    family sub-packages aside)."""
    exported = {
        name
        for name, value in vars(layers).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(layers.__all__) == sorted(exported)
    assert len(set(layers.__all__)) == len(layers.__all__)
