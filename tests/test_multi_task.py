"""Unit tests for the multi-task family (MMoE, SNR, CGC, PLE, GradNorm,
UncertaintyWeighting; run once per KERAS_BACKEND).

Deterministic outputs are pinned by the conformance specs (`specs/multi_task/mmoe*`,
`specs/multi_task/snr*`); these tests cover argument errors, stochastic properties,
config round-trips and GradNorm's and UncertaintyWeighting's training
(the loss-falls check of every layer: `tests/test_training.py`).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import gating
from keras_mtl import layers
from keras_mtl import models
from keras_mtl.backend.grad_norm import task_losses_and_grad_norms
from keras_mtl.layers import CGC
from keras_mtl.layers import PLE
from keras_mtl.layers import SNR
from keras_mtl.layers import MMoE
from tests._helpers import assert_bad_argument_named
from tests._helpers import bad_arguments
from tests._helpers import config_round_trip
from tests._helpers import gradients
from tests._helpers import to_numpy


def _x(shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape).astype("float32")


def _randomize(layer, seed=0):
    rng = np.random.RandomState(seed)
    for v in layer.weights:
        v.assign(rng.standard_normal(v.shape).astype("float32"))


# --- gating helpers ---------------------------------------------------------


def test_top_k_mask_breaks_ties_by_index():
    scores = ops.convert_to_tensor(
        np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 2.0, 0.5], [3.0, 1.0, 3.0, 3.0]])
    )
    mask = to_numpy(gating.top_k_mask(scores, 2))
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0]])


# --- MMoE: argument errors --------------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"num_experts": 3, "gate_type": "topk", "top_k": 5},
            r"Received: top_k=5 with num_experts=3",
        ),
        ({"num_experts": 3, "gate_type": "sparse"}, r"gate_type='sparse'"),
        ({"num_experts": 3, "top_k": 0}, r"top_k=0"),
        ({"num_experts": 3, "temperature": 0.0}, r"temperature=0.0"),
        ({"num_experts": 3, "balance_loss_weight": -1.0}, r"balance_loss_weight"),
        ({"num_experts": None}, r"num_experts=None"),
        ({"num_experts": 0}, r"num_experts=0"),
        (
            {"num_experts": 2, "expert_initializers": ["zeros"] * 3},
            r"3 expert_initializers with num_experts=2",
        ),
    ],
)
def test_mmoe_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MMoE(2, [4, 3], "relu", **kwargs)


def test_mmoe_mismatched_expert_output_dims():
    with pytest.raises(ValueError, match=r"expert_output_dims=\[\[4, 3\], \[2\]\]"):
        MMoE(2, [[4, 3], [2]], "relu")


def test_mmoe_per_expert_dims_must_match_num_experts():
    with pytest.raises(ValueError, match=r"2 expert_output_dims with num_experts=3"):
        MMoE(2, [[4, 3], [3]], "relu", num_experts=3)


def test_mmoe_activation_list_length():
    with pytest.raises(ValueError, match=r"3 expert_activations with num_experts=2"):
        MMoE(2, [[4], [4]], ["relu", "tanh", "relu"])


def test_mmoe_unknown_activation():
    with pytest.raises(ValueError, match=r"activation='nope'"):
        MMoE(2, [4], "nope", num_experts=2)


def test_mmoe_wrong_number_of_inputs():
    layer = MMoE(2, [4], "relu", num_experts=2)
    with pytest.raises(ValueError, match=r"Received: 3 inputs"):
        layer([_x((2, 3)), _x((2, 3)), _x((2, 3))])


NAN, INF = float("nan"), float("inf")
BAD_BOOLS = [2, "yes", None]
MMOE = {"num_tasks": 2, "expert_output_dims": [4, 3], "expert_activations": "relu"}
MMOE_3 = {**MMOE, "num_experts": 3}
CGC_ = {"num_tasks": 2, "expert_output_dims": [4, 3]}
SNR_ = {"num_out_subnet": 2, "out_subnet_dim": 3}

# (layer class, a valid configuration, argument, bad values)
BAD_ARGUMENTS = [
    (MMoE, MMOE_3, "num_tasks", [0, 2.5, "3", True]),
    (MMoE, MMOE_3, "expert_output_dims", ["3", [], [4, 0], [[4], []], [2.5]]),
    (MMoE, MMOE_3, "expert_activations", ["nope", ["relu", "nope", "relu"]]),
    (MMoE, MMOE_3, "expert_initializers", ["nope", ["ones", "zeros", "nope"]]),
    (MMoE, MMOE_3, "gate_type", ["sparse"]),
    (MMoE, MMOE_3, "top_k", [0, 2.5, "1", True]),
    (MMoE, {**MMOE, "expert_output_dims": [[4, 3], [3]]}, "num_experts", [0, "3"]),
    (MMoE, MMOE_3, "num_experts", [True, -1, 2.5]),
    (MMoE, MMOE_3, "kernel_regularizer", ["nope"]),
    (MMoE, MMOE_3, "bias_regularizer", ["nope"]),
    (MMoE, MMOE_3, "use_weight_norm", BAD_BOOLS),
    (MMoE, MMOE_3, "use_learnable_weight_norm", BAD_BOOLS),
    (MMoE, MMOE_3, "use_bias", BAD_BOOLS),
    (MMoE, MMOE_3, "enable_batch_normalization", BAD_BOOLS),
    (MMoE, MMOE_3, "batch_normalization_renorm", BAD_BOOLS),
    (MMoE, MMOE_3, "batch_normalization_momentum", [1.5, -0.1, NAN, "0.9"]),
    (MMoE, MMOE_3, "batch_normalization_renorm_momentum", [INF, "0.9"]),
    (MMoE, MMOE_3, "batch_normalization_renorm_clipping", [{"x": 1.0}, 1.0]),
    (MMoE, MMOE_3, "balance_loss_weight", [-1.0, NAN, INF, "1.0", True]),
    (MMoE, MMOE_3, "temperature", [0.0, -1.0, NAN, INF, "1.0", True]),
    (MMoE, MMOE_3, "return_gates", BAD_BOOLS),
    (MMoE, MMOE_3, "seed", [2.5, "3", True]),
    (CGC, CGC_, "num_tasks", [0, 2.5, "3", True]),
    (CGC, CGC_, "expert_output_dims", ["3", [], [4, -1], True]),
    (CGC, CGC_, "num_task_experts", [0, 2.5, "3", True, [1, 0], []]),
    (CGC, CGC_, "num_shared_experts", [0, 2.5, "3", True]),
    (CGC, CGC_, "expert_activations", ["nope", ["relu", 3]]),
    (CGC, CGC_, "expert_initializers", ["nope", 3]),
    (CGC, CGC_, "kernel_regularizer", ["nope"]),
    (CGC, CGC_, "bias_regularizer", ["nope"]),
    (CGC, CGC_, "use_weight_norm", BAD_BOOLS),
    (CGC, CGC_, "use_learnable_weight_norm", BAD_BOOLS),
    (CGC, CGC_, "use_bias", BAD_BOOLS),
    (CGC, CGC_, "temperature", [0.0, NAN, INF, "1.0", True]),
    (CGC, CGC_, "shared_output", BAD_BOOLS),
    (CGC, CGC_, "return_gates", BAD_BOOLS),
    (PLE, CGC_, "num_levels", [0, 2.5, "2", True]),
    (PLE, CGC_, "expert_output_dims", ["3", [], [[4], []], [[4], [2.5]]]),
    (PLE, CGC_, "num_task_experts", ["1", True]),
    (PLE, CGC_, "expert_activations", ["nope"]),
    (PLE, CGC_, "expert_initializers", ["nope"]),
    (PLE, CGC_, "use_bias", BAD_BOOLS),
    (PLE, CGC_, "temperature", [NAN, INF, "1.0"]),
    (PLE, CGC_, "return_gates", BAD_BOOLS),
    (SNR, SNR_, "num_out_subnet", [0, 2.5, "3", True]),
    (SNR, SNR_, "out_subnet_dim", [0, 2.5, "3", True]),
    (SNR, SNR_, "snr_type", ["sum"]),
    (SNR, SNR_, "zeta", [1.0, NAN, INF, "1.1", True]),
    (SNR, SNR_, "gamma", [0.1, NAN, -INF, "-0.1"]),
    (SNR, SNR_, "beta", [0.0, NAN, INF, "0.5"]),
    (SNR, SNR_, "use_ste", BAD_BOOLS),
    (SNR, SNR_, "initializer", ["nope", 3]),
    (SNR, SNR_, "regularizer", ["nope"]),
    (SNR, SNR_, "l0_weight", [-0.5, NAN, INF, "1.0"]),
    (SNR, SNR_, "seed", [2.5, "3", True]),
]


@pytest.mark.backend_independent
@pytest.mark.parametrize("cls, config, name, value", bad_arguments(BAD_ARGUMENTS))
def test_bad_argument_raises_value_error_naming_it(cls, config, name, value):
    assert_bad_argument_named(cls, config, name, value, received=".*{name}")


@pytest.mark.backend_independent
def test_int_means_a_list_of_one_and_round_trips():
    for layer in (
        MMoE(2, 3, "relu", num_experts=2),
        CGC(2, 3),
        PLE(2, 3),
    ):
        dims = layer.expert_output_dims
        assert dims in ([[3], [3]], [3]), dims
        config_round_trip(layer)


# --- call inputs --------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: MMoE(2, [3], "relu", num_experts=2),
        lambda: MMoE(2, [[3], [2, 3]], "relu"),  # per-expert MLPs
        lambda: CGC(2, [3], shared_output=True),
        lambda: PLE(2, [3]),
    ],
    ids=["mmoe", "mmoe_per_expert", "cgc", "ple"],
)
def test_feature_size_or_rank_other_than_built_names_the_layer(make):
    layer = make()
    layer(_x((3, 4)))
    named = rf"`{type(layer).__name__}` \(layer '{layer.name}'\) expects"
    with pytest.raises(ValueError, match=named + r".*last dimension of 4.*\(3, 5\)"):
        layer(_x((3, 5)))
    with pytest.raises(ValueError, match=named + r".*\(None, 5\)"):
        layer(keras.Input((5,)))  # Symbolic, as in a functional model.
    with pytest.raises(ValueError, match=named + r".*rank 2.*\(3, 2, 4\)"):
        layer(_x((3, 2, 4)))  # Used to be reshaped silently into 6 rows.


def test_mmoe_gate_input_checks():
    layer = MMoE(2, [3], "relu", num_experts=2)
    layer([_x((3, 4)), _x((3, 2))])
    with pytest.raises(ValueError, match=r"gate_input with a last dimension of 2"):
        layer([_x((3, 4)), _x((3, 4))])
    with pytest.raises(ValueError, match=r"the same batch size"):
        layer([_x((3, 4)), _x((2, 2))])
    with pytest.raises(ValueError, match=r"list of 2 tensors. Received: 3 tensor"):
        layer([_x((3, 4)), _x((3, 2)), _x((3, 2))])
    with pytest.raises(ValueError, match=r"gate_input with a last dimension of 2"):
        layer(_x((3, 4)))  # One tensor is both inputs.


@pytest.mark.parametrize("cls", [CGC, PLE])
def test_cgc_ple_wrong_number_of_inputs_names_the_layer(cls):
    layer = cls(2, [3])
    layer([_x((2, 4))] * 3)
    with pytest.raises(
        ValueError,
        match=rf"`{cls.__name__}` \(layer '{layer.name}'\) expects a list of 3 "
        r"tensors. Received: 2",
    ):
        layer([_x((2, 4))] * 2)


@pytest.mark.parametrize(
    "make, inputs",
    [
        (lambda: MMoE(2, [3, 2], "relu", num_experts=3), lambda x: x),
        (lambda: MMoE(2, [[3, 2], [2]], "relu"), lambda x: x),
        (lambda: CGC(2, [3], shared_output=True, return_gates=True), lambda x: x),
        (lambda: PLE(2, [3, 2]), lambda x: x),
        (lambda: SNR(2, 3), lambda x: [x, x + 1]),
    ],
    ids=["mmoe", "mmoe_per_expert", "cgc", "ple", "snr"],
)
def test_integer_inputs_are_cast_to_the_compute_dtype(make, inputs):
    """The same outputs as for float inputs, on every backend (TF raised dtype
    errors, torch failed in the stacked matmuls)."""
    layer = make()
    values = np.arange(12).reshape(3, 4)
    want = [to_numpy(y) for y in layer(inputs(values.astype("float32")))]
    got = layer(inputs(values.astype("int32")))
    for a, b in zip(got, want, strict=True):
        assert keras.backend.standardize_dtype(a.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-6)


# --- MMoE: structure and gates ----------------------------------------------


def test_mmoe_stacked_weights_and_outputs():
    layer = MMoE(3, [4, 2], "relu", num_experts=5, name="m")
    outputs = layer(_x((6, 7)))
    assert layer.stacked
    assert len(outputs) == 3 and all(tuple(o.shape) == (6, 2) for o in outputs)
    shapes = {v.path: tuple(v.shape) for v in layer.weights}
    assert shapes["m/experts/dense_0/kernel"] == (5, 7, 4)
    assert shapes["m/experts/dense_1/kernel"] == (5, 4, 2)
    assert shapes["m/gate_weight"] == (7, 15)
    assert layer.losses == []  # softmax gates add no loss


def test_mmoe_stacked_matches_per_expert_mlps():
    """Stacked experts compute what separate per-expert MLPs compute."""
    x = _x((4, 5), 1)
    stacked = MMoE(2, [3, 2], "tanh", num_experts=3, return_gates=True)
    looped = MMoE(2, [[3, 2]] * 3, ["tanh", "tanh", "tanh"], return_gates=True)
    # Differently written activations stop the stacking: force the loop path.
    looped_layer = MMoE(
        2, [[3, 2], [3, 2], [3, 2]], ["tanh", "Tanh", "tanh"], return_gates=True
    )
    assert looped.stacked and not looped_layer.stacked
    stacked(x)
    looped_layer(x)
    _randomize(stacked, 3)
    sv = {v.path.split("/", 1)[1]: to_numpy(v.value) for v in stacked.weights}
    for v in looped_layer.weights:
        rel = v.path.split("/", 1)[1]
        if rel.startswith("expert_"):
            e, rest = rel.split("/", 1)
            v.assign(sv[f"experts/{rest}"][int(e.split("_")[1])])
        else:
            v.assign(sv[rel])
    for a, b in zip(stacked(x), looped_layer(x), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)


def _stacked_value(sv, rel, e, num_experts):
    """Expert e's slice of a stacked weight (BN weights are [E * d])."""
    value = sv[rel]
    if "batch_norm" in rel:
        return value.reshape(num_experts, -1)[e]
    return value[e]


