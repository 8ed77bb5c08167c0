"""Unit tests for SparseMoE and HierarchicalMoE (run once per KERAS_BACKEND).

Numeric outputs are pinned by the specs (`specs/moe/sparse_moe*`,
`specs/moe/hierarchical_moe*`); these tests cover argument errors, equality of
the dispatchers, capacity and drops, masks, losses, statistics, mixed
precision, compiled calls, config round-trips and training in `model.fit`.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import routing
from keras_mtl.layers import HierarchicalMoE
from keras_mtl.layers import SparseMoE
from tests._helpers import BACKEND
from tests._helpers import config_round_trip
from tests._helpers import gradients
from tests._helpers import to_numpy
from tests._helpers import value_and_gradients


def _x(shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape).astype("float32")


def _randomize(layer, seed=0, scale=0.5):
    rng = np.random.RandomState(seed)
    for v in layer.trainable_weights:
        v.assign((scale * rng.standard_normal(v.shape)).astype("float32"))


def _sparse(x, init_seed=0, **kwargs):
    kwargs.setdefault("num_experts", 6)
    kwargs.setdefault("expert_hidden_units", [5])
    layer = SparseMoE(**kwargs)
    layer.build(x.shape)
    _randomize(layer, init_seed)
    return layer


def _hier(x, init_seed=0, **kwargs):
    kwargs.setdefault("num_experts", (3, 2))
    kwargs.setdefault("expert_hidden_units", 5)
    layer = HierarchicalMoE(**kwargs)
    layer.build(x.shape)
    _randomize(layer, init_seed)
    return layer


# --- errors -------------------------------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"top_k": 5, "num_experts": 3}, r"Received: top_k=5 with num_experts=3"),
        ({"top_k": 0}, r"top_k=0"),
        ({"gate_type": "noise_topk", "top_k": 4, "num_experts": 4}, r"top_k=4"),
        ({"gate_type": "switch"}, r"gate_type='switch'"),
        ({"dispatcher": "ragged"}, r"dispatcher='ragged'"),
        ({"capacity_factor": 0.0}, r"capacity_factor=0.0"),
        ({"eval_capacity_factor": -1.0}, r"eval_capacity_factor=-1.0"),
        ({"capacity_factor": float("nan")}, r"capacity_factor=nan"),
        ({"eval_capacity_factor": float("inf")}, r"eval_capacity_factor=inf"),
        ({"min_capacity": 0}, r"min_capacity=0"),
        ({"group_size": 0}, r"group_size=0"),
        ({"jitter_eps": 1.5}, r"jitter_eps=1.5"),
        ({"switch_loss_weight": -0.1}, r"switch_loss_weight=-0.1"),
        ({"activation": "prelu"}, r"activation='prelu'"),
        ({"activation": "nope"}, r"activation='nope'"),
        ({"expert_hidden_units": [4, 0]}, r"expert_hidden_units"),
        ({"expert_hidden_units": "3"}, r"expert_hidden_units='3'"),
        ({"normalize_gates": 2}, r"normalize_gates=2"),
        ({"pad_to_group": "yes"}, r"pad_to_group='yes'"),
        ({"use_bias": None}, r"use_bias=None"),
        ({"capacity_factor": "1.0"}, r"capacity_factor='1.0'"),
        ({"z_loss_weight": float("inf")}, r"z_loss_weight=inf"),
        ({"kernel_initializer": "nope"}, r"kernel_initializer='nope'"),
        ({"router_initializer": 3}, r"router_initializer=3"),
        ({"seed": 2.5}, r"seed=2.5"),
        ({"seed": True}, r"seed=True"),
    ],
)
def test_sparse_moe_bad_arguments(kwargs, match):
    kwargs = {"num_experts": 4, "expert_hidden_units": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        SparseMoE(**kwargs)


def test_sparse_moe_group_size_must_divide_without_padding():
    layer = SparseMoE(4, 3, group_size=8, pad_to_group=False)
    with pytest.raises(ValueError, match=r"group_size=8 with 12 tokens"):
        layer(_x((3, 4, 5)))
    # With padding (the default) the same call works.
    assert SparseMoE(4, 3, group_size=8)(_x((3, 4, 5))).shape == (3, 4, 5)


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_experts": (1, 4)}, r"num_experts=\(1, 4\)"),
        ({"num_experts": 8}, r"num_experts=8"),
        ({"second_policy_train": "sample"}, r"second_policy_train='sample'"),
        ({"second_policy_eval": "top"}, r"second_policy_eval='top'"),
        ({"capacity_factor": 0}, r"capacity_factor=0"),
        ({"second_level_capacity_factor": -2.0}, r"second_level_capacity_factor"),
        ({"dispatcher": "dense"}, r"dispatcher='dense'"),
        ({"capacity_factor": None}, r"capacity_factor=None"),
        ({"second_threshold_eval": -0.5}, r"second_threshold_eval=-0.5"),
        ({"second_threshold_train": float("inf")}, r"second_threshold_train=inf"),
        ({"loss_coef": float("nan")}, r"loss_coef=nan"),
        ({"use_bias": 1}, r"use_bias=1"),
        ({"kernel_initializer": "nope"}, r"kernel_initializer='nope'"),
        ({"activation": "nope"}, r"activation='nope'"),
        ({"seed": "1"}, r"seed='1'"),
    ],
)
def test_hierarchical_moe_bad_arguments(kwargs, match):
    kwargs = {"num_experts": (2, 2), "expert_hidden_units": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        HierarchicalMoE(**kwargs)


# --- capacity and groups ---------------------------------------------------------


def test_capacity_formulas():
    # C = ceil(k * S * cf / E): S=4096, k=2, cf=1.25, E=64 -> C=160.
    assert routing.expert_capacity(4096, 64, 2, 1.25, 4) == 160
    assert routing.expert_capacity(10, 8, 1, 0.1, 4) == 4  # the minimum
    assert routing.expert_capacity(6, 2, 2, 4.0, 1) == 6  # at most S
    # Mesh-TF: no factor k, floor, then the minimum.
    assert routing.mtf_capacity(1024, 8, 1.25, 4) == 160
    assert routing.mtf_capacity(16, 8, 1.0, 4) == 4
    assert routing.split_into_groups(4096, 1024) == (4, 1024)
    assert routing.split_into_groups(100, 64) == (1, 100)
    assert routing.split_into_groups(96, 40) == (2, 48)
    assert routing.split_into_groups(7, 2) == (7, 1)


def test_positions_are_choice_major_and_skip_padding():
    experts = ops.convert_to_tensor(np.array([[[0, 1], [0, 2], [1, 0]]], "int32"))
    valid = ops.convert_to_tensor(np.array([[1.0, 0.0, 1.0]], "float32"))
    pos = to_numpy(routing.choice_major_positions(experts, valid, 3))
    # First choices: token 0 -> e0 @0, token 1 padded (no place), token 2 -> e1 @0.
    # Second choices: token 0 -> e1 @1, token 2 -> e0 @1.
    assert pos[0, 0].tolist() == [0, 1]
    assert pos[0, 2].tolist() == [0, 1]
    assert pos[0, 1].tolist() == [-1, -1]


def test_one_hot_gives_zero_rows_out_of_range():
    indices = ops.convert_to_tensor(np.array([[2, -1], [0, 3]], "int32"))
    got = to_numpy(routing.one_hot(indices, 3, "float32"))
    want = np.zeros((2, 2, 3), "float32")
    want[0, 0, 2] = want[1, 0, 0] = 1.0
    np.testing.assert_array_equal(got, want)
    # The class axis can go elsewhere (expert-major running counts).
    got = to_numpy(routing.one_hot(indices, 3, "float32", axis=1))
    np.testing.assert_array_equal(got, np.moveaxis(want, -1, 1))
    assert to_numpy(routing.one_hot(indices, 3, "int32")).dtype == np.int32


def test_first_max_one_hot_is_one_hot_of_argmax_with_ties_to_the_lower_index():
    from keras_mtl import numerics

    x = np.random.default_rng(0).normal(size=(5, 7)).astype("float32")
    x[1, [2, 5]] = 9.0  # a tie: argmax takes index 2
    x[2] = 0.0  # all tied
    got = to_numpy(numerics.first_max_one_hot(ops.convert_to_tensor(x), "float32"))
    np.testing.assert_array_equal(got, np.eye(7, dtype="float32")[x.argmax(-1)])
    vector = ops.convert_to_tensor(np.array([0.2, 0.5, 0.5], "float32"))
    assert to_numpy(numerics.first_max_one_hot(vector, "int32")).tolist() == [0, 1, 0]
    nan = ops.convert_to_tensor(np.array([[np.nan, 1.0]], "float32"))
    assert to_numpy(numerics.first_max_one_hot(nan, "float32")).tolist() == [[0, 0]]


def test_take_along_axis_adapter_matches_keras():
    from keras_mtl.backend import gather

    rng = np.random.default_rng(1)
    x = ops.convert_to_tensor(rng.normal(size=(2, 5, 6)).astype("float32"))
    index = ops.convert_to_tensor(rng.integers(0, 5, size=(2, 1, 6)).astype("int32"))
    np.testing.assert_array_equal(
        to_numpy(gather.take_along_axis(x, index, axis=1)),
        to_numpy(ops.take_along_axis(x, index, axis=1)),
    )


def test_index_combine_ignores_not_kept_choices_whatever_their_weight():
    out = np.arange(12, dtype="float32").reshape(4, 3) + 1.0
    slots = np.array([[2, -1], [-1, -1], [0, 3]], "int32")
    weights = np.array([[0.5, 7.0], [3.0, 3.0], [0.25, 1.0]], "float32")
    got = to_numpy(
        routing.index_combine(*map(ops.convert_to_tensor, (out, slots, weights)))
    )
    want = np.stack([0.5 * out[2], np.zeros(3), 0.25 * out[0] + out[3]])
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --- dispatchers, drops, statistics ----------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2, 4])
@pytest.mark.parametrize("cf", [8.0, 0.5, None])
def test_dispatchers_agree_with_and_without_drops(top_k, cf):
    x = _x((4, 9, 8))
    mask = np.ones((4, 9), bool)
    mask[1, 5:] = False
    outs = {}
    for dispatcher in ("index", "grouped", "einsum", "dense"):
        layer = _sparse(
            x,
            top_k=top_k,
            dispatcher=dispatcher,
            eval_capacity_factor=cf,
            min_capacity=1,
            group_size=12,
        )
        outs[dispatcher] = to_numpy(layer(x, mask=mask))
        dropped = float(to_numpy(layer.dropped_fraction))
        assert (dropped == 0.0) == (cf != 0.5), dropped
    for dispatcher in ("grouped", "einsum", "dense"):
        np.testing.assert_allclose(outs["index"], outs[dispatcher], atol=2e-6)


def test_large_capacity_equals_dense_moe_without_routing_limits():
    """With room for everything, y = sum over the top k of gate * expert(x)."""
    x = _x((10, 6), seed=3)
    layer = _sparse(x, top_k=2, eval_capacity_factor=10.0, expert_hidden_units=[])
    probs = to_numpy(ops.softmax(ops.matmul(x, layer.router_kernel)))
    kernel = to_numpy(layer.expert_kernels[0])
    bias = to_numpy(layer.expert_biases[0])
    expected = np.zeros((10, 6), "float32")
    for t in range(10):
        top = np.argsort(-probs[t])[:2]
        g = probs[t, top] / probs[t, top].sum()
        for j, e in enumerate(top):
            expected[t] += g[j] * (x[t] @ kernel[e] + bias[e])
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)


def test_dropped_tokens_are_counted_and_output_zero():
    x = _x((16, 4), seed=1)
    layer = _sparse(
        x, num_experts=2, top_k=1, eval_capacity_factor=0.25, min_capacity=1
    )
    # C = ceil(1 * 16 * 0.25 / 2) = 2 per expert: at most 4 of 16 tokens kept.
    y = to_numpy(layer(x))
    kept_rows = np.count_nonzero(np.abs(y).sum(-1) > 0)
    assert kept_rows <= 4
    np.testing.assert_allclose(
        float(to_numpy(layer.dropped_fraction)), 1 - kept_rows / 16
    )
    np.testing.assert_allclose(
        to_numpy(layer.expert_load).sum(), kept_rows / 16, atol=1e-6
    )


def test_padded_tokens_are_independent_of_their_values_and_take_no_capacity():
    x = _x((2, 8, 4), seed=2)
    mask = np.ones((2, 8), bool)
    mask[0, 3:] = False
    layer = _sparse(x, top_k=2, eval_capacity_factor=1.0, min_capacity=1, group_size=16)
    y1 = to_numpy(layer(x, mask=mask))
    load1 = to_numpy(layer.expert_load)
    x2 = x.copy()
    x2[0, 3:] = 1e3  # padded values must not matter
    y2 = to_numpy(layer(x2, mask=mask))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(load1, to_numpy(layer.expert_load))
    np.testing.assert_array_equal(y1[0, 3:], 0.0)


def test_balance_loss_minimum_and_growth_with_imbalance():
    probs = np.full((8, 4), 0.25, "float32")
    experts = np.array([[i % 4, (i + 1) % 4] for i in range(8)], "int32")
    valid = np.ones((8,), "float32")

    def chosen(experts):
        return np.eye(4, dtype="float32")[experts].sum(axis=1)

    uniform = float(
        to_numpy(routing.switch_balance_loss(probs, chosen(experts), valid))
    )
    np.testing.assert_allclose(uniform, 1.0, rtol=1e-6)
    skew = np.tile(np.array([[0.7, 0.1, 0.1, 0.1]], "float32"), (8, 1))
    collapsed = np.tile(np.array([[0, 1]], "int32"), (8, 1))
    worse = float(to_numpy(routing.switch_balance_loss(skew, chosen(collapsed), valid)))
    assert worse > uniform


def test_losses_sum_with_coefficients_and_ignore_padding():
    x = _x((12, 5), seed=4)
    mask = np.ones((12,), bool)
    mask[8:] = False
    parts = {}
    for name in ("switch_loss_weight", "importance_loss_weight", "z_loss_weight"):
        weights = {
            "switch_loss_weight": 0.0,
            "importance_loss_weight": 0.0,
            "z_loss_weight": 0.0,
        }
        weights[name] = 2.0
        layer = _sparse(x, **weights)
        layer(x, mask=mask)
        (loss,) = layer.losses
        parts[name] = float(to_numpy(loss))
        x_pad = x.copy()
        x_pad[8:] = 50.0
        layer(x_pad, mask=mask)
        np.testing.assert_allclose(
            float(to_numpy(layer.losses[0])), parts[name], rtol=1e-6
        )
    layer = _sparse(
        x, switch_loss_weight=2.0, importance_loss_weight=2.0, z_loss_weight=2.0
    )
    layer(x, mask=mask)
    np.testing.assert_allclose(
        float(to_numpy(layer.losses[0])), sum(parts.values()), rtol=1e-5
    )
    silent = _sparse(x, switch_loss_weight=0.0)
    silent(x)
    assert silent.losses == []


def test_noise_and_jitter_only_in_training_and_reproducible():
    x = _x((20, 6), seed=5)
    layer = _sparse(x, gate_type="noise_topk", jitter_eps=0.1, seed=3)
    layer.noise_kernel.assign(np.full(layer.noise_kernel.shape, 0.5, "float32"))
    a, b = to_numpy(layer(x)), to_numpy(layer(x))
    np.testing.assert_array_equal(a, b)
    t1, t2 = to_numpy(layer(x, training=True)), to_numpy(layer(x, training=True))
    assert not np.allclose(t1, t2)
    outs = []
    for _ in range(2):
        again = _sparse(x, gate_type="noise_topk", jitter_eps=0.1, seed=3)
        again.noise_kernel.assign(np.full(again.noise_kernel.shape, 0.5, "float32"))
        outs.append(to_numpy(again(x, training=True)))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_injected_router_noise_is_deterministic():
    x = _x((10, 6), seed=6)
    noise = _x((10, 6), seed=7)
    layer = _sparse(x, gate_type="noise_topk", importance_loss_weight=1.0)
    a = to_numpy(layer(x, training=True, router_noise=noise))
    b = to_numpy(layer(x, training=True, router_noise=noise))
    np.testing.assert_array_equal(a, b)
    c = to_numpy(layer(x, training=True, router_noise=np.zeros_like(noise)))
    assert not np.allclose(a, c)


def test_mixed_precision_routes_in_float32():
    keras.config.set_dtype_policy("mixed_float16")
    x = _x((3, 8, 6), seed=8)
    layer = SparseMoE(6, [5], group_size=8, importance_loss_weight=0.1)
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.losses[0].dtype) == "float32"
    assert layer.router_kernel.dtype == "float32"
    assert layer.expert_load.dtype == "float32"
    assert np.isfinite(to_numpy(y)).all()


def test_output_dim_and_symbolic_shapes():
    layer = SparseMoE(4, [6, 5], output_dim=3, group_size=8)
    inputs = keras.Input((7, 10))
    out = layer(inputs)
    assert tuple(out.shape) == (None, 7, 3)
    model = keras.Model(inputs, out)
    assert model(_x((2, 7, 10))).shape == (2, 7, 3)
    assert [w.path.split("/")[-1] for w in layer.weights] == [
        "router_kernel",
        "expert_kernel_0",
        "expert_bias_0",
        "expert_kernel_1",
        "expert_bias_1",
        "expert_kernel_2",
        "expert_bias_2",
        "expert_load",
        "dropped_fraction",
    ]
    assert tuple(layer.expert_kernels[1].shape) == (4, 6, 5)


def test_masking_layer_mask_is_used():
    x = _x((2, 6, 4), seed=9)
    x[1, 4:] = 0.0
    inputs = keras.Input((6, 4))
    masked = keras.layers.Masking(0.0)(inputs)
    layer = SparseMoE(4, [3], group_size=4)
    model = keras.Model(inputs, layer(masked))
    y = to_numpy(model(x))
    np.testing.assert_array_equal(y[1, 4:], 0.0)


# --- HierarchicalMoE ----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["all", "none", "threshold", "random"])
@pytest.mark.long(15)
def test_hierarchical_dispatchers_agree(policy):
    x = _x((4, 12, 8))
    mask = np.ones((4, 12), bool)
    mask[2, 7:] = False
    outs = []
    for dispatcher in ("index", "grouped", "einsum"):
        layer = _hier(
            x,
            group_size=16,
            min_capacity=2,
            dispatcher=dispatcher,
            second_policy_eval=policy,
            second_threshold_eval=0.3,
            use_bias=True,
        )
        sizes = layer.layout(48)
        u1 = np.random.RandomState(1).rand(48).astype("float32")
        u2 = (
            np.random.RandomState(2).rand(3, sizes["G1"] * sizes["C"]).astype("float32")
        )
        y = to_numpy(layer(x, mask=mask, outer_uniforms=u1, inner_uniforms=u2))
        np.testing.assert_array_equal(y[2, 7:], 0.0)
        outs.append(y)
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-6)
    np.testing.assert_allclose(outs[0], outs[2], atol=2e-6)


def test_hierarchical_layout_follows_mesh_tf():
    layer = HierarchicalMoE((8, 8), 512, group_size=1024)
    sizes = layer.layout(8192, training=True)
    # 8 groups of 1024; C = int(1024 * 1.25 / 8) = 160; 8*160 = 1280 slots per
    # outer expert -> 1 group of 1280; D = int(1280 * 1.0 / 8) = 160.
    assert sizes == {"G1": 8, "S": 1024, "C": 160, "G2": 1, "t": 1280, "D": 160}
    assert layer.layout(8192)["C"] == 256  # eval factor 2.0


def test_top2_importance_half_goes_to_best_expert_with_weight_one():
    logits = ops.convert_to_tensor(
        np.array([[[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.5]]], "float32")
    )
    importance = ops.convert_to_tensor(np.array([[1.0, 0.5, 0.0]], "float32"))
    out = routing.top2_gating(logits, 4, importance, "all", 0.2, None)
    experts, keep, gates = (
        to_numpy(out["experts"]),
        to_numpy(out["keep"]),
        to_numpy(out["gates"]),
    )
    # Token 1 (importance 0.5): no first choice; its "second" is its best expert.
    assert not keep[0, 1, 0] and keep[0, 1, 1]
    assert experts[0, 1, 1] == 1
    np.testing.assert_allclose(gates[0, 1, 1], 1.0, atol=1e-6)
    # Token 2 (importance 0) goes nowhere; token 0 keeps both choices.
    assert not keep[0, 2].any() and keep[0, 0].all()


def test_top2_policies():
    rng = np.random.RandomState(0)
    logits = ops.convert_to_tensor(rng.standard_normal((2, 16, 4)).astype("float32"))
    importance = ops.ones((2, 16))
    kept = {}
    for policy in ("all", "none", "threshold"):
        out = routing.top2_gating(logits, 16, importance, policy, 0.3, None)
        kept[policy] = to_numpy(out["keep"])[..., 1]
        if policy == "threshold":
            g2 = to_numpy(out["gates"])[..., 1]
            assert (g2[kept[policy]] > 0.3).all()
    assert kept["all"].all() and not kept["none"].any()
    uniforms = ops.convert_to_tensor(rng.rand(2, 16).astype("float32"))
    tiny = routing.top2_gating(logits, 16, importance, "random", 1e-12, uniforms)
    np.testing.assert_array_equal(to_numpy(tiny["keep"])[..., 1], kept["all"])


def test_hierarchical_random_policy_only_random_where_asked():
    x = _x((32, 6), seed=3)
    layer = _hier(
        x, group_size=16, second_threshold_eval=0.9, second_threshold_train=0.9, seed=1
    )
    # Mesh-TF's default policy ("random") samples at inference too.
    assert not np.array_equal(to_numpy(layer(x)), to_numpy(layer(x)))
    det = _hier(x, group_size=16, second_policy_eval="threshold")
    np.testing.assert_array_equal(to_numpy(det(x)), to_numpy(det(x)))
    t1 = to_numpy(layer(x, training=True))
    t2 = to_numpy(layer(x, training=True))
    assert not np.array_equal(t1, t2)


def test_hierarchical_loss_is_scaled_sum():
    x = _x((16, 6), seed=4)
    layer = _hier(x, group_size=16, second_policy_eval="all", loss_coef=1.0)
    layer(x)
    base = float(to_numpy(layer.losses[0]))
    scaled = _hier(x, group_size=16, second_policy_eval="all", loss_coef=0.01)
    scaled(x)
    np.testing.assert_allclose(
        float(to_numpy(scaled.losses[0])), base * 0.01, rtol=1e-6
    )
    # Each level's loss is >= 1 at any routing (E^2 mean(f * p) with sum f = 1).
    assert base > 0


def test_hierarchical_needs_static_tokens():
    layer = HierarchicalMoE((2, 2), 4)
    inputs = keras.Input((5, 3))
    assert tuple(layer(inputs).shape) == (None, 5, 3)  # symbolic shape only
    with pytest.raises(ValueError, match="static token count"):
        layer.call(keras.KerasTensor((None, 3)))


# --- config, saving, compiled, fit -------------------------------------------------


def test_config_roundtrip_every_argument():
    sparse = SparseMoE(
        num_experts=5,
        expert_hidden_units=[7, 3],
        output_dim=4,
        top_k=3,
        gate_type="noise_topk",
        normalize_gates=False,
        capacity_factor=1.5,
        eval_capacity_factor=3.0,
        min_capacity=2,
        group_size=16,
        pad_to_group=False,
        dispatcher="einsum",
        activation="gelu",
        use_bias=False,
        jitter_eps=0.05,
        switch_loss_weight=0.2,
        importance_loss_weight=0.3,
        z_loss_weight=0.001,
        kernel_initializer=keras.initializers.HeNormal(seed=1),
        bias_initializer="ones",
        router_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=2),
        noise_initializer="ones",
        seed=11,
    )
    hier = HierarchicalMoE(
        num_experts=(3, 4),
        expert_hidden_units=9,
        output_dim=2,
        group_size=64,
        capacity_factor=1.1,
        eval_capacity_factor=1.7,
        second_level_capacity_factor=1.3,
        min_capacity=3,
        second_policy_train="threshold",
        second_policy_eval="none",
        second_threshold_train=0.3,
        second_threshold_eval=0.4,
        loss_coef=0.5,
        dispatcher="einsum",
        activation="tanh",
        use_bias=True,
        kernel_initializer="he_uniform",
        bias_initializer="ones",
        router_initializer="zeros",
        seed=5,
    )
    for layer in (sparse, hier):
        json.dumps(layer.get_config())  # plain JSON, no `default`
        config_round_trip(layer)


def test_save_and_load(tmp_path):
    inputs = keras.Input((6, 5))
    y = SparseMoE(4, [6], group_size=6, name="moe")(inputs)
    y = HierarchicalMoE((2, 2), 4, group_size=8, second_policy_eval="all")(y)
    model = keras.Model(inputs, y)
    x = _x((2, 6, 5))
    before = to_numpy(model(x))
    path = tmp_path / "moe.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), before, atol=1e-6)


def _loss_and_grads(layer, x):
    """Loss and gradients through the backend's compiler (jit / XLA / compile)."""
    x = ops.convert_to_tensor(x)
    ntv = [v.value for v in layer.non_trainable_variables]

    def loss(*tv):
        y, _ = layer.stateless_call(list(tv), ntv, x, training=True)
        return ops.sum(y * y)

    tv = [v.value for v in layer.trainable_variables]
    return value_and_gradients(loss, *tv, compiled=True)


