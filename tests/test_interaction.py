"""Unit tests for the feature-interaction layers (run with each KERAS_BACKEND)."""

from __future__ import annotations

import inspect
import re
import typing

import keras
import numpy as np
import pytest

from keras_mtl import activations
from keras_mtl import layers
from tests._helpers import config_round_trip
from tests._helpers import to_numpy

RNG = np.random.default_rng(1234)


# --- DCN ---------------------------------------------------------------------


def test_dcn_mixed_requires_low_rank():
    with pytest.raises(ValueError, match=r"dcn_type='mixed' with low_rank=None"):
        layers.DCN(dcn_type="mixed")
    with pytest.raises(ValueError, match=r"low_rank=0"):
        layers.DCN(dcn_type="mixed", low_rank=0)
    with pytest.raises(ValueError, match=r"low_rank=-2"):
        layers.DCN(dcn_type="mixed", low_rank=-2)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"dcn_type": "cross"}, r"dcn_type='cross'"),
        ({"layer_num": 0}, r"layer_num=0"),
        ({"num_experts": 0}, r"num_experts=0"),
        ({"keep_prob": 0.0}, r"keep_prob=0.0"),
        ({"keep_prob": 1.5}, r"keep_prob=1.5"),
        ({"low_rank_activation": "nope"}, r"activation='nope'"),
        ({"low_rank": "2"}, r"low_rank='2'"),
        ({"dcn_type": "vector", "low_rank": 2}, r"not 'vector'.*low_rank=2"),
        ({"dcn_type": "matrix", "low_rank": -1}, r"low_rank=-1"),
    ],
)
def test_dcn_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.DCN(**kwargs)


def test_dcn_bad_input_rank():
    with pytest.raises(ValueError, match=r"input_shape=\(4,\)"):
        layers.DCN().build((4,))
    with pytest.raises(ValueError, match=r"static last dimension"):
        layers.DCN().build((2, None))


def test_dcn_mismatched_input_dim_after_build():
    layer = layers.DCN()
    layer(np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError):
        layer(np.zeros((2, 5), "float32"))


def test_dcn_config_roundtrip_every_argument():
    kwargs = {
        "layer_num": 3,
        "dcn_type": "mixed",
        "initializer": "he_normal",
        "regularizer": "l2",
        "num_experts": 4,
        "low_rank": 3,
        "allow_kernel_norm": True,
        "use_dropout": True,
        "keep_prob": 0.7,
        "share_gates": True,
        "low_rank_activation": "relu",
    }
    layer = layers.DCN(**kwargs)
    config = layer.get_config()
    for key in ("layer_num", "dcn_type", "num_experts", "low_rank"):
        assert config[key] == kwargs[key]
    assert config["keep_prob"] == pytest.approx(0.7)
    assert config["allow_kernel_norm"] and config["use_dropout"]
    assert config["share_gates"]
    assert config["initializer"]["class_name"] == "HeNormal"
    assert config["regularizer"] is not None
    clone = config_round_trip(layer, kwargs)
    assert activations.name_of(clone.low_rank_activation) == "relu"


def test_dcn_defaults():
    layer = layers.DCN()
    assert layer.dcn_type == "matrix" and layer.layer_num == 1
    assert layer.get_config()["initializer"]["class_name"] == "GlorotNormal"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dcn_type": "vector"},
        {"dcn_type": "matrix"},
        {"dcn_type": "mixed", "low_rank": 2, "num_experts": 3},
    ],
)
def test_dcn_dropout_only_in_training(kwargs):
    x = RNG.normal(size=(8, 6)).astype("float32")
    plain = layers.DCN(layer_num=2, **kwargs)
    dropped = layers.DCN(layer_num=2, use_dropout=True, keep_prob=0.5, **kwargs)
    plain(x)
    dropped(x)
    dropped.set_weights(plain.get_weights())
    want = to_numpy(plain(x))
    np.testing.assert_allclose(to_numpy(dropped(x)), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(dropped(x, training=False)), want, rtol=1e-6, atol=1e-6
    )
    train = to_numpy(dropped(x, training=True))
    assert np.any(np.abs(train - want) > 1e-3)
    # Inverted dropout zeroes some entries of the last layer's output.
    assert np.any(train == 0.0)


def test_dcn_mixed_gates_are_live():
    """The gate kernel changes the output (it is dead in the reference code)."""
    x = RNG.normal(size=(4, 5)).astype("float32")
    layer = layers.DCN(dcn_type="mixed", low_rank=2, num_experts=3)
    before = to_numpy(layer(x))
    gate = next(v for v in layer.weights if "gate_kernel" in v.path)
    gate.assign(to_numpy(gate.value) + RNG.normal(size=gate.shape).astype("float32"))
    assert np.max(np.abs(to_numpy(layer(x)) - before)) > 1e-4


