"""Sparse-NAS layers: the manual's mask tables, validation, sampling, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_mtl.layers import MixedNASLayer
from keras_mtl.layers import NASGatingLayer
from keras_mtl.layers import NASSelectionLayer
from keras_mtl.layers import SimpleNasLayer
from keras_mtl.layers import nas_masks
from tests._helpers import config_round_trip
from tests._helpers import gradients

# The manual's tables (section sparse_nas) for embedding_size_choice=[2, 4, 6].
MANUAL = {
    "left": [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]],
    "random": [[0, 0, 0, 1, 0, 1], [1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]],
    "diff": [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]],
    "none": [
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    ],
}
MANUAL_MIXED = {
    "left": [[0] * 6, [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]],
    "random": [[0] * 6, [0, 1, 0, 0, 1, 0], [1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]],
    "diff": [[0] * 6, [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]],
    "none": [
        [0] * 12,
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    ],
}


@pytest.mark.parametrize("mode", ["left", "diff", "none"])
def test_masks_reproduce_the_manual(mode):
    np.testing.assert_array_equal(nas_masks([2, 4, 6], mode), MANUAL[mode])
    np.testing.assert_array_equal(
        nas_masks([2, 4, 6], mode, zero_choice=True), MANUAL_MIXED[mode]
    )
    # A leading 0 is the zero choice already.
    np.testing.assert_array_equal(
        nas_masks([0, 2, 4, 6], mode, zero_choice=True), MANUAL_MIXED[mode]
    )


@pytest.mark.parametrize("zero_choice", [False, True])
def test_random_masks_properties(zero_choice):
    sizes = [2, 4, 6, 9]
    m = nas_masks(sizes, "random", seed=7, zero_choice=zero_choice)
    if zero_choice:
        assert not m[0].any()
        m = m[1:]
    assert m.shape == (4, 9)
    assert m[-1].all()
    for row, s in zip(m[:-1], sizes[:-1], strict=True):
        assert 1 <= row.sum() <= s
    np.testing.assert_array_equal(
        m, nas_masks(sizes, "random", seed=7, zero_choice=zero_choice)[-4:]
    )
    assert not np.array_equal(m, nas_masks(sizes, "random", seed=8)[-4:])


@pytest.mark.parametrize("cls", [NASSelectionLayer, MixedNASLayer])
@pytest.mark.parametrize("mode", ["left", "random", "diff", "none"])
def test_layer_rows_are_the_manual_tables(cls, mode):
    table = MANUAL_MIXED[mode] if cls is MixedNASLayer else MANUAL[mode]
    c = len(table)
    # Feature f's logits pick choice f at inference: the output is the table.
    layer = cls(
        [[2, 4, 6]] * c,
        [f"f{i}" for i in range(c)],
        embedding_share_mode=mode,
        masks=[table] * c if mode == "random" else None,
    )
    width = len(table[0])
    x = np.ones((1, c * width), "float32")
    layer.build(x.shape)
    for f, var in enumerate(layer.arch_logits):
        var.assign(np.eye(c, dtype="float32")[f])
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(y.reshape(c, width), table)


def test_explicit_masks_override_and_roundtrip():
    masks = [[[0, 1, 0], [1, 1, 1]]]
    layer = NASSelectionLayer([[1, 3]], ["a"], embedding_share_mode="left", masks=masks)
    np.testing.assert_array_equal(layer.mask_arrays[0], masks[0])
    assert layer.get_config()["masks"] == masks
    with pytest.raises(ValueError, match=r"`masks`.*\(2, 3\).*Received"):
        NASSelectionLayer([[1, 3]], ["a"], embedding_share_mode="left", masks=[[[1]]])
    with pytest.raises(ValueError, match="`masks`"):
        NASSelectionLayer([[1, 3]], ["a"], masks=[[[0, 2, 0, 0], [1, 1, 1, 1]]])


def test_random_without_seed_keeps_its_masks_in_the_config():
    layer = NASSelectionLayer([[2, 4, 6]], ["a"], embedding_share_mode="random")
    again = config_round_trip(layer)
    np.testing.assert_array_equal(layer.mask_arrays[0], again.mask_arrays[0])


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"segment_names": ["a"]}, r"`segment_names`.*expected 2 names.*Received"),
        ({"segment_sizes": [[4, 2], [3]]}, r"`segment_sizes\[0\]`.*ascending"),
        ({"segment_sizes": [[0, 2], [3]]}, r"`segment_sizes\[0\]`.*positive"),
        ({"segment_sizes": [[2, 2], [3]]}, r"`segment_sizes\[0\]`.*Received"),
        ({"segment_sizes": []}, r"`segment_sizes`.*Received"),
        ({"embedding_share_mode": "right"}, r"`embedding_share_mode`.*Received"),
        ({"weight_grad_mode": "reinforce"}, r"`weight_grad_mode`.*Received"),
        ({"temperature": 0.0}, r"`temperature`.*Received"),
        ({"seed": -1}, r"`seed`.*Received"),
    ],
)
def test_selection_bad_arguments(kwargs, match):
    args = {"segment_sizes": [[2, 4], [3]], "segment_names": ["a", "b"], **kwargs}
    with pytest.raises(ValueError, match=match):
        NASSelectionLayer(**args)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match=r"`ste_type`.*Received"):
        NASGatingLayer([2], ["a"], ste_type="sigmoid")
    with pytest.raises(ValueError, match=r"`segment_sizes`.*Received"):
        NASGatingLayer([2, 0], ["a", "b"])
    with pytest.raises(ValueError, match=r"`segment_names`.*expected 1"):
        SimpleNasLayer([2], ["a", "b"])
    with pytest.raises(ValueError, match=r"`threshold`.*Received"):
        SimpleNasLayer([2], ["a"], threshold=0.0)
    # MixedNAS accepts a leading 0, NASSelection does not.
    MixedNASLayer([[0, 2]], ["a"])
    with pytest.raises(ValueError, match="segment_sizes"):
        NASSelectionLayer([[0, 2]], ["a"])


@pytest.mark.parametrize(
    "layer",
    [
        lambda: NASSelectionLayer(
            [[2, 4], [3]], ["a", "b"], embedding_share_mode="left"
        ),
        lambda: NASGatingLayer([4, 3], ["a", "b"]),
        lambda: SimpleNasLayer([4, 3], ["a", "b"]),
    ],
)
def test_input_width_mismatch(layer):
    with pytest.raises(
        ValueError, match=r"\(batch, 7\).*Received: input_shape=\(2, 6\)"
    ):
        layer()(np.ones((2, 6), "float32"))
    with pytest.raises(ValueError, match=r"widths \[4, 3\].*Received"):
        layer()([np.ones((2, 3), "float32"), np.ones((2, 3), "float32")])


def test_list_input_equals_concatenated():
    layer = NASGatingLayer([2, 3], ["a", "b"], ste_type="softplus")
    a, b = np.random.rand(2, 2), np.random.rand(2, 3)
    layer.build((None, 5))
    layer.gate_logits.assign([-0.5, 2.0])
    y1 = keras.ops.convert_to_numpy(layer([a, b]))
    y2 = keras.ops.convert_to_numpy(layer(np.concatenate([a, b], 1)))
    np.testing.assert_allclose(y1, y2)
    np.testing.assert_allclose(y1, np.concatenate([0 * a, b], 1), atol=1e-7)


@pytest.mark.parametrize("mode", ["discrete", "gumbel"])
def test_sampling_only_in_training(mode):
    layer = NASSelectionLayer(
        [[1, 2, 3, 4]] * 4,
        list("abcd"),
        embedding_share_mode="diff",
        weight_grad_mode=mode,
        seed=3,
    )
    x = np.ones((1, 16), "float32")
    infer = [keras.ops.convert_to_numpy(layer(x)) for _ in range(3)]
    assert all(np.array_equal(infer[0], y) for y in infer)
    train = [keras.ops.convert_to_numpy(layer(x, training=True)) for _ in range(8)]
    assert any(not np.array_equal(train[0], y) for y in train)
    # One choice per feature: each 4-wide block is a one-hot over dimensions.
    for y in train:
        assert set(np.unique(y)) <= {0.0, 1.0}
        assert (y.reshape(4, 4).sum(1) == 1).all()
    simple = SimpleNasLayer([4], ["a"], seed=3)
    s_inf = [keras.ops.convert_to_numpy(simple(x[:, :4])) for _ in range(2)]
    np.testing.assert_array_equal(s_inf[0], s_inf[1])
    s_tr = [
        keras.ops.convert_to_numpy(simple(x[:, :4], training=True)) for _ in range(2)
    ]
    assert not np.array_equal(s_tr[0], s_tr[1])


def test_simple_nas_knee():
    layer = SimpleNasLayer([4], ["a"], threshold=0.5, temperature=1.0, use_gumbel=False)
    layer.build((None, 4))
    layer.length_logits[0].assign(np.log([0.1, 0.3, 0.4, 0.2]))
    x = np.ones((1, 4), "float32")
    # cumulative 0.1, 0.4, 0.8 >= 0.5 -> L* = 3.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), [[1, 1, 1, 0]])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=True)),
        [[1.0, 0.9, 0.6, 0.2]],
        atol=1e-6,
    )


def _layers():
    return [
        NASSelectionLayer(
            [[2, 4], [3]],
            ["a", "b"],
            embedding_share_mode="random",
            seed=1,
            weight_grad_mode="gumbel",
            temperature=0.5,
        ),
        MixedNASLayer(
            [[2, 4], [3]],
            ["a", "b"],
            embedding_share_mode="none",
            weight_grad_mode="none",
        ),
        NASGatingLayer([4, 3], ["a", "b"], ste_type="clip"),
        SimpleNasLayer([4, 3], ["a", "b"], threshold=0.8, use_gumbel=False, seed=2),
    ]


@pytest.mark.parametrize("index", range(4))
def test_config_roundtrip_and_keras_file(index, tmp_path):
    layer = _layers()[index]
    config = config_round_trip(layer).get_config()
    width = 9 if index == 1 else 7
    inp = keras.Input((width,))
    model = keras.Model(inp, layer(inp))
    for var in model.trainable_weights:
        var.assign(np.random.RandomState(0).normal(size=var.shape))
    x = np.random.RandomState(1).rand(3, width).astype("float32")
    path = tmp_path / "nas.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x))
    )
    assert loaded.layers[-1].get_config() == config


def _logit_grads(layer, x, cot, training):
    """d sum(layer(x) * cot) / d trainable variables, on the current backend."""
    ntv = [v.value for v in layer.non_trainable_variables]
    cot = keras.ops.convert_to_tensor(cot)

    def objective(*tv):
        out, _ = layer.stateless_call(list(tv), ntv, x, training=training)
        return keras.ops.sum(out * cot)

    return gradients(objective, *[v.value for v in layer.trainable_variables])


def test_straight_through_gradient_is_the_soft_gradient():
    # w = one_hot + (p - stop_gradient(p)): in training the logits get exactly
    # the gradient of the soft mixture (mode "none"), whatever was sampled.
    rng = np.random.RandomState(0)
    x = rng.normal(size=(3, 9)).astype("float32")
    cot = rng.normal(size=(3, 9)).astype("float32")
    logits = [rng.normal(size=(3,)), rng.normal(size=(2,))]
    grads = {}
    for mode in ["discrete", "none"]:
        layer = NASSelectionLayer(
            [[2, 4, 6], [1, 3]],
            ["a", "b"],
            embedding_share_mode="left",
            weight_grad_mode=mode,
            temperature=0.7,
            seed=4,
        )
        layer.build(x.shape)
        for var, value in zip(layer.arch_logits, logits, strict=True):
            var.assign(value.astype("float32"))
        grads[mode] = _logit_grads(layer, x, cot, training=True)
    for a, b in zip(grads["discrete"], grads["none"], strict=True):
        assert np.abs(b).max() > 1e-3
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    gumbel = NASSelectionLayer(
        [[2, 4, 6], [1, 3]],
        ["a", "b"],
        embedding_share_mode="left",
        weight_grad_mode="gumbel",
        seed=4,
    )
    gumbel.build(x.shape)
    assert all(np.abs(g).max() > 0 for g in _logit_grads(gumbel, x, cot, True))


# --- bad input never passes silently ------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (NASSelectionLayer, {"temperature": float("nan")}, r"temperature=nan"),
        (NASSelectionLayer, {"temperature": float("inf")}, r"temperature=inf"),
        (NASSelectionLayer, {"temperature": "1.0"}, r"temperature='1.0'"),
        (NASSelectionLayer, {"temperature": True}, r"temperature=True"),
        (NASSelectionLayer, {"seed": 2.5}, r"seed=2.5"),
        (NASSelectionLayer, {"seed": "1"}, r"seed='1'"),
        (NASSelectionLayer, {"segment_sizes": [[2, 4], 3]}, r"segment_sizes\[1\]"),
        (NASSelectionLayer, {"segment_sizes": [[2, 4.0], [3]]}, r"segment_sizes"),
        (NASSelectionLayer, {"segment_names": "ab"}, r"segment_names='ab'"),
        (NASSelectionLayer, {"segment_names": ["a", "a"]}, r"segment_names"),
        (NASSelectionLayer, {"masks": [[[1, 1, 0, 0], [1, 1, 1, 1]]]}, r"`masks`"),
        (MixedNASLayer, {"temperature": -1.0}, r"temperature=-1.0"),
        (MixedNASLayer, {"embedding_share_mode": None}, r"mode=None"),
        (MixedNASLayer, {"weight_grad_mode": "Gumbel"}, r"mode='Gumbel'"),
        (NASGatingLayer, {"segment_sizes": 4}, r"segment_sizes=4"),
        (NASGatingLayer, {"segment_sizes": [4, True]}, r"segment_sizes"),
        (NASGatingLayer, {"segment_names": ["a", ""]}, r"segment_names"),
        (NASGatingLayer, {"ste_type": None}, r"ste_type=None"),
        (SimpleNasLayer, {"threshold": float("nan")}, r"threshold=nan"),
        (SimpleNasLayer, {"threshold": "0.5"}, r"threshold='0.5'"),
        (SimpleNasLayer, {"threshold": 1.5}, r"threshold=1.5"),
        (SimpleNasLayer, {"temperature": float("inf")}, r"temperature=inf"),
        (SimpleNasLayer, {"use_gumbel": 1}, r"use_gumbel=1"),
        (SimpleNasLayer, {"use_gumbel": None}, r"use_gumbel=None"),
        (SimpleNasLayer, {"seed": True}, r"seed=True"),
    ],
)
def test_nas_bad_arguments(cls, kwargs, match):
    nested = cls in (NASSelectionLayer, MixedNASLayer)
    base = {
        "segment_sizes": [[2, 4], [3]] if nested else [4, 3],
        "segment_names": ["a", "b"],
    }
    with pytest.raises(ValueError, match=match):
        cls(**{**base, **kwargs})


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "right"}, r"`mode`.*mode='right'"),
        ({"sizes": [4, 2]}, r"`sizes`.*sizes=\[4, 2\]"),
        ({"sizes": 4}, r"`sizes`.*sizes=4"),
        ({"seed": -1}, r"`seed`.*seed=-1"),
        ({"seed": 1.5}, r"`seed`.*seed=1.5"),
        ({"zero_choice": 1}, r"`zero_choice`.*zero_choice=1"),
    ],
)
def test_nas_masks_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nas_masks(**{"sizes": [2, 4], "mode": "left", **kwargs})


@pytest.mark.backend_independent
def test_valid_nas_configs_still_build_and_round_trip():
    for layer in (
        NASSelectionLayer([(2, 4), (3,)], ("a", "b"), temperature=2, seed=0),
        MixedNASLayer([[0, 2]], ["a"], embedding_share_mode="left"),
        NASGatingLayer((4, 3), ["a", "b"], ste_type="softplus"),
        SimpleNasLayer([np.int64(3)], ["a"], threshold=1, use_gumbel=False),
    ):
        config_round_trip(layer)


def _nas_cases():
    """Per case: a layer factory and the widths of its features."""
    return {
        "selection": (
            lambda: NASSelectionLayer(
                [[2, 4], [3]],
                ["a", "b"],
                embedding_share_mode="left",
                weight_grad_mode="none",
            ),
            [4, 3],
        ),
        "mixed": (
            lambda: MixedNASLayer(
                [[2, 4], [3]], ["a", "b"], embedding_share_mode="none", seed=1
            ),
            [6, 3],
        ),
        "gating": (lambda: NASGatingLayer([4, 3], ["a", "b"]), [4, 3]),
        "simple": (lambda: SimpleNasLayer([4, 3], ["a", "b"], seed=1), [4, 3]),
    }


@pytest.mark.parametrize("case", ["selection", "mixed", "gating", "simple"])
def test_other_widths_after_build_name_the_layer(case):
    make, widths = _nas_cases()[case]
    width = sum(widths)
    layer = make()
    layer(np.ones((2, width), "float32"))
    name = type(layer).__name__
    # A width of 1 used to broadcast silently against the mask.
    with pytest.raises(ValueError, match=rf"`{name}` \(layer '{layer.name}'\)"):
        layer(np.ones((2, 1), "float32"))
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: input_shape="):
        layer(np.ones((2, width + 1), "float32"))
    with pytest.raises(ValueError, match=rf"`{name}`.*list `inputs`"):
        layer([np.ones((2, width - 1), "float32"), np.ones((2, 1), "float32")])


@pytest.mark.parametrize("case", ["selection", "mixed", "gating", "simple"])
@pytest.mark.parametrize("training", [False, True])
def test_integer_inputs_are_cast_to_the_compute_dtype(case, training):
    make, widths = _nas_cases()[case]
    width = sum(widths)
    layer = make()
    x = np.random.RandomState(0).randint(-3, 4, size=(3, width))
    if case == "selection" or not training:  # no sampling: one mask per call
        ints = keras.ops.convert_to_numpy(layer(x.astype("int32"), training=training))
        floats = keras.ops.convert_to_numpy(
            layer(x.astype("float32"), training=training)
        )
        assert ints.dtype == np.float32
        np.testing.assert_allclose(ints, floats, rtol=1e-6)
    else:
        y = keras.ops.convert_to_numpy(layer(x.astype("int32"), training=training))
        assert y.dtype == np.float32 and np.all(np.isfinite(y))


@pytest.mark.parametrize("case", ["selection", "mixed", "gating", "simple"])
@pytest.mark.parametrize("training", [False, True])
def test_empty_batch_gives_an_empty_output(case, training):
    make, widths = _nas_cases()[case]
    width = sum(widths)
    y = keras.ops.convert_to_numpy(
        make()(np.ones((0, width), "float32"), training=training)
    )
    assert y.shape == (0, width) and y.dtype == np.float32
    assert not np.isnan(y).any()
    lists = make()([np.ones((0, w), "float32") for w in widths], training=training)
    assert tuple(lists.shape) == (0, width)