@pytest.mark.parametrize("cls", ["sparse", "sparse_grouped_dropless", "hierarchical"])
@pytest.mark.long(30)
def test_compiled_forward_and_backward(cls):
    x = _x((32, 6), seed=12)
    if cls == "sparse":
        layer = _sparse(x, group_size=16, capacity_factor=1.0, min_capacity=1)
    elif cls == "sparse_grouped_dropless":
        x = _x((32, 8), seed=12)
        layer = _sparse(
            x, expert_hidden_units=[8], capacity_factor=None, dispatcher="grouped"
        )
    else:
        layer = _hier(x, group_size=16, second_policy_train="threshold")
    value, grads = _loss_and_grads(layer, x)
    y = to_numpy(layer(x, training=True))
    np.testing.assert_allclose(value, float((y * y).sum()), rtol=1e-5)
    assert len(grads) == len(layer.trainable_variables)
    assert all(np.isfinite(g).all() for g in grads)
    # The router gets gradient through the gates; every expert weight too
    # (a weight the loss does not reach would get zeros).
    assert all(np.abs(g).sum() > 0 for g in grads)


def _fit_data():
    rng = np.random.RandomState(0)
    x = rng.standard_normal((96, 8, 6)).astype("float32")
    y = np.tanh(x @ rng.standard_normal((6, 6))).astype("float32")
    return x, y