@pytest.mark.parametrize("low_rank", [None, 0])
def test_dcn_matrix_full_rank_when_low_rank_unset(low_rank):
    layer = layers.DCN(low_rank=low_rank)
    layer(np.zeros((1, 4), "float32"))
    assert sorted(v.path.split("/")[-1] for v in layer.weights) == [
        "bias_0",
        "kernel_0",
    ]


def test_dcn_matrix_low_rank_weights_and_formula():
    """W = D @ P is never formed; the result equals the full-rank layer's."""
    x = RNG.normal(size=(6, 5)).astype("float32")
    low = layers.DCN(layer_num=2, low_rank=2, allow_kernel_norm=True)
    low(x)
    assert [v.path.split("/")[-1] for v in low.weights] == [
        "down_kernel_0",
        "down_kernel_0_norm",
        "up_kernel_0",
        "up_kernel_0_norm",
        "bias_0",
        "down_kernel_1",
        "down_kernel_1_norm",
        "up_kernel_1",
        "up_kernel_1_norm",
        "bias_1",
    ]
    assert tuple(low.weights[0].shape) == (5, 2)
    assert tuple(low.weights[2].shape) == (2, 5)
    full = layers.DCN(layer_num=2)
    full(x)
    values = {v.path.split("/")[-1]: to_numpy(v.value) for v in low.weights}
    for i in range(2):

        def normed(name):
            w = values[name]
            g = values[f"{name}_norm"]
            return w / np.sqrt(np.maximum((w * w).sum(0, keepdims=True), 1e-6)) * g

        w = normed(f"down_kernel_{i}") @ normed(f"up_kernel_{i}")
        full.weights[2 * i].assign(w)
        full.weights[2 * i + 1].assign(values[f"bias_{i}"] + 0.1 * (i + 1))
        low.weights[5 * i + 4].assign(values[f"bias_{i}"] + 0.1 * (i + 1))
    np.testing.assert_allclose(
        to_numpy(low(x)), to_numpy(full(x)), rtol=1e-5, atol=1e-5
    )


def test_dcn_single_expert_has_no_gate():
    layer = layers.DCN(dcn_type="mixed", low_rank=2, num_experts=1)
    layer(np.zeros((1, 4), "float32"))
    assert not any("gate" in v.path for v in layer.weights)


@pytest.mark.parametrize("act", [None, "linear", "tanh"])
def test_dcn_single_expert_matches_formula(act):
    """One expert (its own code path; C folded into V when g is linear)."""
    x = RNG.normal(size=(3, 2, 5)).astype("float32")
    layer = layers.DCN(
        dcn_type="mixed",
        low_rank=2,
        num_experts=1,
        layer_num=2,
        allow_kernel_norm=True,
        low_rank_activation=act,
    )
    layer(x)
    for v in layer.weights:
        v.assign(RNG.normal(size=v.shape, scale=0.5).astype("float32"))
    w = {v.path.split("/")[-1]: to_numpy(v.value) for v in layer.weights}

    def kernel(name):
        k = w[name]
        return (
            w[f"{name}_norm"][..., None, :] * k / np.sqrt((k**2).sum(-2, keepdims=True))
        )

    g = np.tanh if act == "tanh" else (lambda h: h)
    xl = x
    for i in range(2):
        u, v, c = (kernel(f"{n}_kernel_{i}")[0] for n in "uvc")
        xl = x * (g(g(xl @ v) @ c) @ u.T + w[f"bias_{i}"]) + xl
    np.testing.assert_allclose(to_numpy(layer(x)), xl, rtol=1e-4, atol=1e-5)


def test_dcn_share_gates_creates_one_gate():
    layer = layers.DCN(
        dcn_type="mixed", low_rank=2, num_experts=2, layer_num=3, share_gates=True
    )
    layer(np.zeros((1, 4), "float32"))
    gates = [v.path for v in layer.weights if "gate" in v.path]
    assert len(gates) == 1


def test_dcn_kernel_norm_not_on_bias_and_fresh_identity():
    x = RNG.normal(size=(3, 4)).astype("float32")
    raw = layers.DCN(layer_num=2, initializer=keras.initializers.GlorotNormal(seed=1))
    normed = layers.DCN(
        layer_num=2,
        allow_kernel_norm=True,
        initializer=keras.initializers.GlorotNormal(seed=1),
    )
    raw(x)
    normed(x)
    paths = [v.path.split("/")[-1] for v in normed.weights]
    assert "bias_0_norm" not in paths and "kernel_0_norm" in paths
    # g starts at the column norms, so a fresh layer matches the raw one.
    np.testing.assert_allclose(
        to_numpy(normed(x)), to_numpy(raw(x)), rtol=1e-5, atol=1e-5
    )


def test_dcn_regularizer_only_on_kernels():
    layer = layers.DCN(dcn_type="mixed", low_rank=2, num_experts=2, regularizer="l2")
    layer(np.ones((1, 3), "float32"))
    # u, v, c and gate kernels: four regularization losses, none for the bias.
    assert len(layer.losses) == 4


