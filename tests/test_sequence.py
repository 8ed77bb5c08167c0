"""Behaviour-sequence layers: masks, errors, config round-trips, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import layers
from keras_mtl.layers.agru import dynamic_rnn_with_attention
from keras_mtl.layers.agru import static_rnn_with_attention

RNG = np.random.default_rng(0)
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _poison(x, mask):
    """`x` with every padded step replaced by large random values."""
    big = RNG.uniform(-1e3, 1e3, size=x.shape).astype("float32")
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return np.where(m, x, big)


def _round_trip(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    return clone


# --- AGRUCell and the attention RNN helpers ----------------------------------


@pytest.mark.parametrize("att_type", ["AGRU", "augru"])
def test_static_and_dynamic_rnn_agree(att_type):
    cell = layers.AGRUCell(5, att_type=att_type)
    x, att = _normal(3, 4, 2), RNG.uniform(size=(3, 4)).astype("float32")
    o1, f1 = static_rnn_with_attention(cell, x, att, mask=MASK)
    o2, f2 = dynamic_rnn_with_attention(cell, x, att, mask=MASK)
    np.testing.assert_allclose(_np(o1), _np(o2), atol=1e-6)
    np.testing.assert_allclose(_np(f1), _np(f2), atol=1e-6)
    # Without attention and mask too.
    o1, f1 = static_rnn_with_attention(cell, x, None)
    o2, f2 = dynamic_rnn_with_attention(cell, x, None)
    np.testing.assert_allclose(_np(f1), _np(f2), atol=1e-6)


@pytest.mark.parametrize(
    "helper", [static_rnn_with_attention, dynamic_rnn_with_attention]
)
def test_masked_steps_keep_the_state(helper):
    cell = layers.AGRUCell(4, att_type="AUGRU")
    x, att = _normal(3, 4, 2), RNG.uniform(size=(3, 4)).astype("float32")
    outputs, final = helper(cell, x, att, mask=MASK)
    outputs2, final2 = helper(cell, _poison(x, MASK), _poison(att, MASK), mask=MASK)
    np.testing.assert_array_equal(_np(final), _np(final2))
    np.testing.assert_array_equal(_np(outputs), _np(outputs2))
    np.testing.assert_array_equal(_np(final)[2], np.zeros(4))
    # Row 1 stops after step 1: its final state is the state after step 1.
    np.testing.assert_array_equal(_np(final)[1], _np(outputs)[1, 1])


def test_augru_zero_attention_keeps_state_and_agru_full_attention_is_candidate():
    x, h = _normal(2, 3), _normal(2, 4)
    augru = layers.AGRUCell(4, att_type="AUGRU")
    augru.build((2, 3))
    np.testing.assert_allclose(_np(augru.step(x, h, np.zeros((2, 1), "float32"))), h)
    agru = layers.AGRUCell(4, att_type="AGRU")
    agru.build((2, 3))
    one = np.ones((2, 1), "float32")
    # a = 1: AGRU takes the candidate, AUGRU a plain GRU step (no attention).
    np.testing.assert_allclose(
        _np(augru.step(x, h, one)), _np(augru.step(x, h, None)), atol=1e-6
    )
    zero = _np(agru.step(x, h, np.zeros((2, 1), "float32")))
    np.testing.assert_allclose(zero, h)


def test_agru_cell_in_keras_rnn():
    cell = layers.AGRUCell(3, attention_in_inputs=True)
    x, att = _normal(2, 4, 2), RNG.uniform(size=(2, 4, 1)).astype("float32")
    y = keras.layers.RNN(cell)(np.concatenate([x, att], axis=-1))
    _, expected = static_rnn_with_attention(cell, x, att)
    np.testing.assert_allclose(_np(y), _np(expected), atol=1e-6)


def test_agru_errors_and_config():
    with pytest.raises(ValueError, match="att_type"):
        layers.AGRUCell(3, att_type="LSTM")
    with pytest.raises(ValueError, match="units"):
        layers.AGRUCell(0)
    cell = layers.AGRUCell(3)
    x = _normal(2, 4, 2)
    with pytest.raises(ValueError, match="att_scores"):
        static_rnn_with_attention(cell, x, np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match="mask"):
        dynamic_rnn_with_attention(cell, x, None, mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="cell"):
        static_rnn_with_attention(keras.layers.GRUCell(3), x, None)
    clone = _round_trip(
        layers.AGRUCell(
            3,
            att_type="augru",
            activation="sigmoid2",
            initializer=keras.initializers.RandomNormal(seed=3),
            regularizer="l2",
            attention_in_inputs=True,
            name="cell",
        )
    )
    assert clone.att_type == "AUGRU" and clone.attention_in_inputs
    assert clone.name == "cell"


# --- DIN ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sum", "weight"])
def test_din_padding_is_ignored(mode):
    din = layers.DIN([4, 1], activation="relu", mode=mode, decay=True)
    q, k = _normal(3, 2), _normal(3, 4, 2)
    y = _np(din([q, k], mask=MASK))
    y2 = _np(din([q, _poison(k, MASK)], mask=MASK))
    if mode == "sum":
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(y[2], np.zeros(2))
    else:
        np.testing.assert_array_equal(y * MASK[..., None], y2 * MASK[..., None])
        np.testing.assert_array_equal(y[~MASK], np.zeros_like(y[~MASK]))
    numeric = _np(din([q, k], mask=MASK.astype("float32")))
    np.testing.assert_array_equal(y, numeric)


def test_din_fully_masked_gradients_are_finite():
    din = layers.DIN([3, 1], activation="relu")
    q, k = _normal(2, 2), _normal(2, 3, 2)
    mask = np.zeros((2, 3), bool)
    model_in = [keras.Input((2,)), keras.Input((3, 2))]
    model = keras.Model(model_in, din(model_in, mask=mask))
    model.compile(optimizer="sgd", loss="mse")
    model.fit([q, k], np.ones((2, 2), "float32"), epochs=1, verbose=0)
    for w in din.weights:
        assert np.all(np.isfinite(_np(w)))


def test_din_errors_and_config():
    with pytest.raises(ValueError, match="hidden_units"):
        layers.DIN([4, 2])
    din = layers.DIN([2, 1])
    with pytest.raises(ValueError, match="query dimension"):
        din([_normal(2, 3), _normal(2, 4, 2)])
    with pytest.raises(ValueError, match="mask"):
        din([_normal(2, 2), _normal(2, 4, 2)], mask=np.ones((2, 3), bool))
    clone = _round_trip(
        layers.DIN(
            [3, 1],
            activation="prelu",
            initializer=keras.initializers.RandomNormal(seed=1),
            regularizer="l1",
            mode="weight",
            decay=True,
        )
    )
    assert clone.mode == "weight" and clone.decay
    assert clone.hidden_units == [3, 1]


def test_din_fit_with_keras_mask():
    ids = keras.Input((4,), dtype="int32")
    query = keras.Input((3,))
    keys = keras.layers.Embedding(10, 3, mask_zero=True)(ids)
    y = layers.DIN([4, 1], activation="relu")([query, keys])
    model = keras.Model([query, ids], keras.layers.Dense(1)(y))
    model.compile(optimizer="adam", loss="mse")
    data = [_normal(6, 3), RNG.integers(0, 10, size=(6, 4)).astype("int32")]
    history = model.fit(data, _normal(6, 1), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert ops.shape(model.predict(data, verbose=0)) == (6, 1)


# --- DIEN -----------------------------------------------------------------------


@pytest.mark.parametrize("att_type", ["AGRU", "AUGRU"])
@pytest.mark.parametrize("unroll", [False, True])
def test_dien_padding_is_ignored(att_type, unroll):
    dien = layers.DIEN(
        3, att_type=att_type, unroll=unroll, return_extractor_states=True
    )
    q, k = _normal(3, 3), _normal(3, 4, 2)
    final, states = dien([q, k], mask=MASK)
    final2, states2 = dien([q, _poison(k, MASK)], mask=MASK)
    np.testing.assert_array_equal(_np(final), _np(final2))
    np.testing.assert_array_equal(_np(states), _np(states2))
    np.testing.assert_array_equal(_np(final)[2], np.zeros(3))
    # The mask may also come as a third input.
    np.testing.assert_array_equal(_np(dien([q, k, MASK])[0]), _np(final))


def test_dien_scan_and_unrolled_agree():
    dien = layers.DIEN(3, att_type="AUGRU", activation="tanh")
    q, k = _normal(3, 3), _normal(3, 4, 2)
    y = _np(dien([q, k], mask=MASK))
    unrolled = layers.DIEN.from_config({**dien.get_config(), "unroll": True})
    unrolled.build([q.shape, k.shape])
    unrolled.set_weights(dien.get_weights())
    np.testing.assert_allclose(_np(unrolled([q, k], mask=MASK)), y, atol=1e-6)


@pytest.mark.parametrize("unroll", [False, True])
def test_dien_trains_with_a_compiled_step(unroll):
    # jit_compile=True: XLA on TF (the scan path needs a bounded loop), jax.jit
    # on JAX, torch.compile on torch.
    if unroll and keras.backend.backend() == "torch":
        # Keras's torch `ops.scan` is a Python loop: dynamo traces the scan
        # path into this very graph (and takes over a minute to do it).
        pytest.skip("on torch the scan path already is the unrolled graph")
    q_in, k_in = keras.Input((3,)), keras.Input((4, 2))
    m_in = keras.Input((4,), dtype="bool")
    y = layers.DIEN(3, att_type="AGRU", unroll=unroll)([q_in, k_in, m_in])
    model = keras.Model([q_in, k_in, m_in], keras.layers.Dense(1)(y))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    data = [_normal(6, 3), _normal(6, 4, 2), np.concatenate([MASK, MASK])]
    history = model.fit(data, _normal(6, 1), epochs=3, batch_size=6, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_dien_fully_masked_fit_stays_finite():
    q_in, k_in = keras.Input((3,)), keras.Input((4, 2))
    m_in = keras.Input((4,), dtype="bool")
    y = layers.DIEN(3, att_type="AUGRU")([q_in, k_in, m_in])
    model = keras.Model([q_in, k_in, m_in], keras.layers.Dense(1)(y))
    model.compile(optimizer="sgd", loss="mse")
    data = [_normal(3, 3), _normal(3, 4, 2), MASK]
    history = model.fit(data, _normal(3, 1), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    zero = [d[2:] for d in data]
    model.fit(zero, _normal(1, 1), epochs=1, verbose=0)
    for w in model.weights:
        assert np.all(np.isfinite(_np(w)))


def test_dien_errors_and_config():
    with pytest.raises(ValueError, match="att_type"):
        layers.DIEN(3, att_type="GRU")
    dien = layers.DIEN(3)
    with pytest.raises(ValueError, match="num_units"):
        dien([_normal(2, 4), _normal(2, 4, 2)])
    with pytest.raises(ValueError, match="mask"):
        dien([_normal(2, 3), _normal(2, 4, 2)], mask=np.ones((2, 4, 1), bool))
    clone = _round_trip(
        layers.DIEN(
            3,
            att_type="augru",
            activation="tanh",
            initializer=keras.initializers.RandomNormal(seed=2),
            regularizer="l2",
            return_extractor_states=True,
            unroll=True,
        )
    )
    assert clone.att_type == "AUGRU" and clone.unroll
    assert clone.return_extractor_states


# --- DMR_U2I --------------------------------------------------------------------


def test_dmr_padding_is_ignored():
    dmr = layers.DMR_U2I(3)
    x, seq = _normal(3, 2), _normal(3, 4, 3)
    y = _np(dmr([x, seq], mask=MASK))
    np.testing.assert_array_equal(y, _np(dmr([x, _poison(seq, MASK)], mask=MASK)))
    assert np.all(np.isfinite(y))
    # A fully padded row pools to zeros: act(dense bias) * items.
    bias = _np(dmr.dense.bias)
    np.testing.assert_allclose(y[2], np.maximum(bias, 0.0) * x[2], atol=1e-6)


def test_dmr_errors_config_and_fit():
    dmr = layers.DMR_U2I(3)
    with pytest.raises(ValueError, match="mask"):
        dmr([_normal(2, 2), _normal(2, 4, 3)], mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="batch size"):
        layers.DMR_U2I(3)([_normal(3, 2), _normal(2, 4, 3)])
    with pytest.raises(ValueError, match="cmp_dim"):
        layers.DMR_U2I(0)
    clone = _round_trip(
        layers.DMR_U2I(
            4,
            activation="tanh",
            initializer=keras.initializers.RandomNormal(seed=4),
            regularizer="l2",
            use_tanh=True,
        )
    )
    assert clone.use_tanh and clone.cmp_dim == 4
    _round_trip(layers.DMR_U2I(4))
    ids = keras.Input((4,), dtype="int32")
    items = keras.Input((3,))
    seq = keras.layers.Embedding(10, 3, mask_zero=True)(ids)
    model = keras.Model([items, ids], layers.DMR_U2I(2)([items, seq]))
    model.compile(optimizer="adam", loss="mse")
    data = [_normal(6, 3), RNG.integers(0, 10, size=(6, 4)).astype("int32")]
    history = model.fit(data, _normal(6, 3), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_reference_style_calls():
    cell = layers.AGRUCell(3, att_type="AGRU")
    x, h = _normal(2, 2), _normal(2, 3)
    att = RNG.uniform(size=(2, 1)).astype("float32")
    out, state = cell(x, h, att)
    np.testing.assert_array_equal(_np(out), _np(state))
    np.testing.assert_allclose(_np(out), _np(cell.step(x, h, att)), atol=1e-6)
    with pytest.raises(ValueError, match="state width"):
        cell(x, _normal(2, 4), att)
    seq, scores = _normal(2, 3, 2), RNG.uniform(size=(2, 3)).astype("float32")
    init = _normal(2, 3)
    _, f1 = layers.dynamic_rnn_with_attention(cell, seq, scores, 1, True, init)
    _, f2 = layers.static_rnn_with_attention(cell, seq, scores, init)
    np.testing.assert_allclose(_np(f1), _np(f2), atol=1e-6)


@pytest.mark.parametrize("name", ["din", "dien", "dmr"])
def test_nan_and_inf_padding_stays_out(name):
    q, k = _normal(3, 3), _normal(3, 4, 3)
    layer = {
        "din": lambda: layers.DIN([3, 1], activation="relu"),
        "dien": lambda: layers.DIEN(3, att_type="AUGRU"),
        "dmr": lambda: layers.DMR_U2I(2),
    }[name]()
    bad = k.copy()
    bad[~MASK] = np.nan
    bad[2, 0] = np.inf
    y = _np(layer([q, k], mask=MASK))
    np.testing.assert_array_equal(_np(layer([q, bad], mask=MASK)), y)
    q_in, k_in = keras.Input((3,)), keras.Input((4, 3))
    m_in = keras.Input((4,), dtype="bool")
    model = keras.Model([q_in, k_in, m_in], layer([q_in, k_in], mask=m_in))
    model.compile(optimizer="sgd", loss="mse")
    model.fit([q, bad, MASK], np.ones_like(y), epochs=1, verbose=0)
    for w in model.weights:
        assert np.all(np.isfinite(_np(w))), w.path