def _fit_reduces_loss(model, x, y, batch_size):
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    first = model.evaluate(x, y, verbose=0, batch_size=32)
    model.fit(x, y, epochs=8, batch_size=batch_size, verbose=0)
    assert model.evaluate(x, y, verbose=0, batch_size=32) < 0.8 * first


def test_sparse_moe_fit_with_unknown_batch_size():
    x, y = _fit_data()
    inputs = keras.Input((8, 6))
    h = SparseMoE(4, [16], group_size=32, capacity_factor=1.5)(inputs)
    # 96 % 40 != 0: the last batch is smaller and the group padding adapts
    # (TensorFlow traces with an unknown batch size).
    _fit_reduces_loss(keras.Model(inputs, keras.layers.Add()([inputs, h])), x, y, 40)


def test_hierarchical_moe_fit_with_static_batch():
    # Mesh-TF derives groups from the token count, so the batch is static.
    x, y = _fit_data()
    inputs = keras.Input((8, 6), batch_size=32)
    h = HierarchicalMoE((2, 2), 8, group_size=32, second_policy_train="all")(inputs)
    _fit_reduces_loss(keras.Model(inputs, keras.layers.Add()([inputs, h])), x, y, 32)


# --- grouped dispatcher, dropless routing, host syncs ------------------------------