def test_dcn_layer_activation_follows_dtype_policy():
    layer = layers.DCN(
        dcn_type="mixed",
        low_rank=2,
        num_experts=2,
        low_rank_activation="relu",
        dtype="mixed_float16",
    )
    y = layer(RNG.normal(size=(2, 4)).astype("float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "float16"


# --- CIN ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"hidden_uints": []}, r"hidden_uints=\[\]"),
        ({"hidden_uints": [3, 0]}, r"hidden_uints=\[3, 0\]"),
        ({"hidden_uints": [3, 2], "split_half": True}, r"hidden_uints=\[3, 2\]"),
        ({"hidden_uints": [2], "activation": "bogus"}, r"activation='bogus'"),
    ],
)
def test_cin_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.CIN(**kwargs)


def test_cin_split_half_odd_last_layer_is_fine():
    layer = layers.CIN([4, 3], split_half=True)
    assert tuple(layer(np.zeros((2, 3, 2), "float32")).shape) == (2, 5)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 4, 5)])
def test_cin_bad_input_rank(shape):
    with pytest.raises(ValueError, match=r"input_shape="):
        layers.CIN([2]).build(shape)


def test_cin_mismatched_field_dims_after_build():
    layer = layers.CIN([2])
    layer(np.zeros((2, 3, 4), "float32"))
    with pytest.raises(ValueError):
        layer(np.zeros((2, 4, 4), "float32"))


def test_cin_config_roundtrip_every_argument():
    kwargs = {
        "hidden_uints": [4, 2],
        "activation": "relu",
        "initializer": "he_uniform",
        "regularizer": "l2",
        "split_half": True,
        "activate_last_layer": True,
    }
    layer = layers.CIN(**kwargs)
    config = layer.get_config()
    assert config["hidden_uints"] == [4, 2]
    assert config["split_half"] and config["activate_last_layer"]
    assert config["initializer"]["class_name"] == "HeUniform"
    config_round_trip(layer, kwargs)


def test_cin_output_width_and_relu_dtype_policy():
    layer = layers.CIN([4, 2], activation="relu", dtype="mixed_bfloat16")
    y = layer(RNG.normal(size=(3, 5, 2)).astype("float32"))
    assert tuple(y.shape) == (3, 6)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"


# --- AutoInt -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"layer_num": 0}, r"layer_num=0"),
        ({"out_type": "sum"}, r"out_type='sum'"),
        ({"attention_units": 0}, r"attention_units=0"),
        ({"head_num": 2}, r"head_num=2 with attention_units=None"),
        ({"head_num": 0, "attention_units": 2}, r"head_num=0"),
    ],
)
def test_autoint_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.AutoInt(**kwargs)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 4, 5), (2, None, 4)])
def test_autoint_bad_input_shape(shape):
    with pytest.raises(ValueError, match=r"input_shape="):
        layers.AutoInt().build(shape)


def test_autoint_default_has_no_weights_and_matches_manual():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    layer = layers.AutoInt(out_type="stack")
    y = to_numpy(layer(x))
    assert not layer.weights
    logits = np.einsum("bfd,bgd->bfg", x, x)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    np.testing.assert_allclose(y, a @ x, rtol=1e-5, atol=1e-5)


def test_autoint_paper_form_weights_and_shapes():
    layer = layers.AutoInt(
        layer_num=2, attention_units=3, head_num=2, use_residual=True, use_relu=True
    )
    y = layer(np.zeros((2, 4, 5), "float32"))
    assert tuple(y.shape) == (2, 4 * 6)
    shapes = {v.path.split("/")[-1]: tuple(v.shape) for v in layer.weights}
    assert shapes["query_kernel_0"] == (5, 6)
    assert shapes["residual_kernel_1"] == (6, 6)
    assert len(shapes) == 8


def test_autoint_list_output():
    out = layers.AutoInt(out_type=None)(np.zeros((2, 3, 4), "float32"))
    assert isinstance(out, list) and len(out) == 3
    assert tuple(out[0].shape) == (2, 4)


def test_autoint_config_roundtrip_every_argument():
    kwargs = {
        "layer_num": 2,
        "out_type": "stack",
        "keep_list": True,
        "attention_units": 4,
        "head_num": 3,
        "use_residual": True,
        "use_relu": True,
        "scaling": True,
        "initializer": "he_normal",
        "regularizer": "l1",
    }
    layer = layers.AutoInt(**kwargs)
    config = layer.get_config()
    for key in ("layer_num", "out_type", "keep_list", "attention_units", "head_num"):
        assert config[key] == kwargs[key]
    assert config["use_residual"] and config["use_relu"] and config["scaling"]
    config_round_trip(layer, kwargs)


# --- SeNet -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"num_feature": 0, "cmp_dim": 2}, r"num_feature=0"),
        ({"num_feature": 3, "cmp_dim": 0}, r"cmp_dim=0"),
        ({"num_feature": 3, "cmp_dim": 2, "out_type": "add"}, r"out_type='add'"),
    ],
)
def test_senet_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.SeNet(**kwargs)