def test_mmoe_stacked_batch_norm_matches_per_expert_mlps():
    """Per-expert batch norm of stacked experts, moving statistics included."""
    x = _x((8, 5), 1)
    kwargs = {"enable_batch_normalization": True, "return_gates": True}
    stacked = MMoE(2, [3, 2], "relu", num_experts=3, **kwargs)
    looped = MMoE(2, [[3, 2]] * 3, ["relu", "ReLU", "relu"], **kwargs)
    assert stacked.stacked and not looped.stacked
    stacked(x)
    looped(x)
    _randomize(stacked, 3)
    for v in stacked.weights:
        if "moving_variance" in v.path:
            v.assign(np.abs(to_numpy(v.value)) + 0.5)
    sv = {v.path.split("/", 1)[1]: to_numpy(v.value) for v in stacked.weights}
    for v in looped.weights:
        rel = v.path.split("/", 1)[1]
        if rel.startswith("expert_"):
            e, rest = rel.split("/", 1)
            v.assign(_stacked_value(sv, f"experts/{rest}", int(e.split("_")[1]), 3))
        else:
            v.assign(sv[rel])
    for training in (False, True):
        for a, b in zip(
            stacked(x, training=training), looped(x, training=training), strict=True
        ):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-5)
    sv = {v.path.split("/", 1)[1]: to_numpy(v.value) for v in stacked.weights}
    for v in looped.weights:
        rel = v.path.split("/", 1)[1]
        if rel.startswith("expert_") and "moving" in rel:
            e, rest = rel.split("/", 1)
            want = _stacked_value(sv, f"experts/{rest}", int(e.split("_")[1]), 3)
            np.testing.assert_allclose(to_numpy(v.value), want, rtol=1e-5, atol=1e-6)