def _eager_grads(layer, x, mask=None):
    """Gradients of `sum(y * cot) + losses` w.r.t. `x` and the trainable weights,
    eagerly (torch: the native grouped matmul runs outside `torch.compile`)."""
    cot = ops.convert_to_tensor(_x((x.shape[0], layer.output_dim or x.shape[-1]), 99))
    ntv = [v.value for v in layer.non_trainable_variables]

    def loss(x, *tv):
        y, _, losses = layer.stateless_call(
            list(tv), ntv, x, mask=mask, training=True, return_losses=True
        )
        return ops.sum(y * cot) + sum(losses)

    return gradients(loss, x, *[v.value for v in layer.trainable_variables])


@pytest.mark.parametrize("width", [8, 6])
@pytest.mark.parametrize("cf", [0.75, None])
def test_dispatchers_agree_in_gradients(width, cf):
    """Width 8 runs torch's native grouped matmul (16-byte rows), width 6 the
    blocked fallback; with and without drops."""
    x = _x((24, width), seed=5)
    mask = np.ones((24,), bool)
    mask[[3, 17]] = False
    grads = {}
    for dispatcher in ("index", "grouped", "einsum", "dense"):
        layer = _sparse(
            x,
            num_experts=4,
            expert_hidden_units=[width],
            dispatcher=dispatcher,
            capacity_factor=cf,
            min_capacity=1,
            group_size=12,
        )
        grads[dispatcher] = _eager_grads(layer, x, mask)
    # Each reaches `x` and every weight (an unreached one would get zeros).
    assert all(np.abs(g).sum() > 0 for g in grads["index"])
    for dispatcher in ("grouped", "einsum", "dense"):
        for got, want in zip(grads[dispatcher], grads["index"], strict=True):
            np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def _grouped_case(num_rows, sizes, d_in=8, d_out=16, seed=0):
    """Inputs, the rows of experts and their products, row by row: `sizes`
    as given, and the first row past them joins the last expert."""
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((num_rows, d_in)).astype("float32")
    kernel = rng.standard_normal((len(sizes), d_in, d_out)).astype("float32")
    rows = routing.grouped_rows(
        ops.convert_to_tensor(np.array(sizes, "int32")), num_rows
    )
    full = list(sizes)
    full[-1] += min(num_rows - sum(sizes), 1)
    row_expert = np.repeat(np.arange(len(sizes)), full)
    expected = np.einsum("ri,rio->ro", x[: len(row_expert)], kernel[row_expert])
    return x, kernel, rows, expected