def test_senet_cmp_dim_is_required():
    with pytest.raises(TypeError):
        layers.SeNet(num_feature=3)  # pylint: disable=no-value-for-parameter


@pytest.mark.parametrize(
    "shape, pattern",
    [
        ((2, 4, 3), r"num_feature=3.*input_shape=\(2, 4, 3\)"),
        ((2, 9), r"input_shape=\(2, 9\)"),
        ([(2, 3), (2, 3)], r"num_feature=3 tensors. Received: 2 tensors"),
        ([(2, 3), (2, 3, 1), (2, 2)], r"rank-2"),
    ],
)
def test_senet_bad_input_shapes(shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.SeNet(3, 2).build(shape)


def test_senet_stack_needs_equal_widths():
    with pytest.raises(ValueError, match=r"out_type='stack' with shapes="):
        layers.SeNet(2, None, out_type="stack").build([(2, 3), (2, 4)])


def test_senet_list_and_tuple_inputs_of_different_widths():
    fields = [RNG.normal(size=(4, d)).astype("float32") for d in (2, 5, 1)]
    layer = layers.SeNet(3, 2)
    y = layer(fields)
    assert tuple(y.shape) == (4, 8)
    np.testing.assert_allclose(to_numpy(layer(tuple(fields))), to_numpy(y), rtol=1e-6)
    parts = layers.SeNet(3, None, out_type=None)(fields)
    assert [tuple(p.shape) for p in parts] == [(4, 2), (4, 5), (4, 1)]
    # cmp_dim=None: each field is scaled by its own mean.
    for p, x in zip(parts, fields, strict=True):
        np.testing.assert_allclose(
            to_numpy(p), x * x.mean(-1, keepdims=True), rtol=1e-5, atol=1e-6
        )


def test_senet_weights_in_unit_interval_with_tower():
    x = RNG.normal(size=(5, 3, 4)).astype("float32")
    y = to_numpy(layers.SeNet(3, 2, out_type="stack")(x))
    ratio = y / x
    assert np.all(ratio > 0) and np.all(ratio < 1)


def test_senet_config_roundtrip_every_argument():
    kwargs = {
        "num_feature": 4,
        "cmp_dim": 2,
        "initializer": "he_normal",
        "regularizer": "l2",
        "on_gpu": True,
        "out_type": None,
        "keep_list": True,
    }
    layer = layers.SeNet(**kwargs)
    config = layer.get_config()
    assert config["num_feature"] == 4 and config["cmp_dim"] == 2
    assert config["on_gpu"] and config["keep_list"] and config["out_type"] is None
    config_round_trip(layer, kwargs)
    config_round_trip(layers.SeNet(3, None), {"cmp_dim": None})


# --- AllInt ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"cmp_dim": 0}, r"cmp_dim=0"),
        ({"cmp_dim": None}, r"cmp_dim=None"),
        ({"cmp_dim": 2, "out_type": "mean"}, r"out_type='mean'"),
    ],
)
def test_allint_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.AllInt(**kwargs)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 4, 5), (2, None, 4)])
def test_allint_bad_input_shape(shape):
    with pytest.raises(ValueError, match=r"input_shape="):
        layers.AllInt(2).build(shape)


def test_allint_mismatched_fields_after_build():
    layer = layers.AllInt(2)
    layer(np.zeros((2, 3, 4), "float32"))
    with pytest.raises(ValueError):
        layer(np.zeros((2, 5, 4), "float32"))


def test_allint_matches_manual_formula():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    layer = layers.AllInt(2, use_bias=False, out_type="stack")
    y = to_numpy(layer(x))
    c = to_numpy(layer.allint_kernel.value)
    np.testing.assert_allclose(
        y, np.einsum("bfd,bgd->bfg", x, x) @ c, rtol=1e-4, atol=1e-5
    )


def test_allint_config_roundtrip_every_argument():
    kwargs = {
        "cmp_dim": 3,
        "initializer": "he_normal",
        "regularizer": "l2",
        "use_bias": False,
        "out_type": "stack",
        "keep_list": True,
    }
    layer = layers.AllInt(**kwargs)
    config = layer.get_config()
    assert config["cmp_dim"] == 3 and not config["use_bias"]
    assert config["out_type"] == "stack" and config["keep_list"]
    config_round_trip(layer, kwargs)


# --- CDot --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"project_dim": 0, "compress_units": [2]}, r"project_dim=0"),
        ({"project_dim": 2, "compress_units": [2, 0]}, r"compress_units=\[2, 0\]"),
        ({"project_dim": 2, "compress_units": "4"}, r"compress_units='4'"),
        ({"project_dim": 2, "compress_units": [], "activation": "x"}, r"'x'"),
    ],
)
def test_cdot_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.CDot(**kwargs)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 4, 5), (2, 3, None)])
def test_cdot_bad_input_shape(shape):
    with pytest.raises(ValueError, match=r"input_shape="):
        layers.CDot(2, [3]).build(shape)