def test_seeded_initializer_gives_distinct_experts():
    init = keras.initializers.GlorotUniform(seed=4)
    mmoe = MMoE(2, [3], "relu", num_experts=3, expert_initializers=init)
    cgc = CGC(2, [3], expert_initializers=init)
    for layer in (mmoe, cgc):
        layer(_x((2, 4)))
        kernel = to_numpy(layer.experts.dense_layers[0].kernel.value)
        assert not np.allclose(kernel[0], kernel[1])
    seeds = [c["config"]["seed"] for c in mmoe.get_config()["expert_initializers"]]
    assert seeds == [4, 5, 6]


def test_mmoe_topk_keeps_exactly_k_at_zero_init():
    layer = MMoE(
        2, [3], "relu", num_experts=4, gate_type="topk", top_k=2, return_gates=True
    )
    *_, gates = layer(_x((3, 5)))
    gates = to_numpy(gates)
    np.testing.assert_allclose(gates[..., :2], 0.5, rtol=1e-6)
    np.testing.assert_array_equal(gates[..., 2:], 0.0)
    # importance per task [1.5, 1.5, 0, 0]: cv2 = 1 per task, summed over 2 tasks.
    np.testing.assert_allclose(to_numpy(layer.losses[0]), 2.0, rtol=1e-5)


