"""Every layer learns in `model.fit`: on a task its model can represent (a
teacher's outputs), a few epochs of Adam take the loss below half its first
value and move the layer's weights (`tests._helpers.assert_loss_falls`)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_mtl import layers
from keras_mtl import models
from tests._helpers import assert_loss_falls
from tests.test_nas import _layers as nas_layers

N = 32  # examples, all in each training step


def _normal(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape).astype("float32")


def _one_input(layer_fn, shape, flatten=True):
    """inputs -> layer -> Flatten -> Dense(1)."""

    def make():
        inputs = keras.Input(shape)
        layer = layer_fn()
        h = layer(inputs)
        h = keras.layers.Flatten()(h) if flatten else h
        return keras.Model(inputs, keras.layers.Dense(1)(h)), layer

    return make, [_normal(N, *shape)]


def _interaction(layer_fn):
    return _one_input(layer_fn, (3, 4))


def _group_int():
    def make():
        inputs = [keras.Input((3, 4)), keras.Input((2, 4))]
        layer = layers.GroupInt(use_attention=True, attention_units=[3, 1])
        return keras.Model(inputs, keras.layers.Dense(1)(layer(inputs))), layer

    return make, [_normal(N, 3, 4), _normal(N, 2, 4, seed=1)]


def _can():
    def make():
        inputs = [keras.Input((3, 2)), keras.Input((12,))]
        layer = layers.CAN()
        h = keras.layers.Flatten()(layer(inputs))
        return keras.Model(inputs, keras.layers.Dense(1)(h)), layer

    return make, [_normal(N, 3, 2), _normal(N, 12, seed=1)]


def _two_tasks(layer_fn, shapes):
    """inputs -> layer -> one Dense(1) head per task output."""

    def make():
        inputs = [keras.Input(s) for s in shapes]
        layer = layer_fn()
        y0, y1 = layer(inputs if len(inputs) > 1 else inputs[0])
        heads = [keras.layers.Dense(1, name=f"t{i}")(y) for i, y in enumerate((y0, y1))]
        return keras.Model(inputs, heads), layer

    return make, [_normal(N, *s, seed=i) for i, s in enumerate(shapes)]


def _grad_norm_model():
    """GradNormModel: its own `compute_loss` (GradNorm's balancing loss plus
    the weighted task losses); the layer under test is its GradNorm."""

    def make():
        shared = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu")])
        heads = [
            keras.Sequential([keras.Input((16,)), keras.layers.Dense(1)]) for _ in "ab"
        ]
        model = models.GradNormModel(
            shared, heads, ["mse", "mse"], layers.GradNorm(["a", "b"], scale=1.0)
        )
        model(np.zeros((1, 8), "float32"))
        return model, model.grad_norm

    return make, [_normal(N, 8)]


def _sequence(layer_fn):
    """(query, item ids) -> Embedding(mask_zero=True) -> layer: the keys carry a
    Keras mask."""

    def make():
        ids = keras.Input((4,), dtype="int32")
        query = keras.Input((3,))
        keys = keras.layers.Embedding(10, 3, mask_zero=True)(ids)
        layer = layer_fn()
        h = keras.layers.Flatten()(layer([query, keys]))
        return keras.Model([query, ids], keras.layers.Dense(1)(h)), layer

    ids = np.random.RandomState(1).randint(0, 10, size=(N, 4)).astype("int32")
    return make, [_normal(N, 3), ids]


def _nas(index):
    """test_nas's four layers (the config tests' ones), Dense(1) on top."""
    return _one_input(
        lambda: nas_layers()[index], (9 if index == 1 else 7,), flatten=False
    )


def _dcn(**kwargs):
    return _interaction(lambda: layers.DCN(layer_num=2, **kwargs))


def _mmoe(gate_type):
    return _two_tasks(
        lambda: layers.MMoE(
            2, [8, 4], "relu", num_experts=3, gate_type=gate_type, top_k=2, seed=3
        ),
        [(6,)],
    )


# name -> ((make, data), options of `assert_loss_falls`).
CASES = {
    # --- interaction
    "dcn_vector": (_dcn(dcn_type="vector"), {}),
    "dcn_matrix_norm_dropout": (
        _dcn(dcn_type="matrix", allow_kernel_norm=True, use_dropout=True),
        {},
    ),
    "dcn_mixed_shared_gates": (
        _dcn(dcn_type="mixed", low_rank=2, num_experts=2, share_gates=True),
        {},
    ),
    "cin": (
        _interaction(lambda: layers.CIN([4, 2], activation="relu", split_half=True)),
        {},
    ),
    "autoint": (_interaction(lambda: layers.AutoInt(layer_num=2)), {}),
    "autoint_paper": (
        _interaction(
            lambda: layers.AutoInt(
                layer_num=2, attention_units=2, head_num=2, use_residual=True
            )
        ),
        {},
    ),
    "senet": (_interaction(lambda: layers.SeNet(3, 2)), {}),
    "allint": (_interaction(lambda: layers.AllInt(2)), {}),
    "cdot": (_interaction(lambda: layers.CDot(2, [3])), {}),
    "groupint_attention": (_group_int(), {}),
    "can": (_can(), {}),
    # --- multi-task: one Dense(1) head and one loss per task
    "mmoe_softmax": (_mmoe("softmax"), {}),
    "mmoe_noise_topk": (_mmoe("noise_topk"), {}),
    # SNR's L0 penalty (`add_loss`, weight 1) closes its gates slowly.
    "snr": (
        _two_tasks(lambda: layers.SNR(2, 3, seed=1), [(4,), (4,)]),
        {"learning_rate": 0.1},
    ),
    "ple": (
        _two_tasks(
            lambda: layers.PLE(2, [8, 4], num_levels=2, num_task_experts=2), [(6,)]
        ),
        {},
    ),
    "grad_norm_model": (_grad_norm_model(), {"loss": None}),
    # --- NAS. Segment "b" of the selection layer has one choice: a softmax
    # over one logit, which gets no gradient.
    "nas_selection_gumbel": (_nas(0), {"weights_move": "any"}),
    "mixed_nas": (_nas(1), {}),
    "nas_gating_clip": (_nas(2), {}),
    "simple_nas": (_nas(3), {}),
    # --- sequence: the keys carry the Embedding's Keras mask
    "din_keras_mask": (_sequence(lambda: layers.DIN([4, 1], activation="relu")), {}),
    "dmr_u2i_keras_mask": (_sequence(lambda: layers.DMR_U2I(2)), {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_loss_falls_on_a_learnable_task(name):
    (make, data), options = CASES[name]
    assert_loss_falls(make, data, **options)