def test_cdot_output_width_and_weight_paths():
    layer = layers.CDot(project_dim=3, compress_units=[5])
    y = layer(np.ones((2, 4, 2), "float32"))
    assert tuple(y.shape) == (2, 4 * 3 + 2 * 3)
    paths = sorted(v.path.split("/", 1)[1] for v in layer.weights)
    assert "project_weight" in paths
    assert "compress_tower/dense_1/kernel" in paths


def test_cdot_config_roundtrip_every_argument():
    kwargs = {
        "project_dim": 3,
        "compress_units": [8, 4],
        "activation": "tanh",
        "initializer": "he_normal",
        "regularizer": "l2",
    }
    layer = layers.CDot(**kwargs)
    config = layer.get_config()
    assert config["compress_units"] == [8, 4] and config["activation"] == "tanh"
    config_round_trip(layer, kwargs)


def test_cdot_keras_file(tmp_path):
    x = RNG.normal(size=(8, 3, 4)).astype("float32")
    inputs = keras.Input(shape=(3, 4))
    model = keras.Model(inputs, layers.CDot(2, [3])(inputs))
    path = tmp_path / "cdot.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6
    )


# --- GroupInt / FFM ----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"interaction_type": "sum"}, r"interaction_type='sum'"),
        (
            {"interaction_type": "dot", "use_attention": True, "attention_units": [1]},
            r"interaction_type='dot'",
        ),
        ({"use_attention": True}, r"attention_units=None"),
        ({"use_attention": True, "attention_units": [4, 2]}, r"\[4, 2\]"),
        ({"out_type": "flat"}, r"out_type='flat'"),
    ],
)
def test_groupint_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.GroupInt(**kwargs)


@pytest.mark.parametrize(
    "shape, pattern",
    [
        ([(2, 3, 4)], r"pair"),
        ([(2, 3, 4), (2, 2, 5)], r"left D=4, right D=5"),
        ([[(2, 4), (2, 3)], (2, 2, 4)], r"left_fields shapes="),
        ([(2, 12), (2, 2, 4)], r"left_fields shape=\(2, 12\)"),
    ],
)
def test_groupint_bad_input_shapes(shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.GroupInt().build(shape)


def test_groupint_lists_match_stacked_and_ffm_alias():
    left = [RNG.normal(size=(4, 3)).astype("float32") for _ in range(3)]
    right = [RNG.normal(size=(4, 3)).astype("float32") for _ in range(2)]
    assert layers.FFM is layers.GroupInt
    dot = to_numpy(layers.GroupInt("dot")((left, right)))
    assert dot.shape == (4, 6)
    want = np.stack([(a * b).sum(-1) for a in left for b in right], axis=1)
    np.testing.assert_allclose(dot, want, rtol=1e-5, atol=1e-6)
    mul = layers.GroupInt(out_type="stack")
    stacked = to_numpy(mul([np.stack(left, 1), np.stack(right, 1)]))
    np.testing.assert_allclose(to_numpy(mul([left, right])), stacked, rtol=1e-6)
    assert stacked.shape == (4, 6, 3)
    parts = layers.GroupInt(out_type=None)([left, right])
    assert len(parts) == 6 and tuple(parts[0].shape) == (4, 3)


def test_groupint_config_roundtrip_every_argument():
    kwargs = {
        "interaction_type": "multiply",
        "use_attention": True,
        "attention_units": [4, 1],
        "activation": "tanh",
        "initializer": "he_normal",
        "regularizer": "l2",
        "out_type": "stack",
        "keep_list": True,
    }
    layer = layers.GroupInt(**kwargs)
    config = layer.get_config()
    assert config["attention_units"] == [4, 1] and config["use_attention"]
    assert config["out_type"] == "stack" and config["keep_list"]
    config_round_trip(layer, kwargs)


# --- CAN ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"layer_num": 0}, r"layer_num=0"),
        ({"activation": "nope"}, r"activation='nope'"),
    ],
)
def test_can_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.CAN(**kwargs)