def test_mmoe_balance_loss_coefficient():
    layer = MMoE(
        2,
        [3],
        "relu",
        num_experts=4,
        gate_type="topk",
        top_k=2,
        balance_loss_weight=0.25,
    )
    layer(_x((3, 5)))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(to_numpy(layer.losses[0]), 0.5, rtol=1e-5)


def test_mmoe_noise_only_in_training_and_properties():
    k = 2
    layer = MMoE(
        3,
        [4],
        "relu",
        num_experts=5,
        gate_type="noise_topk",
        top_k=k,
        return_gates=True,
        seed=1,
    )
    x = _x((64, 6), 2)
    layer(x)
    _randomize(layer, 4)
    inf_a = to_numpy(layer(x, training=False)[-1])
    inf_b = to_numpy(layer(x, training=False)[-1])
    np.testing.assert_array_equal(inf_a, inf_b)
    train_a = to_numpy(layer(x, training=True)[-1])
    train_b = to_numpy(layer(x, training=True)[-1])
    for g in (inf_a, train_a, train_b):
        assert np.all(g >= 0.0)
        assert np.all(np.count_nonzero(g, axis=-1) <= k)
        np.testing.assert_allclose(g.sum(axis=-1), 1.0, rtol=1e-5)
    assert not np.allclose(train_a, inf_a)
    assert not np.allclose(train_a, train_b)  # the seed generator advances