@pytest.mark.parametrize("implementation", ["native", "blocked"])
@pytest.mark.parametrize("sizes", [[5, 0, 7, 12], [0, 0, 20, 0], [3, 1, 2, 0]])
def test_grouped_matmul_implementations(implementation, sizes):
    """Rows of experts, empty experts included; rows of no expert are `E`."""
    from keras_mtl.backend import grouped

    if implementation == "native" and BACKEND == "tensorflow":
        pytest.skip("TensorFlow has no native grouped matmul")
    x, kernel, rows, expected = _grouped_case(24, sizes)
    grouped.set_implementation(implementation)
    try:
        got = grouped.grouped_matmul(
            ops.convert_to_tensor(x), ops.convert_to_tensor(kernel), rows
        )
    finally:
        grouped.set_implementation("auto")
    covered = len(expected)
    np.testing.assert_allclose(to_numpy(got)[:covered], expected, rtol=1e-5, atol=1e-5)
    want_experts = np.full(24, 4)
    want_experts[:covered] = np.repeat(np.arange(4), to_numpy(rows.sizes))
    np.testing.assert_array_equal(to_numpy(rows.row_expert), want_experts)


@pytest.mark.parametrize("implementation", ["native", "blocked"])
def test_grouped_matmul_gradients(implementation):
    """Gradients of the rows of experts and of the kernels match per-expert
    matmuls (the rows of no expert are undefined: torch leaves them
    unwritten, and the layers never read them)."""
    from keras_mtl.backend import grouped

    if implementation == "native" and BACKEND == "tensorflow":
        pytest.skip("TensorFlow has no native grouped matmul")
    x, kernel, rows, _ = _grouped_case(24, [5, 0, 7, 8])
    cot = _x((21, 16), seed=3)  # the 20 rows of experts and the first after

    def loss(x, kernel):
        y = grouped.grouped_matmul(x, kernel, rows)
        return ops.sum(y[:21] * ops.convert_to_tensor(cot))

    def reference(x, kernel):
        experts = np.repeat(np.arange(4), [5, 0, 7, 9])
        gx = np.einsum("ro,rio->ri", cot, kernel[experts])
        gk = np.zeros_like(kernel)
        np.add.at(gk, experts, np.einsum("ri,ro->rio", x[:21], cot))
        return gx, gk

    grouped.set_implementation(implementation)
    try:
        got = gradients(loss, x, kernel)
    finally:
        grouped.set_implementation("auto")
    (gx, gk), (want_x, want_k) = got, reference(x, kernel)
    np.testing.assert_allclose(gx[:21], want_x[:21], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gk, want_k, rtol=1e-4, atol=1e-4)