@pytest.mark.parametrize(
    "kwargs, shapes, pattern",
    [
        ({}, [(2, 4)], r"pair"),
        ({}, [(2, 4), (2, 40)], r"rank 3.*user_emb shape=\(2, 4\)"),
        ({"is_seq": True}, [(2, 3, 4), (2, 40)], r"rank 4"),
        ({}, [(2, 3, 4), (2, 39)], r"\(batch, 40\).*item_emb shape=\(2, 39\)"),
        ({}, [(2, 3, 4), (3, 40)], r"same batch size"),
    ],
)
def test_can_bad_input_shapes(kwargs, shapes, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.CAN(**kwargs).build(shapes)


@pytest.mark.parametrize(
    "kwargs, user_shape, out_shape",
    [
        ({"is_seq": True}, (2, 3, 5, 4), (2, 3, 4)),
        ({}, (2, 3, 4), (2, 3, 4)),
        ({"is_seq": True, "is_stacked": False}, (2, 5, 4), (2, 4)),
        ({"is_stacked": False}, (1, 4), (1, 4)),
    ],
)
def test_can_shapes(kwargs, user_shape, out_shape):
    user = RNG.normal(size=user_shape).astype("float32")
    item = RNG.normal(size=(user_shape[0], 40)).astype("float32")
    layer = layers.CAN(**kwargs)
    y = layer([user, item])
    assert tuple(y.shape) == out_shape
    assert not layer.weights


def test_can_config_roundtrip_every_argument():
    kwargs = {"layer_num": 3, "activation": "tanh", "is_seq": True, "is_stacked": False}
    layer = layers.CAN(**kwargs)
    config = layer.get_config()
    assert config["layer_num"] == 3 and config["activation"] == "tanh"
    assert config["is_seq"] and not config["is_stacked"]
    config_round_trip(layer, kwargs)


# --- bad input never passes silently ------------------------------------------

# Every public layer of the feature-interaction, sequence and sparse-NAS files,
# with the smallest valid arguments.
OWN_LAYERS = {
    layers.AllInt: {"cmp_dim": 2},
    layers.AutoInt: {},
    layers.CAN: {},
    layers.CDot: {"project_dim": 2, "compress_units": [3]},
    layers.CIN: {"hidden_uints": [2]},
    layers.DCN: {},
    layers.GroupInt: {},
    layers.SeNet: {"num_feature": 3, "cmp_dim": 2},
    layers.NASSelectionLayer: {"segment_sizes": [[2, 4]], "segment_names": ["a"]},
    layers.MixedNASLayer: {"segment_sizes": [[2, 4]], "segment_names": ["a"]},
    layers.NASGatingLayer: {"segment_sizes": [2], "segment_names": ["a"]},
    layers.SimpleNasLayer: {"segment_sizes": [2], "segment_names": ["a"]},
    layers.DIN: {"hidden_units": [2, 1]},
    layers.DIEN: {"num_units": 3},
    layers.DMR_U2I: {"cmp_dim": 2},
    layers.AGRUCell: {"units": 3},
}


def _bad_values(annotation) -> list:
    """What a generic walk of `__init__` annotations feeds a parameter."""
    args = set(typing.get_args(annotation)) or {annotation}
    values: list = []
    if bool in args:
        values += [2, "yes"] + ([] if type(None) in args else [None])
    elif int in args:
        values += [2.5, "3", True]
    if float in args:
        values += [float("nan"), float("inf"), "1.0"]
    if str in args:
        values.append("no_such_value")
    return values


def _walk_cases():
    for cls, base in OWN_LAYERS.items():
        hints = typing.get_type_hints(cls.__init__)
        for name in inspect.signature(cls.__init__).parameters:
            if name in ("self", "kwargs"):
                continue
            for value in _bad_values(hints[name]):
                yield pytest.param(
                    cls, base, name, value, id=f"{cls.__name__}-{name}={value!r}"
                )


@pytest.mark.backend_independent
@pytest.mark.parametrize("cls, base, name, value", list(_walk_cases()))
def test_init_annotations_refuse_bad_values(cls, base, name, value):
    with pytest.raises(ValueError, match=re.escape(f"{name}=")):
        cls(**{**base, name: value})


@pytest.mark.backend_independent
@pytest.mark.parametrize("cls", list(OWN_LAYERS), ids=lambda c: c.__name__)
def test_init_annotations_are_resolvable_and_complete(cls):
    hints = typing.get_type_hints(cls.__init__)
    params = inspect.signature(cls.__init__).parameters
    assert set(params) - {"self", "kwargs"} <= set(hints)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (layers.AllInt, {"cmp_dim": 2, "initializer": "nope"}, r"initializer='nope'"),
        (layers.AllInt, {"cmp_dim": 2, "regularizer": "nope"}, r"regularizer='nope'"),
        (layers.AllInt, {"cmp_dim": 2, "use_bias": 1}, r"use_bias=1"),
        (layers.AllInt, {"cmp_dim": 2, "keep_list": "yes"}, r"keep_list='yes'"),
        (layers.AutoInt, {"initializer": 3}, r"initializer=3"),
        (layers.AutoInt, {"regularizer": 0.1}, r"regularizer=0.1"),
        (layers.AutoInt, {"attention_units": 2.0}, r"attention_units=2.0"),
        (layers.AutoInt, {"scaling": None}, r"scaling=None"),
        (layers.CAN, {"is_seq": 2}, r"is_seq=2"),
        (layers.CAN, {"is_stacked": "no"}, r"is_stacked='no'"),
        (layers.CAN, {"activation": 3}, r"activation=3"),
        (layers.CAN, {"layer_num": True}, r"layer_num=True"),
        (layers.CDot, {"project_dim": 2, "compress_units": [3, -1]}, r"\[3, -1\]"),
        (layers.CDot, {"project_dim": 2, "compress_units": None}, r"units=None"),
        (layers.CDot, {"project_dim": 2.0, "compress_units": 3}, r"project_dim=2.0"),
        (
            layers.CDot,
            {"project_dim": 2, "compress_units": 3, "initializer": "x"},
            r"initializer='x'",
        ),
        (layers.CIN, {"hidden_uints": 0}, r"hidden_uints"),
        (layers.CIN, {"hidden_uints": "3"}, r"hidden_uints='3'"),
        (layers.CIN, {"hidden_uints": [2], "split_half": "yes"}, r"split_half"),
        (layers.CIN, {"hidden_uints": [2], "activate_last_layer": None}, r"=None"),
        (layers.CIN, {"hidden_uints": [2], "regularizer": "l3"}, r"regularizer='l3'"),
        (layers.DCN, {"keep_prob": float("nan")}, r"keep_prob=nan"),
        (layers.DCN, {"keep_prob": "0.5"}, r"keep_prob='0.5'"),
        (layers.DCN, {"use_dropout": 1}, r"use_dropout=1"),
        (layers.DCN, {"share_gates": "yes"}, r"share_gates='yes'"),
        (layers.DCN, {"allow_kernel_norm": None}, r"allow_kernel_norm=None"),
        (layers.DCN, {"low_rank": 2.5}, r"low_rank=2.5"),
        (layers.DCN, {"dcn_type": "mixed", "low_rank": True}, r"low_rank=True"),
        (layers.DCN, {"initializer": "nope"}, r"initializer='nope'"),
        (layers.GroupInt, {"use_attention": 1}, r"use_attention=1"),
        (layers.GroupInt, {"attention_units": []}, r"attention_units=\[\]"),
        (layers.GroupInt, {"attention_units": 2}, r"must be 1"),
        (layers.GroupInt, {"activation": "nope"}, r"activation='nope'"),
        (layers.GroupInt, {"keep_list": None}, r"keep_list=None"),
        (layers.SeNet, {"num_feature": 3, "cmp_dim": 2.5}, r"cmp_dim=2.5"),
        (layers.SeNet, {"num_feature": 3, "cmp_dim": 2, "on_gpu": 1}, r"on_gpu=1"),
        (
            layers.SeNet,
            {"num_feature": 3, "cmp_dim": 2, "initializer": "nope"},
            r"initializer='nope'",
        ),
    ],
)
def test_feature_interaction_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.backend_independent
def test_an_int_means_a_list_of_one():
    cin = layers.CIN(3)
    assert cin.hidden_uints == [3]
    config_round_trip(cin, {"hidden_uints": [3]})
    cdot = layers.CDot(2, 3)
    assert cdot.compress_units == [3]
    config_round_trip(cdot, {"compress_units": [3]})
    group = layers.GroupInt(use_attention=True, attention_units=1)
    assert group.attention_units == [1]
    config_round_trip(group, {"attention_units": [1]})
    # `[]` keeps its documented meaning for CDot (no hidden layer; saved
    # configs and the `no_hidden_linear` conformance case hold it).
    config_round_trip(layers.CDot(2, []), {"compress_units": []})
    with pytest.raises(ValueError, match=r"hidden_uints=\[\]"):
        layers.CIN([])