def test_mmoe_noise_reproducible_with_seed():
    x = _x((16, 4), 5)

    def gates(seed):
        layer = MMoE(
            2,
            [3],
            "relu",
            num_experts=4,
            gate_type="noise_topk",
            top_k=2,
            return_gates=True,
            seed=seed,
        )
        layer(x)
        _randomize(layer, 6)
        return to_numpy(layer(x, training=True)[-1])

    np.testing.assert_array_equal(gates(11), gates(11))
    assert not np.allclose(gates(11), gates(12))


def test_mmoe_separate_gate_input():
    layer = MMoE(2, [3], "relu", num_experts=3, return_gates=True, name="m")
    *outs, gates = layer([_x((4, 5)), _x((4, 2), 1)])
    assert tuple(gates.shape) == (4, 2, 3)
    assert {v.path: tuple(v.shape) for v in layer.weights}["m/gate_weight"] == (2, 6)


def test_mmoe_mixed_precision_routes_in_float32():
    layer = MMoE(
        2,
        [3],
        "relu",
        num_experts=3,
        gate_type="topk",
        top_k=2,
        return_gates=True,
        dtype="mixed_float16",
    )
    outputs = layer(_x((4, 5)))
    for o in outputs:
        assert keras.backend.standardize_dtype(o.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.losses[0].dtype) == "float32"


# --- MMoE: config -----------------------------------------------------------


def test_mmoe_config_roundtrip_every_argument():
    kwargs = {
        "num_tasks": 3,
        "expert_output_dims": [[5, 2], [2]],
        "expert_activations": ["tanh", "sigmoid2"],
        "expert_initializers": [
            keras.initializers.HeNormal(seed=1),
            keras.initializers.RandomUniform(-0.1, 0.1, seed=2),
        ],
        "gate_type": "noise_topk",
        "top_k": 2,
        "num_experts": 2,
        "kernel_regularizer": keras.regularizers.L2(0.01),
        "use_weight_norm": False,
        "use_learnable_weight_norm": False,
        "use_bias": False,
        "bias_regularizer": keras.regularizers.L1(0.02),
        "enable_batch_normalization": True,
        "batch_normalization_momentum": 0.9,
        "batch_normalization_renorm": True,
        "batch_normalization_renorm_clipping": {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0},
        "batch_normalization_renorm_momentum": 0.8,
        "balance_loss_weight": 0.3,
        "temperature": 0.7,
        "return_gates": True,
        "seed": 9,
    }
    layer = MMoE(**kwargs)
    config = layer.get_config()
    assert config["expert_activations"] == ["tanh", "sigmoid2"]
    assert config["expert_initializers"][0]["class_name"] == "HeNormal"
    clone = config_round_trip(layer, kwargs)
    # The activations still act after the round-trip.
    x = _x((8, 4))
    y = layer(x)
    clone(x)
    clone.set_weights(layer.get_weights())
    for a, b in zip(y, clone(x), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)


def test_mmoe_saves_and_loads(tmp_path):
    inp = keras.Input((5,))
    layer = MMoE(2, [4, 3], "relu", num_experts=3, gate_type="topk", top_k=2)
    model = keras.Model(inp, layer(inp))
    _randomize(layer, 1)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _x((4, 5))
    for a, b in zip(model(x), loaded(x), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)


# --- MMoE: training ---------------------------------------------------------


# --- SNR --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"snr_type": "sum"}, r"snr_type='sum'"),
        ({"zeta": 1.0}, r"zeta=1.0"),
        ({"gamma": 0.1}, r"gamma=0.1"),
        ({"beta": 0.0}, r"beta=0.0"),
        ({"l0_weight": -0.5}, r"l0_weight=-0.5"),
    ],
)
def test_snr_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SNR(2, 3, **kwargs)


def test_snr_bad_inputs():
    with pytest.raises(ValueError, match=r"input last dims=\[3, 4\]"):
        SNR(2, 3)([_x((2, 3)), _x((2, 4))])
    with pytest.raises(ValueError, match=r"out_subnet_dim=2 with input dim 3"):
        SNR(2, 2, snr_type="aver")([_x((2, 3)), _x((2, 3))])
    with pytest.raises(ValueError, match=r"list of input tensors"):
        SNR(2, 3)(_x((2, 3)))
    layer = SNR(2, 3)
    layer([_x((2, 3)), _x((2, 3))])
    with pytest.raises(ValueError, match=r"list of 2 tensors. Received: 3 tensor"):
        layer([_x((2, 3)), _x((2, 3)), _x((2, 3))])
    with pytest.raises(ValueError, match=r"inputs\[1\] with a last dimension of 3"):
        layer([_x((2, 3)), _x((2, 4))])
    with pytest.raises(ValueError, match=r"inputs\[0\] with a last dimension of 3"):
        layer([keras.Input((4,)), keras.Input((4,))])  # Symbolic, as in a model.
    with pytest.raises(ValueError, match=r"rank 2.*inputs\[0\] of shape \(2, 1, 3\)"):
        layer([_x((2, 1, 3)), _x((2, 3))])
    with pytest.raises(ValueError, match=r"the same batch size"):
        layer([_x((2, 3)), _x((3, 3))])