def test_grouped_matmul_block_size():
    from keras_mtl.backend import grouped

    assert grouped.block_size(32768, 64) == 512
    assert grouped.block_size(24, 4) == 8  # at least 8
    assert grouped.block_size(None, 4) == 64


def test_dropless_keeps_every_assignment_on_a_skewed_router():
    """Capacity factor None: nothing dropped where a capacity would drop."""
    x = _x((40, 6), seed=6)
    capped = _sparse(x, num_experts=4, top_k=2, eval_capacity_factor=0.5)
    capped.router_kernel.assign(np.eye(6, 4, dtype="float32") * 5.0)
    capped(x)
    assert float(to_numpy(capped.dropped_fraction)) > 0.2
    for dispatcher in ("auto", "index", "grouped"):
        layer = _sparse(
            x, num_experts=4, top_k=2, eval_capacity_factor=None, dispatcher=dispatcher
        )
        layer.router_kernel.assign(capped.router_kernel)
        y = to_numpy(layer(x))
        assert float(to_numpy(layer.dropped_fraction)) == 0.0
        np.testing.assert_allclose(to_numpy(layer.expert_load).sum(), 1.0, rtol=1e-6)
        wide = _sparse(x, num_experts=4, top_k=2, eval_capacity_factor=100.0)
        for target, source in zip(wide.weights, layer.weights, strict=True):
            target.assign(source)
        np.testing.assert_allclose(y, to_numpy(wide(x)), atol=2e-6)