@pytest.mark.parametrize(
    "make, built, other",
    [
        (lambda: layers.AllInt(2), (2, 3, 4), (2, 3, 5)),
        (lambda: layers.AllInt(2), (2, 3, 4), (2, 4, 4)),
        (lambda: layers.AutoInt(), (2, 3, 4), (2, 3, 5)),
        (lambda: layers.AutoInt(attention_units=2), (2, 3, 4), (2, 3, 5)),
        (lambda: layers.CDot(2, [3]), (2, 3, 4), (2, 3, 2)),
        (lambda: layers.CIN([2]), (2, 3, 4), (2, 3, 3)),
        (lambda: layers.DCN(), (2, 4), (2, 5)),
        (lambda: layers.DCN(dcn_type="vector"), (2, 4), (2, 1)),
        (lambda: layers.SeNet(3, 2), (2, 3, 4), (2, 4, 4)),
        (lambda: layers.SeNet(3, None), (2, 3, 4), (2, 1, 4)),
    ],
)
def test_other_feature_sizes_after_build_name_the_layer(make, built, other):
    layer = make()
    layer(np.ones(built, "float32"))
    pattern = rf"({re.escape(layer.name)}|`{type(layer).__name__}`).*{other[-1]}"
    with pytest.raises(ValueError, match=pattern):
        layer(np.ones(other, "float32"))