def test_snr_weights_and_l0_loss():
    layer = SNR(2, 4, name="s")
    outputs = layer([_x((5, 3)), _x((5, 3), 1), _x((5, 3), 2)])
    assert [tuple(o.shape) for o in outputs] == [(5, 4), (5, 4)]
    shapes = {v.path: tuple(v.shape) for v in layer.weights}
    assert shapes == {"s/log_alpha": (6, 1), "s/weight": (6, 12)}
    # log_alpha = 0: each route contributes sigmoid(-beta * log(-gamma / zeta)).
    expected = 6.0 / (1.0 + np.exp(0.5 * np.log(0.1 / 1.1)))
    assert len(layer.losses) == 1
    np.testing.assert_allclose(to_numpy(layer.losses[0]), expected, rtol=1e-5)


def test_snr_sampling_only_in_training():
    layer = SNR(3, 2, snr_type="aver", seed=5)
    xs = [_x((4, 2), i) for i in range(3)]
    layer(xs)
    layer.log_alpha.assign(_x((9, 1), 7))
    inf_a = to_numpy(layer.gates(training=False))
    inf_b = to_numpy(layer.gates(training=False))
    np.testing.assert_array_equal(inf_a, inf_b)
    expected = np.clip(1.0 / (1.0 + np.exp(-_x((9, 1), 7))) * 1.2 - 0.1, 0, 1)
    np.testing.assert_allclose(inf_a, expected, rtol=1e-5, atol=1e-7)
    samples = np.stack([to_numpy(layer.gates(training=True)) for _ in range(200)])
    assert np.all((samples >= 0.0) & (samples <= 1.0))
    assert np.any(samples == 0.0) and np.any(samples == 1.0)  # hard gates
    assert not np.allclose(samples[0], samples[1])
    y_inf = [to_numpy(o) for o in layer(xs, training=False)]
    y_inf2 = [to_numpy(o) for o in layer(xs, training=False)]
    for a, b in zip(y_inf, y_inf2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_snr_sampling_reproducible_with_seed():
    def gates(seed):
        layer = SNR(2, 2, snr_type="aver", seed=seed)
        layer([_x((2, 2)), _x((2, 2), 1)])
        return np.stack([to_numpy(layer.gates(training=True)) for _ in range(3)])

    np.testing.assert_array_equal(gates(4), gates(4))
    assert not np.allclose(gates(4), gates(5))


def _gate_grad(use_ste, value):
    """d sum(z) / d log_alpha at a given log_alpha, deterministic gates."""
    log_alpha = ops.convert_to_tensor(np.full((3, 1), value, dtype="float32"))

    def f(la):
        return ops.sum(
            gating.hard_concrete(la, training=False, straight_through=use_ste)
        )

    return gradients(f, log_alpha)[0]


def test_snr_straight_through_gradient():
    # log_alpha = 5: s_bar = sigmoid(5) * 1.2 - 0.1 > 1, so the clip is active.
    s = 1.0 / (1.0 + np.exp(-5.0))
    ds = s * (1.0 - s) * 1.2
    np.testing.assert_allclose(_gate_grad(True, 5.0), ds, rtol=1e-4)
    np.testing.assert_allclose(_gate_grad(False, 5.0), 0.0)
    # Inside the interval both agree.
    np.testing.assert_allclose(_gate_grad(True, 0.3), _gate_grad(False, 0.3))


def test_snr_config_roundtrip_every_argument():
    kwargs = {
        "num_out_subnet": 3,
        "out_subnet_dim": 2,
        "snr_type": "trans",
        "zeta": 1.3,
        "gamma": -0.3,
        "beta": 0.7,
        "use_ste": True,
        "initializer": keras.initializers.HeNormal(seed=2),
        "regularizer": keras.regularizers.L2(0.01),
        "l0_weight": 0.05,
        "seed": 8,
    }
    config_round_trip(SNR(**kwargs), kwargs)


# --- CGC / PLE --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"num_task_experts": [1, 2, 3]},
            r"num_task_experts=\[1, 2, 3\] with num_tasks=2",
        ),
        ({"num_task_experts": 0}, r"num_task_experts=0"),
        ({"num_shared_experts": 0}, r"num_shared_experts=0"),
        ({"expert_activations": ["relu"]}, r"1 expert_activations for"),
        ({"temperature": -1.0}, r"temperature=-1.0"),
        ({"expert_activations": "nope"}, r"activation='nope'"),
    ],
)
def test_cgc_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CGC(2, [4, 3], **kwargs)