def test_auto_dispatcher_picks_grouped_where_fast_or_dropless():
    x = ops.convert_to_tensor(_x((16, 8)))
    aligned = _sparse(_x((16, 8)), expert_hidden_units=[8])
    unaligned = _sparse(_x((16, 8)), expert_hidden_units=[5])
    # On the CPU only torch has a fast native grouped matmul (16-byte rows).
    want = "grouped" if BACKEND == "torch" else "index"
    assert aligned.resolve_dispatcher(x) == want
    assert unaligned.resolve_dispatcher(x) == "index"
    dropless = _sparse(_x((16, 8)), expert_hidden_units=[5], eval_capacity_factor=None)
    assert dropless.resolve_dispatcher(x) == "grouped"
    assert dropless.resolve_dispatcher(x, training=True) == "index"
    explicit = _sparse(_x((16, 8)), dispatcher="einsum", eval_capacity_factor=None)
    assert explicit.resolve_dispatcher(x) == "einsum"


def test_dropless_grouped_needs_no_static_token_count():
    """Without a capacity the grouped dispatcher routes one group of any size."""
    layer = SparseMoE(4, [8], eval_capacity_factor=None, dispatcher="grouped")
    inputs = keras.Input((5, 8))
    assert tuple(layer(inputs).shape) == (None, 5, 8)
    assert layer(_x((3, 5, 8))).shape == (3, 5, 8)


def test_top_k_ties_go_to_the_lower_index_on_every_backend():
    from keras_mtl import gating

    scores = ops.convert_to_tensor(np.array([[1.0, 1.0, 1.0, 0.0]], "float32"))
    values, indices = gating.top_k(scores, 2)
    assert to_numpy(indices).tolist() == [[0, 1]]
    assert to_numpy(values).tolist() == [[1.0, 1.0]]
    nan = ops.convert_to_tensor(np.array([[np.nan, 2.0, 3.0]], "float32"))
    assert (to_numpy(gating.top_k(nan, 2)[1]) < 3).all()  # in range whatever NaN does
    # A zero router: every probability ties; experts 0 and 1 take every token.
    x = _x((6, 4))
    layer = _sparse(x, num_experts=4, top_k=2, eval_capacity_factor=10.0)
    layer.router_kernel.assign(np.zeros((4, 4), "float32"))
    layer(x)
    np.testing.assert_allclose(to_numpy(layer.expert_load), [0.5, 0.5, 0.0, 0.0])


@pytest.mark.parametrize("cls", ["sparse", "hierarchical"])
def test_nan_in_a_padded_token_reaches_neither_output_nor_loss(cls):
    x = _x((16, 8), seed=7)
    x[0, 0] = np.nan
    mask = np.arange(16) > 0
    if cls == "sparse":
        layer = _sparse(
            x, min_capacity=1, importance_loss_weight=0.1, z_loss_weight=1e-3
        )
    else:
        layer = _hier(x, group_size=8, second_policy_train="all")
    y = to_numpy(layer(x, mask=mask, training=True))
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y[0], 0.0)
    assert all(np.isfinite(to_numpy(loss)) for loss in layer.losses)
    for variable in layer.non_trainable_weights:
        assert np.isfinite(to_numpy(variable)).all()