def test_can_bad_call_inputs_name_the_layer():
    layer = layers.CAN()
    user, item = np.ones((2, 3, 4), "float32"), np.ones((2, 40), "float32")
    layer([user, item])
    with pytest.raises(ValueError, match=r"`CAN`.*list of 2 tensors.*Received: 3"):
        layer([user, item, item])
    with pytest.raises(ValueError, match=r"`CAN`.*list of 2 tensors.*Received: 1"):
        layer([user])
    # u = 2 with a consistent item width: still not what the layer was built for.
    with pytest.raises(ValueError, match=r"`CAN`.*user_emb.*last dimension of 4"):
        layer([np.ones((2, 3, 2), "float32"), np.ones((2, 12), "float32")])
    with pytest.raises(ValueError, match=r"item_emb shape=\(2, 39\)"):
        layer([user, np.ones((2, 39), "float32")])


def test_groupint_bad_call_inputs_name_the_layer():
    layer = layers.GroupInt(out_type="stack")
    left, right = np.ones((2, 3, 4), "float32"), np.ones((2, 2, 4), "float32")
    layer([left, right])
    with pytest.raises(ValueError, match=r"`GroupInt`.*list of 2 tensors"):
        layer([left])
    with pytest.raises(ValueError, match=r"`GroupInt`.*list of 2 tensors"):
        layer([left, right, right])
    with pytest.raises(ValueError, match=r"`GroupInt`.*last dimension of 4"):
        layer([np.ones((2, 3, 5), "float32"), np.ones((2, 2, 5), "float32")])
    with pytest.raises(ValueError, match=r"left D=4, right D=5"):
        layer([left, np.ones((2, 2, 5), "float32")])


def test_senet_bad_call_inputs_name_the_layer():
    layer = layers.SeNet(2, 2)
    layer([np.ones((2, 3), "float32"), np.ones((2, 1), "float32")])
    with pytest.raises(ValueError, match=r"`SeNet`.*Received: 3 tensors"):
        layer([np.ones((2, 3), "float32")] * 3)


def _inputs(structure, dtype, seed=0):
    """Arrays for a structure of shapes (tuples) and lists (of structures)."""
    rng = np.random.default_rng(seed)

    def make(s):
        if isinstance(s, list):
            return [make(x) for x in s]
        return rng.integers(-2, 3, size=s).astype(dtype)

    return make(structure)


def _flat(y):
    return [to_numpy(t) for t in (y if isinstance(y, list) else [y])]


# (layer factory, input shapes for a batch b): the inputs of every code path.
INTERACTION_CASES = {
    "allint": (lambda: layers.AllInt(2), lambda b: (b, 3, 4)),
    "autoint": (lambda: layers.AutoInt(layer_num=2), lambda b: (b, 3, 4)),
    "autoint_paper": (
        lambda: layers.AutoInt(
            attention_units=2, head_num=2, use_residual=True, scaling=True
        ),
        lambda b: (b, 3, 4),
    ),
    "can": (lambda: layers.CAN(), lambda b: [(b, 3, 2), (b, 12)]),
    "can_seq": (
        lambda: layers.CAN(is_seq=True, is_stacked=False),
        lambda b: [(b, 5, 2), (b, 12)],
    ),
    "cdot": (lambda: layers.CDot(2, 3), lambda b: (b, 3, 4)),
    "cin": (
        lambda: layers.CIN([4, 2], activation="relu", split_half=True),
        lambda b: (b, 3, 4),
    ),
    "dcn_matrix": (lambda: layers.DCN(layer_num=2), lambda b: (b, 4)),
    "dcn_vector": (lambda: layers.DCN(dcn_type="vector"), lambda b: (b, 4)),
    "dcn_mixed": (
        lambda: layers.DCN(dcn_type="mixed", num_experts=2, low_rank=2),
        lambda b: (b, 2, 4),
    ),
    "groupint_attention": (
        lambda: layers.GroupInt(use_attention=True, attention_units=[2, 1]),
        lambda b: [(b, 3, 4), (b, 2, 4)],
    ),
    "groupint_dot_lists": (
        lambda: layers.GroupInt("dot"),
        lambda b: [[(b, 4), (b, 4)], (b, 2, 4)],
    ),
    "senet": (lambda: layers.SeNet(3, 2), lambda b: (b, 3, 4)),
    "senet_list": (
        lambda: layers.SeNet(2, None, out_type=None),
        lambda b: [(b, 3), (b, 2)],
    ),
}


@pytest.mark.parametrize("case", list(INTERACTION_CASES))
def test_integer_inputs_are_cast_to_the_compute_dtype(case):
    make, shapes = INTERACTION_CASES[case]
    layer = make()
    floats = _flat(layer(_inputs(shapes(3), "float32")))
    ints = _flat(layer(_inputs(shapes(3), "int32")))
    for a, b in zip(ints, floats, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", list(INTERACTION_CASES))
def test_empty_batch_gives_an_empty_output(case):
    make, shapes = INTERACTION_CASES[case]
    layer = make()
    full = _flat(layer(_inputs(shapes(2), "float32")))
    empty = _flat(layer(_inputs(shapes(0), "float32")))
    for e, f in zip(empty, full, strict=True):
        assert e.shape == (0,) + f.shape[1:]
        assert e.dtype == np.float32 and not np.isnan(e).any()