def test_cgc_bad_inputs():
    layer = CGC(2, [3])
    with pytest.raises(ValueError, match=r"Received: 2 inputs with num_tasks=2"):
        layer([_x((2, 3)), _x((2, 3))])
    with pytest.raises(ValueError, match=r"input last dims=\[3, 3, 4\]"):
        CGC(2, [3])([_x((2, 3)), _x((2, 3)), _x((2, 4))])


def test_ple_bad_arguments():
    with pytest.raises(ValueError, match=r"num_levels=0"):
        PLE(2, [3], num_levels=0)
    with pytest.raises(ValueError, match=r"3 expert_output_dims with num_levels=2"):
        PLE(2, [[3], [3], [3]], num_levels=2)


def test_cgc_gates_and_outputs():
    layer = CGC(
        3,
        [4, 2],
        num_task_experts=[1, 2, 1],
        num_shared_experts=2,
        shared_output=True,
        return_gates=True,
        name="c",
    )
    layer(_x((5, 3)))
    _randomize(layer, 2)
    *outputs, gates = layer(_x((5, 3)))
    assert [tuple(o.shape) for o in outputs] == [(5, 2)] * 4
    gates = to_numpy(gates)
    assert gates.shape == (5, 4, 6)
    np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-5)
    # Task 1 sees its experts 1, 2 and the shared experts 4, 5 only.
    np.testing.assert_array_equal(gates[:, 1, [0, 3]], 0.0)
    assert np.all(gates[:, 1, [1, 2, 4, 5]] > 0)
    assert np.all(gates[:, 3] > 0)  # the shared gate sees every expert
    shapes = {v.path: tuple(v.shape) for v in layer.weights}
    assert shapes["c/experts/dense_0/kernel"] == (6, 3, 4)
    assert shapes["c/task_gate_1"] == (3, 4)
    assert shapes["c/shared_gate"] == (3, 6)


def test_ple_return_gates():
    kwargs = {"num_levels": 3, "num_task_experts": [1, 2], "num_shared_experts": 2}
    plain = PLE(2, [[4], [3], [2]], **kwargs)
    layer = PLE(2, [[4], [3], [2]], return_gates=True, **kwargs)
    x = _x((5, 3))
    plain(x)
    layer(x)
    _randomize(layer, 3)
    plain.set_weights(layer.get_weights())  # same weight names and order
    *outputs, g0, g1, g2 = layer(x)
    for a, b in zip(outputs, plain(x), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)
    assert [tuple(g.shape) for g in (g0, g1, g2)] == [(5, 3, 5)] * 2 + [(5, 2, 5)]
    for g in (g0, g1, g2):
        np.testing.assert_allclose(to_numpy(g).sum(-1), 1.0, rtol=1e-5)
    # Task 0 sees its expert 0 and the shared experts 3, 4 only.
    np.testing.assert_array_equal(to_numpy(g2)[:, 0, [1, 2]], 0.0)
    assert np.all(to_numpy(g1)[:, 2] > 0)  # a shared gate sees every expert
    # Symbolic: a functional model's outputs have the shapes of the eager ones.
    inp = keras.Input((3,))
    symbolic = PLE(2, [[4], [3], [2]], return_gates=True, **kwargs)(inp)
    assert [tuple(t.shape) for t in symbolic] == [(None, 2)] * 2 + [
        (None, 3, 5),
        (None, 3, 5),
        (None, 2, 5),
    ]


def test_ple_mixed_precision():
    layer = PLE(2, [4, 3], dtype="mixed_bfloat16")
    outputs = layer(_x((4, 5)))
    for o in outputs:
        assert keras.backend.standardize_dtype(o.dtype) == "bfloat16"
    for v in layer.weights:
        assert v.dtype == "float32"


@pytest.mark.parametrize("cls", [CGC, PLE])
def test_cgc_ple_config_roundtrip_every_argument(cls):
    kwargs = {
        "num_tasks": 2,
        "expert_output_dims": [5, 3],
        "num_task_experts": [2, 1],
        "num_shared_experts": 3,
        "expert_activations": ["sigmoid2", "tanh"],
        "expert_initializers": keras.initializers.HeNormal(),
        "kernel_regularizer": keras.regularizers.L2(0.01),
        "use_weight_norm": False,
        "use_learnable_weight_norm": False,
        "use_bias": False,
        "bias_regularizer": keras.regularizers.L1(0.02),
        "temperature": 0.7,
    }
    if cls is CGC:
        kwargs.update(shared_output=True, return_gates=True)
    else:
        kwargs.update(num_levels=3, return_gates=True)
    layer = cls(**kwargs)
    clone = config_round_trip(layer, kwargs)
    x = _x((4, 3))
    y = layer(x)
    clone(x)
    clone.set_weights(layer.get_weights())
    for a, b in zip(y, clone(x), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)


