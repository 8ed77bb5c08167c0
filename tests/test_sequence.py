"""Behaviour-sequence layers: masks, errors, config round-trips, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_mtl import layers
from keras_mtl.backend.gru import gru_states
from keras_mtl.layers.sequence.agru import dynamic_rnn_with_attention
from keras_mtl.layers.sequence.agru import static_rnn_with_attention
from tests._helpers import config_round_trip
from tests._helpers import only
from tests._helpers import to_numpy

RNG = np.random.default_rng(0)
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _poison(x, mask):
    """`x` with every padded step replaced by large random values."""
    big = RNG.uniform(-1e3, 1e3, size=x.shape).astype("float32")
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return np.where(m, x, big)


# --- AGRUCell and the attention RNN helpers ----------------------------------


@pytest.mark.parametrize("att_type", ["AGRU", "augru"])
def test_static_and_dynamic_rnn_agree(att_type):
    cell = layers.AGRUCell(5, att_type=att_type)
    x, att = _normal(3, 4, 2), RNG.uniform(size=(3, 4)).astype("float32")
    o1, f1 = static_rnn_with_attention(cell, x, att, mask=MASK)
    o2, f2 = dynamic_rnn_with_attention(cell, x, att, mask=MASK)
    np.testing.assert_allclose(to_numpy(o1), to_numpy(o2), atol=1e-6)
    np.testing.assert_allclose(to_numpy(f1), to_numpy(f2), atol=1e-6)
    # Without attention and mask too.
    o1, f1 = static_rnn_with_attention(cell, x, None)
    o2, f2 = dynamic_rnn_with_attention(cell, x, None)
    np.testing.assert_allclose(to_numpy(f1), to_numpy(f2), atol=1e-6)


@pytest.mark.parametrize(
    "helper", [static_rnn_with_attention, dynamic_rnn_with_attention]
)
def test_masked_steps_keep_the_state(helper):
    cell = layers.AGRUCell(4, att_type="AUGRU")
    x, att = _normal(3, 4, 2), RNG.uniform(size=(3, 4)).astype("float32")
    outputs, final = helper(cell, x, att, mask=MASK)
    outputs2, final2 = helper(cell, _poison(x, MASK), _poison(att, MASK), mask=MASK)
    np.testing.assert_array_equal(to_numpy(final), to_numpy(final2))
    np.testing.assert_array_equal(to_numpy(outputs), to_numpy(outputs2))
    np.testing.assert_array_equal(to_numpy(final)[2], np.zeros(4))
    # Row 1 stops after step 1: its final state is the state after step 1.
    np.testing.assert_array_equal(to_numpy(final)[1], to_numpy(outputs)[1, 1])


def test_augru_zero_attention_keeps_state_and_agru_full_attention_is_candidate():
    x, h = _normal(2, 3), _normal(2, 4)
    augru = layers.AGRUCell(4, att_type="AUGRU")
    augru.build((2, 3))
    np.testing.assert_allclose(
        to_numpy(augru.step(x, h, np.zeros((2, 1), "float32"))), h
    )
    agru = layers.AGRUCell(4, att_type="AGRU")
    agru.build((2, 3))
    one = np.ones((2, 1), "float32")
    # a = 1: AGRU takes the candidate, AUGRU a plain GRU step (no attention).
    np.testing.assert_allclose(
        to_numpy(augru.step(x, h, one)), to_numpy(augru.step(x, h, None)), atol=1e-6
    )
    zero = to_numpy(agru.step(x, h, np.zeros((2, 1), "float32")))
    np.testing.assert_allclose(zero, h)


def test_agru_cell_in_keras_rnn():
    cell = layers.AGRUCell(3, attention_in_inputs=True)
    x, att = _normal(2, 4, 2), RNG.uniform(size=(2, 4, 1)).astype("float32")
    y = keras.layers.RNN(cell)(np.concatenate([x, att], axis=-1))
    _, expected = static_rnn_with_attention(cell, x, att)
    np.testing.assert_allclose(to_numpy(y), to_numpy(expected), atol=1e-6)


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
    clone = config_round_trip(
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
    y = to_numpy(din([q, k], mask=MASK))
    y2 = to_numpy(din([q, _poison(k, MASK)], mask=MASK))
    if mode == "sum":
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(y[2], np.zeros(2))
    else:
        np.testing.assert_array_equal(y * MASK[..., None], y2 * MASK[..., None])
        np.testing.assert_array_equal(y[~MASK], np.zeros_like(y[~MASK]))
    numeric = to_numpy(din([q, k], mask=MASK.astype("float32")))
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
        assert np.all(np.isfinite(to_numpy(w)))


def test_din_errors_and_config():
    with pytest.raises(ValueError, match="hidden_units"):
        layers.DIN([4, 2])
    din = layers.DIN([2, 1])
    with pytest.raises(ValueError, match="query dimension"):
        din([_normal(2, 3), _normal(2, 4, 2)])
    with pytest.raises(ValueError, match="mask"):
        din([_normal(2, 2), _normal(2, 4, 2)], mask=np.ones((2, 3), bool))
    clone = config_round_trip(
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
    np.testing.assert_array_equal(to_numpy(final), to_numpy(final2))
    np.testing.assert_array_equal(to_numpy(states), to_numpy(states2))
    np.testing.assert_array_equal(to_numpy(final)[2], np.zeros(3))
    # The mask may also come as a third input.
    np.testing.assert_array_equal(to_numpy(dien([q, k, MASK])[0]), to_numpy(final))


@only("torch")
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gru_states_equal_keras_gru_on_a_masked_sequence(activation):
    # On torch a masked sequence runs keras_mtl's scan instead of Keras's GRU:
    # the same states, a gap inside a row and a fully padded row included.
    gru = keras.layers.GRU(
        3, activation=activation, reset_after=True, return_sequences=True
    )
    x = ops.convert_to_tensor(_normal(3, 4, 2))
    gru.build(tuple(x.shape))
    mask = ops.convert_to_tensor(
        np.array([[1, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    )
    np.testing.assert_allclose(
        to_numpy(gru_states(gru, x, mask)),
        to_numpy(gru(x, mask=mask)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_dien_scan_and_unrolled_agree():
    dien = layers.DIEN(3, att_type="AUGRU", activation="tanh")
    q, k = _normal(3, 3), _normal(3, 4, 2)
    y = to_numpy(dien([q, k], mask=MASK))
    unrolled = layers.DIEN.from_config({**dien.get_config(), "unroll": True})
    unrolled.build([q.shape, k.shape])
    unrolled.set_weights(dien.get_weights())
    np.testing.assert_allclose(to_numpy(unrolled([q, k], mask=MASK)), y, atol=1e-6)


@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.long(55)
def test_dien_trains_with_a_compiled_step(unroll):
    # jit_compile=True: XLA on TF (the scan path needs a bounded loop), jax.jit
    # on JAX, torch.compile on torch.
    if unroll and keras.backend.backend() == "torch":
        # Keras's torch `ops.scan` is a Python loop: dynamo traces the scan
        # path into this very graph (and takes over a minute to do it).
        pytest.skip("on torch the scan path already is the unrolled graph")
    # Two steps keep a full row, a padded one and an empty one: the compile
    # time grows with the steps (4 steps: 72 s on torch, 2 steps: 49 s).
    q_in, k_in = keras.Input((3,)), keras.Input((2, 2))
    m_in = keras.Input((2,), dtype="bool")
    y = layers.DIEN(3, att_type="AGRU", unroll=unroll)([q_in, k_in, m_in])
    model = keras.Model([q_in, k_in, m_in], keras.layers.Dense(1)(y))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    mask = np.array([[1, 1], [1, 0], [0, 0]], dtype=bool)
    data = [_normal(6, 3), _normal(6, 2, 2), np.concatenate([mask, mask])]
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
        assert np.all(np.isfinite(to_numpy(w)))


def test_dien_errors_and_config():
    with pytest.raises(ValueError, match="att_type"):
        layers.DIEN(3, att_type="GRU")
    dien = layers.DIEN(3)
    with pytest.raises(ValueError, match="num_units"):
        dien([_normal(2, 4), _normal(2, 4, 2)])
    with pytest.raises(ValueError, match="mask"):
        dien([_normal(2, 3), _normal(2, 4, 2)], mask=np.ones((2, 4, 1), bool))
    clone = config_round_trip(
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
    y = to_numpy(dmr([x, seq], mask=MASK))
    np.testing.assert_array_equal(y, to_numpy(dmr([x, _poison(seq, MASK)], mask=MASK)))
    assert np.all(np.isfinite(y))
    # A fully padded row pools to zeros: act(dense bias) * items.
    bias = to_numpy(dmr.dense.bias)
    np.testing.assert_allclose(y[2], np.maximum(bias, 0.0) * x[2], atol=1e-6)


def test_dmr_errors_and_config():
    dmr = layers.DMR_U2I(3)
    with pytest.raises(ValueError, match="mask"):
        dmr([_normal(2, 2), _normal(2, 4, 3)], mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="batch size"):
        layers.DMR_U2I(3)([_normal(3, 2), _normal(2, 4, 3)])
    with pytest.raises(ValueError, match="cmp_dim"):
        layers.DMR_U2I(0)
    clone = config_round_trip(
        layers.DMR_U2I(
            4,
            activation="tanh",
            initializer=keras.initializers.RandomNormal(seed=4),
            regularizer="l2",
            use_tanh=True,
        )
    )
    assert clone.use_tanh and clone.cmp_dim == 4
    config_round_trip(layers.DMR_U2I(4))


def test_reference_style_calls():
    cell = layers.AGRUCell(3, att_type="AGRU")
    x, h = _normal(2, 2), _normal(2, 3)
    att = RNG.uniform(size=(2, 1)).astype("float32")
    out, state = cell(x, h, att)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(state))
    np.testing.assert_allclose(to_numpy(out), to_numpy(cell.step(x, h, att)), atol=1e-6)
    with pytest.raises(ValueError, match="state width"):
        cell(x, _normal(2, 4), att)
    seq, scores = _normal(2, 3, 2), RNG.uniform(size=(2, 3)).astype("float32")
    init = _normal(2, 3)
    _, f1 = layers.dynamic_rnn_with_attention(cell, seq, scores, 1, True, init)
    _, f2 = layers.static_rnn_with_attention(cell, seq, scores, init)
    np.testing.assert_allclose(to_numpy(f1), to_numpy(f2), atol=1e-6)


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
    y = to_numpy(layer([q, k], mask=MASK))
    np.testing.assert_array_equal(to_numpy(layer([q, bad], mask=MASK)), y)
    q_in, k_in = keras.Input((3,)), keras.Input((4, 3))
    m_in = keras.Input((4,), dtype="bool")
    model = keras.Model([q_in, k_in, m_in], layer([q_in, k_in], mask=m_in))
    model.compile(optimizer="sgd", loss="mse")
    model.fit([q, bad, MASK], np.ones_like(y), epochs=1, verbose=0)
    for w in model.weights:
        assert np.all(np.isfinite(to_numpy(w))), w.path


# --- bad input never passes silently ------------------------------------------


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (layers.DIN, {"mode": "bogus"}, r"`mode`.*Received: mode='bogus'"),
        (layers.DIN, {"mode": "SUM"}, r"mode='SUM'"),
        (layers.DIN, {"mode": None}, r"mode=None"),
        (layers.DIN, {"hidden_units": "1"}, r"hidden_units='1'"),
        (layers.DIN, {"hidden_units": [2, 1.0]}, r"hidden_units=\[2, 1.0\]"),
        (layers.DIN, {"hidden_units": []}, r"hidden_units=\[\]"),
        (layers.DIN, {"decay": 1}, r"decay=1"),
        (layers.DIN, {"activation": "nope"}, r"activation='nope'"),
        (layers.DIN, {"initializer": "nope"}, r"initializer='nope'"),
        (layers.DIN, {"regularizer": "nope"}, r"regularizer='nope'"),
        (layers.DIEN, {"num_units": 2.5}, r"num_units=2.5"),
        (layers.DIEN, {"att_type": None}, r"att_type=None"),
        (layers.DIEN, {"return_extractor_states": "yes"}, r"states='yes'"),
        (layers.DIEN, {"unroll": 1}, r"unroll=1"),
        (layers.DIEN, {"activation": "nope"}, r"activation='nope'"),
        (layers.DIEN, {"initializer": 3}, r"initializer=3"),
        (layers.DIEN, {"regularizer": "l3"}, r"regularizer='l3'"),
        (layers.DMR_U2I, {"cmp_dim": "2"}, r"cmp_dim='2'"),
        (layers.DMR_U2I, {"use_tanh": 2}, r"use_tanh=2"),
        (layers.DMR_U2I, {"activation": "nope"}, r"activation='nope'"),
        (layers.DMR_U2I, {"initializer": "nope"}, r"initializer='nope'"),
        (layers.DMR_U2I, {"regularizer": 1.0}, r"regularizer=1.0"),
        (layers.AGRUCell, {"units": True}, r"units=True"),
        (layers.AGRUCell, {"att_type": 3}, r"att_type=3"),
        (layers.AGRUCell, {"attention_in_inputs": None}, r"inputs=None"),
        (layers.AGRUCell, {"activation": "nope"}, r"activation='nope'"),
        (layers.AGRUCell, {"initializer": "nope"}, r"initializer='nope'"),
    ],
)
def test_sequence_bad_arguments(cls, kwargs, match):
    base = {
        layers.DIN: {"hidden_units": [2, 1]},
        layers.DIEN: {"num_units": 3},
        layers.DMR_U2I: {"cmp_dim": 2},
        layers.AGRUCell: {"units": 3},
    }[cls]
    with pytest.raises(ValueError, match=match):
        cls(**{**base, **kwargs})


@pytest.mark.backend_independent
def test_valid_sequence_configs_still_build_and_round_trip():
    din = config_round_trip(layers.DIN(1, mode="weight"))
    assert din.hidden_units == [1] and din.mode == "weight"
    assert (
        config_round_trip(layers.DIN([2, 1], initializer=None)).initializer is not None
    )
    assert config_round_trip(layers.DMR_U2I(2, initializer=None, activation=None))
    config_round_trip(layers.DIEN(2, att_type="augru", initializer="glorot_normal"))
    config_round_trip(layers.AGRUCell(2, activation=None, initializer=None))


def test_rnn_helper_bad_arguments():
    cell = layers.AGRUCell(3)
    x, att = _normal(2, 4, 2), RNG.uniform(size=(2, 4)).astype("float32")
    with pytest.raises(ValueError, match=r"parallel_iterations=0"):
        dynamic_rnn_with_attention(cell, x, att, 0)
    with pytest.raises(ValueError, match=r"swap_memory='yes'"):
        dynamic_rnn_with_attention(cell, x, att, 1, "yes")
    with pytest.raises(ValueError, match=r"init_state.*\(2, 3\).*\(2, 4\)"):
        static_rnn_with_attention(cell, x, att, _normal(2, 4))
    with pytest.raises(ValueError, match=r"`inputs`"):
        static_rnn_with_attention(cell, _normal(2, 4), att)
    # The cell is built for 2 input features now.
    with pytest.raises(ValueError, match=r"`AGRUCell`.*inputs.*last dimension of 2"):
        dynamic_rnn_with_attention(cell, _normal(2, 4, 5), att)
    with pytest.raises(ValueError, match=r"`AGRUCell`.*last dimension of 2"):
        cell(_normal(2, 5), _normal(2, 3), att[:, :1])


@pytest.mark.parametrize("name", ["din", "dien", "dmr"])
def test_wrong_number_of_inputs_names_the_layer(name):
    make = {
        "din": lambda: layers.DIN([2, 1]),
        "dien": lambda: layers.DIEN(3),
        "dmr": lambda: layers.DMR_U2I(2),
    }[name]
    q, k = _normal(3, 3), _normal(3, 4, 3)
    layer = make()
    cls = type(layer).__name__
    # Before the build (today "not enough values to unpack") and after it.
    with pytest.raises(ValueError, match=rf"`{cls}`.*Received: 1 tensor"):
        layer([k])
    layer([q, k])
    with pytest.raises(ValueError, match=rf"`{cls}`.*Received: 1 tensor"):
        layer([k])
    too_many = [q, k, MASK, MASK] if name == "dien" else [q, k, MASK]
    with pytest.raises(ValueError, match=rf"`{cls}`.*Received: {len(too_many)}"):
        layer(too_many)


@pytest.mark.parametrize(
    "name, other, match",
    [
        ("din", [(3, 2), (3, 4, 2)], r"`DIN`.*keys.*last dimension of 3"),
        ("dien", [(3, 3), (3, 4, 2)], r"`DIEN`.*keys.*last dimension of 3"),
        ("dmr", [(3, 3), (3, 4, 2)], r"`DMR_U2I`.*user_seq.*last dimension of 3"),
        ("dmr", [(3, 2), (3, 4, 3)], r"`DMR_U2I`.*items.*last dimension of 3"),
        ("dmr", [(3, 3), (3, 5, 3)], r"`DMR_U2I`.*4 steps"),
    ],
)
def test_other_feature_sizes_after_build_name_the_layer(name, other, match):
    layer = {
        "din": lambda: layers.DIN([2, 1]),
        "dien": lambda: layers.DIEN(3),
        "dmr": lambda: layers.DMR_U2I(2),
    }[name]()
    layer([_normal(3, 3), _normal(3, 4, 3)])
    with pytest.raises(ValueError, match=match):
        layer([_normal(*s) for s in other])


def _seq_layer(name):
    return {
        "din": lambda: layers.DIN([3, 1], activation="relu"),
        "din_weight": lambda: layers.DIN([3, 1], mode="weight", decay=True),
        "dien": lambda: layers.DIEN(3, att_type="AUGRU"),
        "dien_unroll": lambda: layers.DIEN(
            3, unroll=True, return_extractor_states=True
        ),
        "dmr": lambda: layers.DMR_U2I(2, use_tanh=True),
    }[name]()


SEQ_NAMES = ["din", "din_weight", "dien", "dien_unroll", "dmr"]


@pytest.mark.parametrize("name", ["din", "din_weight", "dien", "dmr"])
def test_numeric_masks_are_real_where_at_least_one(name):
    # The reference rule pinned by the DIN spec: a step is real where
    # mask >= 1; 0.5 is padding and never scales the output.
    layer = _seq_layer(name)
    q, k = _normal(2, 3), _normal(2, 4, 3)
    numeric = np.array([[2.0, 0.5, 1.0, 0.0], [0.5, 1.0, 0.25, 1.0]], "float32")
    want = to_numpy(layer([q, k], mask=numeric >= 1))
    np.testing.assert_array_equal(to_numpy(layer([q, k], mask=numeric)), want)


def test_masked_softmax_over_one_step_is_softmax_and_warns_nothing():
    # Keras's softmax warns on every call over an axis of size 1 (a
    # length-one sequence); masked_softmax gives the same values silently.
    import warnings

    from keras_mtl import numerics

    x = np.array([[0.3], [np.nan], [np.inf], [-np.inf]], "float32")
    logits = ops.convert_to_tensor(x)
    mask = np.array([[True], [True], [True], [False]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = numerics.masked_softmax(logits)
        masked = numerics.masked_softmax(logits, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = to_numpy(ops.softmax(logits, axis=-1))
    np.testing.assert_array_equal(to_numpy(plain), want)  # 1, then NaN
    np.testing.assert_array_equal(to_numpy(masked), np.where(mask, want, 0.0))


@pytest.mark.parametrize("helper", ["static", "dynamic"])
def test_rnn_helper_numeric_masks_are_real_where_at_least_one(helper):
    run = (
        static_rnn_with_attention if helper == "static" else dynamic_rnn_with_attention
    )
    cell = layers.AGRUCell(3, att_type="AUGRU")
    x, att = _normal(2, 4, 2), RNG.uniform(size=(2, 4)).astype("float32")
    numeric = np.array([[2.0, 0.5, 0.0, 1.0], [0.0, 1.0, 0.25, 0.0]], "float32")
    out, final = run(cell, x, att, mask=numeric)
    out_b, final_b = run(cell, x, att, mask=numeric >= 1)
    np.testing.assert_array_equal(to_numpy(final), to_numpy(final_b))
    np.testing.assert_array_equal(to_numpy(out), to_numpy(out_b))


class _Evolve(keras.layers.Layer):
    """The attention RNN helpers inside a layer, to train through them."""

    def __init__(self, unroll, **kwargs):
        super().__init__(**kwargs)
        self.unroll = unroll
        self.cell = layers.AGRUCell(3, att_type="AUGRU")

    def build(self, input_shape):
        self.cell.build((None, input_shape[0][-1]))

    def call(self, inputs):
        x, att, mask = inputs
        run = static_rnn_with_attention if self.unroll else dynamic_rnn_with_attention
        outputs, final = run(self.cell, x, att, mask=mask)
        return ops.concatenate([final, ops.sum(outputs, axis=1)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 6)


@pytest.mark.parametrize("unroll", [False, True])
def test_rnn_helpers_keep_nan_padding_out_of_states_and_gradients(unroll):
    x, att = _normal(3, 4, 2), RNG.uniform(size=(3, 4)).astype("float32")
    bad_x, bad_att = x.copy(), att.copy()
    bad_x[~MASK], bad_att[~MASK] = np.nan, np.nan
    layer = _Evolve(unroll)
    y = to_numpy(layer([x, att, MASK]))
    np.testing.assert_array_equal(to_numpy(layer([bad_x, bad_att, MASK])), y)
    inputs = [keras.Input((4, 2)), keras.Input((4,)), keras.Input((4,), dtype="bool")]
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit([bad_x, bad_att, MASK], np.ones_like(y), epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for w in model.weights:
        assert np.all(np.isfinite(to_numpy(w))), w.path


def _seq_inputs(name, batch, dtype="float32"):
    rng = np.random.default_rng(5)
    q = rng.integers(-2, 3, size=(batch, 3)).astype(dtype)
    k = rng.integers(-2, 3, size=(batch, 4, 3)).astype(dtype)
    if name == "dmr":
        q = q[:, :2]
    mask = np.tile(MASK[:1], (batch, 1))
    mask[: batch // 2, 2:] = False
    return [q, k], mask


@pytest.mark.parametrize("name", SEQ_NAMES)
def test_integer_inputs_are_cast_to_the_compute_dtype(name):
    layer = _seq_layer(name)
    inputs, mask = _seq_inputs(name, 3)
    floats = layer(inputs, mask=mask)
    ints = layer(_seq_inputs(name, 3, "int32")[0], mask=mask)
    floats = floats if isinstance(floats, list) else [floats]
    ints = ints if isinstance(ints, list) else [ints]
    for a, b in zip(ints, floats, strict=True):
        a, b = to_numpy(a), to_numpy(b)
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_rnn_helpers_and_cell_cast_integer_inputs():
    cell = layers.AGRUCell(3)
    x = RNG.integers(-2, 3, size=(2, 4, 2))
    att = RNG.integers(0, 2, size=(2, 4))
    for run in (static_rnn_with_attention, dynamic_rnn_with_attention):
        out_i, final_i = run(
            cell, x.astype("int32"), att.astype("int32"), mask=MASK[:2]
        )
        out_f, final_f = run(
            cell, x.astype("float32"), att.astype("float32"), mask=MASK[:2]
        )
        assert to_numpy(final_i).dtype == np.float32
        np.testing.assert_allclose(to_numpy(final_i), to_numpy(final_f), atol=1e-6)
        np.testing.assert_allclose(to_numpy(out_i), to_numpy(out_f), atol=1e-6)
    h = np.zeros((2, 3), "int32")
    np.testing.assert_allclose(
        to_numpy(cell(x[:, 0].astype("int32"), h)[0]),
        to_numpy(cell(x[:, 0].astype("float32"), h.astype("float32"))[0]),
        atol=1e-6,
    )


@pytest.mark.parametrize("name", SEQ_NAMES)
def test_empty_batch_gives_an_empty_output(name):
    layer = _seq_layer(name)
    full_inputs, full_mask = _seq_inputs(name, 2)
    full = layer(full_inputs, mask=full_mask)
    inputs, mask = _seq_inputs(name, 0)
    empty = layer(inputs, mask=mask)
    full = full if isinstance(full, list) else [full]
    empty = empty if isinstance(empty, list) else [empty]
    for e, f in zip(empty, full, strict=True):
        e = to_numpy(e)
        assert e.shape == (0,) + tuple(f.shape[1:])
        assert e.dtype == np.float32 and not np.isnan(e).any()


@pytest.mark.parametrize(
    "helper", [static_rnn_with_attention, dynamic_rnn_with_attention]
)
def test_rnn_helpers_empty_batch(helper):
    cell = layers.AGRUCell(3)
    x, att = np.zeros((0, 4, 2), "float32"), np.zeros((0, 4), "float32")
    outputs, final = helper(cell, x, att, mask=np.zeros((0, 4), bool))
    assert tuple(outputs.shape) == (0, 4, 3) and tuple(final.shape) == (0, 3)


def test_unknown_steps_and_empty_features_are_refused():
    keys = keras.Input((None, 2))
    with pytest.raises(ValueError, match=r"unroll=True.*static number of steps"):
        layers.DIEN(3, unroll=True)([keras.Input((3,)), keys])
    assert layers.DIEN(3)([keras.Input((3,)), keys]).shape == (None, 3)
    with pytest.raises(ValueError, match=r"at least one input feature"):
        layers.AGRUCell(3, attention_in_inputs=True).build((2, 1))