@pytest.mark.parametrize("cls", ["sparse", "sparse_grouped", "hierarchical"])
def test_empty_batch_gives_an_empty_output_and_zero_loss(cls):
    x = np.zeros((0, 5, 6), "float32")
    if cls == "hierarchical":
        layer = HierarchicalMoE((2, 2), 4)
    else:
        dispatcher = "grouped" if cls == "sparse_grouped" else "index"
        layer = SparseMoE(4, [3], group_size=4, dispatcher=dispatcher)
    y = layer(x)
    assert tuple(y.shape) == (0, 5, 6)
    assert [float(to_numpy(loss)) for loss in layer.losses] == [0.0]


@pytest.mark.skipif(BACKEND != "torch", reason="counts torch operators")
@pytest.mark.parametrize("dispatcher", ["index", "grouped", "einsum", "dense"])
def test_no_host_syncs_in_a_torch_forward_and_backward(dispatcher):
    """No read-back and no Python number copied to the device (each a host
    sync on a GPU) in a masked training step (`bench/host_work.py`)."""
    import torch

    from bench import host_work

    x = torch.randn(64, 8, requires_grad=True)
    mask = torch.rand(64) > 0.2
    layer = SparseMoE(
        4, [8], group_size=16, dispatcher=dispatcher, importance_loss_weight=0.1
    )
    step = host_work.forward_backward(layer, x, mask=mask)
    step()
    counts = host_work.count(step)
    assert counts["reads"] == 0, counts["ops"]
    assert counts["scalar_copies"] == 0, counts["copy_sites"]
    if dispatcher == "grouped":
        # The native CPU kernel ran (it reads its offsets on the host).
        assert counts["grouped_mm_reads"] > 0
    hier = HierarchicalMoE((2, 2), 8, group_size=16, second_policy_train="all")
    step = host_work.forward_backward(hier, x, mask=mask)
    step()
    counts = host_work.count(step)
    assert counts["reads"] == 0 and counts["scalar_copies"] == 0, counts["copy_sites"]


# --- bad call inputs -----------------------------------------------------------------


@pytest.mark.parametrize("cls", ["sparse", "hierarchical"])
def test_bad_call_inputs_name_the_layer(cls):
    x = _x((2, 8, 6))
    layer = _sparse(x, group_size=8) if cls == "sparse" else _hier(x, group_size=8)
    name = type(layer).__name__
    with pytest.raises(
        ValueError, match=rf"`{name}`.*last dimension of 6.*\(2, 8, 5\)"
    ):
        layer(_x((2, 8, 5)))
    with pytest.raises(
        ValueError, match=rf"`{name}`.*mask of shape \(2, 8\).*\(2, 7\)"
    ):
        layer(x, mask=np.ones((2, 7), bool))
    if cls == "sparse":
        with pytest.raises(ValueError, match=r"router_noise of shape \(2, 8, 6\)"):
            layer(x, training=True, router_noise=_x((2, 8, 5)))


@pytest.mark.parametrize("cls", ["sparse", "hierarchical"])
def test_integer_inputs_are_cast_to_the_compute_dtype(cls):
    x = np.random.RandomState(0).randint(-3, 4, size=(16, 6))
    layer = (
        _sparse(x.astype("float32"), group_size=8, eval_capacity_factor=4.0)
        if cls == "sparse"
        else _hier(x.astype("float32"), group_size=8, second_policy_eval="all")
    )
    np.testing.assert_allclose(
        to_numpy(layer(x.astype("int32"))),
        to_numpy(layer(x.astype("float32"))),
        rtol=1e-6,
    )


def test_deprecated_spellings_load_old_configs():
    """Configs saved before the renames (`balance_loss_weight`,
    `gate_type="noisy_topk"`) load, warn and give the same layer."""
    old = SparseMoE(num_experts=4, expert_hidden_units=[3]).get_config()
    old.pop("switch_loss_weight")
    old.update(balance_loss_weight=0.3, gate_type="noisy_topk")
    with pytest.warns(DeprecationWarning, match="switch_loss_weight"):
        layer = SparseMoE.from_config(old)
    assert (layer.switch_loss_weight, layer.gate_type) == (0.3, "noise_topk")
    config = layer.get_config()
    assert "balance_loss_weight" not in config
    assert config["gate_type"] == "noise_topk"
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match="balance_loss_weight=nan"),
    ):
        SparseMoE(num_experts=4, expert_hidden_units=[3], balance_loss_weight=np.nan)
    with pytest.raises(ValueError, match="not both"):
        SparseMoE(
            num_experts=4,
            expert_hidden_units=[3],
            switch_loss_weight=0.2,
            balance_loss_weight=0.3,
        )


@pytest.mark.parametrize("cls", ["sparse", "hierarchical"])
def test_numeric_masks_are_real_where_at_least_one(cls):
    """The library's one mask rule (`numerics.real_mask`): a numeric mask is
    real where `>= 1`, so 0.5 is padding, as in the sequence layers."""
    x = np.random.default_rng(3).normal(size=(8, 4)).astype("float32")
    numeric = np.array([1.0, 0.5, 2.0, 0.0, 1.0, 0.25, 1.0, 1.0], "float32")
    if cls == "sparse":
        layer = SparseMoE(num_experts=4, expert_hidden_units=[3], min_capacity=8)
    else:
        # "all": the default "random" second-expert policy samples per call.
        layer = HierarchicalMoE(
            num_experts=[2, 2],
            expert_hidden_units=3,
            group_size=8,
            min_capacity=8,
            second_policy_eval="all",
        )
    got = ops.convert_to_numpy(layer(x, mask=numeric))
    want = ops.convert_to_numpy(layer(x, mask=numeric >= 1))
    np.testing.assert_array_equal(got, want)
    assert (got[numeric < 1] == 0).all()