def test_affine_adapters_match_numpy():
    """The torch-fused and the `keras.ops` forms of `x @ W + b` agree."""
    from keras_mtl.backend.affine import affine
    from keras_mtl.backend.affine import batched_affine

    rng = np.random.RandomState(0)
    x, w, b = (rng.standard_normal(s).astype("float32") for s in [(4, 5), (5, 3), (3,)])
    np.testing.assert_allclose(
        to_numpy(affine(x, w, b)), x @ w + b, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(to_numpy(affine(x, w)), x @ w, rtol=1e-5, atol=1e-6)
    xs, ws, bs = (
        rng.standard_normal(s).astype("float32") for s in [(2, 4, 5), (2, 5, 3), (2, 3)]
    )
    np.testing.assert_allclose(
        to_numpy(batched_affine(xs, ws, bs)),
        xs @ ws + bs[:, None],
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        to_numpy(batched_affine(xs, ws)), xs @ ws, rtol=1e-5, atol=1e-6
    )


def test_stacked_dense_matches_dense_per_slice_and_roundtrips():
    from keras_mtl.layers.core.stacked_mlp import StackedDense

    layer = StackedDense(3, 2, ["glorot_uniform"] * 3, allow_kernel_norm=True)
    x = _x((4, 5))
    y = to_numpy(layer(x))
    kernel = to_numpy(layer.kernel.value)
    norms = to_numpy(layer.kernel_norm.value)
    np.testing.assert_allclose(norms, np.linalg.norm(kernel, axis=1), rtol=1e-5)
    for e in range(3):
        np.testing.assert_allclose(y[:, e], x @ kernel[e], rtol=1e-4, atol=1e-5)
    config_round_trip(layer)


def test_mmoe_experts_take_one_activation_per_layer():
    """`[["relu", "relu"]] * E`: relu on every expert layer (DeepCTR's
    experts), stacked, equal to per-expert MLPs with that list."""
    from keras_mtl.layers import MLP
    from keras_mtl.layers import MMoE

    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    acts = [["relu", "relu"]] * 3
    layer = MMoE(num_tasks=2, expert_output_dims=[4, 3], expert_activations=acts)
    assert layer.stacked
    outputs = layer(x)
    # Gate weights start at zero: every task mixes the experts equally.
    experts = []
    for e in range(3):
        mlp = MLP([4, 3], activations=["relu", "relu"])
        mlp.build((None, 5))
        for i, dense in enumerate(mlp.dense_layers):
            dense.kernel.assign(layer.experts.dense_layers[i].kernel[e])
            dense.kernel_norm.assign(layer.experts.dense_layers[i].kernel_norm[e])
            dense.bias.assign(layer.experts.dense_layers[i].bias[e])
        experts.append(ops.convert_to_numpy(mlp(x)))
    expected = np.mean(experts, axis=0)
    assert (np.stack(experts) >= 0).all()  # relu on the last layer too
    for out in outputs:
        np.testing.assert_allclose(ops.convert_to_numpy(out), expected, atol=1e-5)
    again = config_round_trip(layer)
    assert again.expert_activations == [["relu", "relu"]] * 3
    with pytest.raises(ValueError, match="one activation per expert layer"):
        MMoE(num_tasks=2, expert_output_dims=[4, 3], expert_activations=[["relu"]] * 3)


def test_mmoe_accepts_the_sparse_moe_gate_spelling_deprecated():
    from keras_mtl.layers import MMoE

    with pytest.warns(DeprecationWarning, match="noise_topk"):
        layer = MMoE(
            num_tasks=1,
            expert_output_dims=[3],
            expert_activations=None,
            num_experts=3,
            gate_type="noisy_topk",
        )
    assert layer.get_config()["gate_type"] == "noise_topk"


# --- GradNorm ------------------------------------------------------------
# GradNorm: the loss against NumPy, the backend gradient norms, `model.fit`.


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
    config_round_trip(layer)
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
def test_grad_norm_invalid_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        layers.GradNorm(**kwargs)


@pytest.mark.backend_independent
def test_grad_norm_valid_arguments_round_trip():
    layer = layers.GradNorm(("a", "b"), scale=0, loss_pow=1, epsilon=1)
    config = config_round_trip(layer).get_config()
    assert config["loss_names"] == ["a", "b"] and config["scale"] == 0.0


def test_grad_norm_wrong_number_of_losses():
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


# --- UncertaintyWeighting --------------------------------------------------
# UncertaintyWeighting: formula, arguments and training to s_i = log(L_i).


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
    config_round_trip(layer)
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
def test_uncertainty_weighting_invalid_arguments(name, value):
    kwargs = {"num_tasks": 2, name: value}
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {name}="):
        layers.UncertaintyWeighting(**kwargs)


@pytest.mark.backend_independent
def test_uncertainty_weighting_valid_arguments_round_trip():
    layer = layers.UncertaintyWeighting(num_tasks=1, initial_log_variance=-3)
    assert layer.initial_log_variance == -3.0
    config_round_trip(layer)


def test_uncertainty_weighting_wrong_number_of_losses():
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
