"""Behaviour-sequence layers: DIN and DIEN over padded behaviour sequences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation
from keras_mtl.layers.agru import AGRUCell
from keras_mtl.layers.agru import dynamic_rnn_with_attention
from keras_mtl.layers.agru import static_rnn_with_attention
from keras_mtl.layers.mlp import MLP

InitializerLike = str | keras.initializers.Initializer | None
RegularizerLike = str | keras.regularizers.Regularizer | None
DIN_MODES = ("sum", "weight")


def sequence_mask(mask: Any, keys: Any, name: str = "mask") -> Any | None:
    """Checks a `[B, T]` sequence mask against `keys` `[B, T, ...]`; bool or None.

    Keras passes a list of masks for list inputs; the last entry (the keys')
    is used then. Numeric masks keep the positions with `mask >= 1` (the
    reference library's rule, pinned by the DIN conformance spec): `0.5` is
    padding, never a weight.
    """
    if isinstance(mask, (list, tuple)):
        mask = mask[-1]
    if mask is None:
        return None
    shape = tuple(mask.shape)
    expected = tuple(keys.shape[:2])
    if len(shape) != 2 or any(
        a is not None and b is not None and a != b
        for a, b in zip(shape, expected, strict=True)
    ):
        raise ValueError(
            f"`{name}` must have shape (batch, steps) = {expected} matching "
            f"the keys. Received: {name}.shape={shape}"
        )
    if keras.backend.standardize_dtype(mask.dtype) == "bool":
        return mask
    return ops.greater_equal(ops.cast(mask, "float32"), 1.0)


def _input_shapes(layer: Any, input_shape: Any, expected: Any) -> list:
    """The list of input shapes, with the count checked (`build` receives one
    shape, not a list, for a single tensor)."""
    is_list = (
        isinstance(input_shape, (list, tuple))
        and len(input_shape) > 0
        and all(isinstance(s, (list, tuple)) for s in input_shape)
    )
    return validation.input_count(
        layer, input_shape if is_list else [input_shape], expected
    )


def zero_padded(x: Any, mask: Any | None) -> Any:
    """`x` `[B, T, ...]` with padded steps set to 0 (so NaN/inf padding stays out)."""
    if mask is None:
        return x
    m = ops.reshape(mask, tuple(ops.shape(mask)) + (1,) * (len(x.shape) - 2))
    return ops.where(m, x, ops.zeros_like(x))


@keras.saving.register_keras_serializable(package="keras_mtl")
class DIN(keras.layers.Layer):
    """Deep Interest Network target attention over a behaviour sequence.

    For queries `q` `[B, H]` and keys `k` `[B, T, H]`:

    `z_t = [q, k_t, q - k_t, q * k_t]`, `w_t = MLP(z_t)` (raw scores, no
    softmax, as in the DIN paper); with `decay=True`, `w_t <- w_t / sqrt(H)`
    (a scaling by the key width, not a time decay). Padded positions
    (`mask` false, or `< 1` for numeric masks: a numeric mask is read as
    real where `>= 1`, never as a weight) get `w_t = 0`, so a fully padded
    row gives zeros. Padded keys are replaced by zeros with a select first,
    so NaN or inf padding never reaches the outputs or the gradients.

    - `mode="sum"`: output `sum_t w_t * k_t`, `[B, H]`;
    - `mode="weight"`: per-step weighting `w_t * k_t`, `[B, T, H]` (the
      keys' mask is propagated).

    The attention MLP (`compress_tower`) is a weight-normalized
    `keras_mtl.layers.MLP` with `output_dims=hidden_units`; `activation`
    applies to the hidden layers (the last is linear) and `None` means
    linear, so **with the defaults the attention MLP is purely linear**.

    Args:
        hidden_units: int or non-empty list of positive int; the last must
            be 1 (an int `n` means `[n]`, so only `1`).
        activation: hidden activation of the attention MLP (a name, a
            serialized dict or a callable); `None` is linear. Defaults to
            `None`.
        initializer: kernel initializer (a Keras initializer, its name or
            its config); `None` means `GlorotNormal`. Defaults to `None`.
        regularizer: kernel regularizer (a Keras regularizer, its name, its
            config or `None`). Defaults to `None`.
        mode: `"sum"` pools over steps, `"weight"` weights each step.
            Defaults to `"sum"`.
        decay: bool. Divide the scores by `sqrt(H)`. Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Call arguments: `inputs = [queries, keys]`, exactly two tensors
    (integer inputs are cast to the compute dtype); `mask` `[B, T]` (bool,
    or numeric read as real where `>= 1`) for the keys, optional.

    Input shape: `[(batch, H), (batch, T, H)]`; after the first call,
    another `H` raises a `ValueError`.
    Output shape: `(batch, H)` for `mode="sum"`, else `(batch, T, H)`.

    Weights: `compress_tower/dense_{i}/{kernel, kernel_norm, bias}`.

    Example:

    ```python
    din = keras_mtl.layers.DIN([8, 1], activation="relu")
    y = din([queries, keys], mask=mask)  # (B, H)
    ```

    References:
        - [Zhou et al., 2018, Deep Interest Network](
          https://arxiv.org/abs/1706.06978)
    """

    def __init__(
        self,
        hidden_units: int | Sequence[int],
        activation: activations.ActivationLike = None,
        initializer: InitializerLike = None,
        regularizer: RegularizerLike = None,
        mode: str = "sum",
        decay: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_units = validation.positive_int_or_list(
            "hidden_units", hidden_units
        )
        if self.hidden_units[-1] != 1:
            raise ValueError(
                "The last entry of `hidden_units` must be 1 (one score per "
                f"step). Received: hidden_units={hidden_units!r}"
            )
        self.activation = activations.get_named(
            "activation", "linear" if activation is None else activation
        )
        self.initializer = validation.initializer(
            "initializer", "glorot_normal" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        # Any mode but "sum" used to mean per-step weighting, so a typo
        # silently changed the output shape.
        self.mode = validation.one_of("mode", mode, DIN_MODES)
        self.decay = validation.boolean("decay", decay)
        # The key width seen by `build`, checked again in `call`.
        self._key_dim: int | None = None
        self.supports_masking = True
        self.compress_tower = MLP(
            self.hidden_units,
            activations=activations.clone(self.activation),
            initializers=self.initializer,
            kernel_regularizer=self.regularizer,
            use_weight_norm=True,
            name="compress_tower",
            dtype=self.dtype_policy,
        )

    def _check_shapes(self, q_shape: Any, k_shape: Any) -> None:
        if len(q_shape) != 2 or len(k_shape) != 3:
            raise ValueError(
                "DIN expects queries of rank 2 and keys of rank 3. Received: "
                f"queries.shape={tuple(q_shape)}, keys.shape={tuple(k_shape)}"
            )
        if q_shape[-1] is None or q_shape[-1] != k_shape[-1]:
            raise ValueError(
                "The query dimension must equal the key dimension H. Received: "
                f"queries.shape={tuple(q_shape)}, keys.shape={tuple(k_shape)}"
            )

    def build(self, input_shape: Any) -> None:
        q_shape, k_shape = _input_shapes(self, input_shape, 2)
        self._check_shapes(q_shape, k_shape)
        self._key_dim = k_shape[-1]
        self.compress_tower.build((*k_shape[:2], 4 * k_shape[-1]))

    def call(self, inputs: Any, mask: Any | None = None) -> Any:
        queries, keys = validation.input_count(self, inputs, 2)
        self._check_shapes(queries.shape, keys.shape)
        validation.last_dim(self, "keys", keys.shape, self._key_dim)
        queries = ops.cast(queries, self.compute_dtype)
        keys = ops.cast(keys, self.compute_dtype)
        mask = sequence_mask(mask, keys)
        keys = zero_padded(keys, mask)
        q = ops.broadcast_to(ops.expand_dims(queries, 1), ops.shape(keys))
        z = ops.concatenate([q, keys, q - keys, q * keys], axis=-1)
        w = self.compress_tower(z)  # [B, T, 1]
        if self.decay:
            w = w / math.sqrt(keys.shape[-1])
        if mask is not None:
            w = ops.where(ops.expand_dims(mask, -1), w, ops.zeros_like(w))
        if self.mode == "sum":
            return ops.sum(w * keys, axis=1)
        return keys * w

    def compute_mask(self, inputs: Any, mask: Any | None = None) -> Any | None:
        if self.mode == "sum" or mask is None:
            return None
        if isinstance(mask, (list, tuple)):
            return mask[-1]
        return mask

    def compute_output_shape(self, input_shape: Any) -> Any:
        _, k_shape = _input_shapes(self, input_shape, 2)
        if self.mode == "sum":
            return (k_shape[0], k_shape[-1])
        return tuple(k_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "hidden_units": self.hidden_units,
                "activation": activations.serialize(self.activation),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "mode": self.mode,
                "decay": self.decay,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class DIEN(keras.layers.Layer):
    """Deep Interest Evolution Network: GRU interest extractor + AGRU/AUGRU.

    For queries `q` `[B, U]` and behaviour keys `k` `[B, T, E]`:

    1. Interest extractor: `h = GRU(k)` `[B, T, U]` (a Keras `GRU`,
       `reset_after=True`, zero initial state).
    2. Target attention: `a = masked_softmax(<h_t, q W^T>)` over the steps.
    3. Interest evolution: `s = AttentionRNN(h, a)` with an `AGRUCell` of the
       given `att_type` (`AGRU`: `h' = (1 - a) h + a c`; `AUGRU`: the update
       gate is scaled by `a`, as in the DIEN paper). Output: the final state
       `s` `[B, U]`.

    Masks: a padded step (`mask` false, or `< 1` for numeric masks: a
    numeric mask is read as real where `>= 1`, never as a weight) leaves the
    state of both recurrent passes unchanged and gets zero attention; a fully
    padded row gives zeros (no NaN, in values or gradients; padded keys are
    replaced by zeros with a select first, so even NaN padding stays out). With
    `return_extractor_states=True` the extractor states `h` (for the paper's
    auxiliary next-behaviour loss, computed by the caller) are returned too;
    at padded steps they repeat the last valid state.

    Args:
        num_units: positive int. Width `U` of both recurrent states; the
            query width must equal it.
        att_type: `"AGRU"` or `"AUGRU"` (case-insensitive). Defaults to
            `"AGRU"`.
        activation: candidate activation of both cells (a name, a
            serialized dict or a callable). Defaults to `"relu"`.
        initializer: kernel initializer (a Keras initializer, its name or
            its config); `None` means `HeUniform`. Defaults to `None`.
        regularizer: kernel regularizer (a Keras regularizer, its name, its
            config or `None`). Defaults to `None`.
        return_extractor_states: bool. Also return the extractor states
            `[B, T, U]`. Defaults to `False`.
        unroll: bool. Run the evolution with an unrolled Python loop (needs a
            static `T`) instead of `keras.ops.scan`. Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Call arguments: `inputs = [queries, keys]` or `[queries, keys, mask]`
    (integer queries and keys are cast to the compute dtype); `mask`
    `[B, T]` (bool, or numeric read as real where `>= 1`), optional.

    Input shape: `[(batch, U), (batch, T, E)]`; after the first call,
    another `E` raises a `ValueError`.
    Output shape: `(batch, U)`; with `return_extractor_states`,
    `[(batch, U), (batch, T, U)]`.

    Weights: `gru/gru_cell/{kernel (E, 3U), recurrent_kernel (U, 3U),
    bias (2, 3U)}`, `augru_cell/{gates_kernel, gates_bias, candidate_kernel,
    candidate_bias}`, `attention_weight` `(U, U)`.

    Example:

    ```python
    dien = keras_mtl.layers.DIEN(8, att_type="AUGRU")
    interest = dien([queries, keys], mask=mask)  # (B, 8)
    ```

    References:
        - [Zhou et al., 2019, Deep Interest Evolution Network](
          https://arxiv.org/abs/1809.03672)
    """

    def __init__(
        self,
        num_units: int,
        att_type: str = "AGRU",
        activation: activations.ActivationLike = "relu",
        initializer: InitializerLike = None,
        regularizer: RegularizerLike = None,
        return_extractor_states: bool = False,
        unroll: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_units = validation.positive_int("num_units", num_units)
        self.activation = activations.get_named("activation", activation)
        self.initializer = validation.initializer(
            "initializer", "he_uniform" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.return_extractor_states = validation.boolean(
            "return_extractor_states", return_extractor_states
        )
        self.unroll = validation.boolean("unroll", unroll)
        # The key width seen by `build`, checked again in `call`.
        self._key_dim: int | None = None
        self.supports_masking = True
        self.gru = keras.layers.GRU(
            self.num_units,
            activation=activations.clone(self.activation),
            kernel_initializer=self.initializer,
            kernel_regularizer=self.regularizer,
            reset_after=True,
            return_sequences=True,
            name="gru",
            dtype=self.dtype_policy,
        )
        self.augru_cell = AGRUCell(
            self.num_units,
            att_type=att_type,
            activation=activations.clone(self.activation),
            initializer=self.initializer,
            regularizer=self.regularizer,
            name="augru_cell",
            dtype=self.dtype_policy,
        )
        self.att_type = self.augru_cell.att_type

    def _split(self, inputs: Any, mask: Any) -> tuple[Any, Any, Any]:
        inputs = validation.input_count(self, inputs, (2, 3))
        if len(inputs) == 3:
            inputs, mask = inputs[:2], inputs[2]
        return inputs[0], inputs[1], mask

    def _check_shapes(self, q_shape: Any, k_shape: Any) -> None:
        if len(q_shape) != 2 or len(k_shape) != 3:
            raise ValueError(
                "DIEN expects queries of rank 2 and keys of rank 3. Received: "
                f"queries.shape={tuple(q_shape)}, keys.shape={tuple(k_shape)}"
            )
        if q_shape[-1] != self.num_units:
            raise ValueError(
                "The query dimension must equal num_units="
                f"{self.num_units}. Received: queries.shape={tuple(q_shape)}"
            )
        if k_shape[-1] is None:
            raise ValueError(
                "DIEN needs a static key dimension. "
                f"Received: keys.shape={tuple(k_shape)}"
            )
        if self.unroll and k_shape[1] is None:
            raise ValueError(
                "DIEN with `unroll=True` needs a static number of steps T. "
                f"Received: keys.shape={tuple(k_shape)}"
            )

    def build(self, input_shape: Any) -> None:
        q_shape, k_shape = _input_shapes(self, input_shape, (2, 3))[:2]
        self._check_shapes(q_shape, k_shape)
        self._key_dim = k_shape[-1]
        self.gru.build(tuple(k_shape))
        self.augru_cell.build((q_shape[0], self.num_units))
        self.attention_weight = self.add_weight(
            name="attention_weight",
            shape=(self.num_units, self.num_units),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )

    def call(self, inputs: Any, mask: Any | None = None) -> Any:
        queries, keys, mask = self._split(inputs, mask)
        self._check_shapes(queries.shape, keys.shape)
        validation.last_dim(self, "keys", keys.shape, self._key_dim)
        queries = ops.cast(queries, self.compute_dtype)
        keys = ops.cast(keys, self.compute_dtype)
        mask = sequence_mask(mask, keys)
        keys = zero_padded(keys, mask)
        states = self.gru(keys, mask=mask)
        target = ops.matmul(queries, ops.transpose(self.attention_weight))
        logits = ops.sum(states * ops.expand_dims(target, 1), axis=-1)
        att = numerics.masked_softmax(logits, mask, axis=-1)
        rnn = static_rnn_with_attention if self.unroll else dynamic_rnn_with_attention
        _, final = rnn(self.augru_cell, states, att, mask=mask)
        if self.return_extractor_states:
            return [final, states]
        return final

    def compute_mask(self, inputs: Any, mask: Any | None = None) -> Any | None:
        if self.return_extractor_states:
            return [None, None]
        return None

    def compute_output_shape(self, input_shape: Any) -> Any:
        q_shape, k_shape = _input_shapes(self, input_shape, (2, 3))[:2]
        final = (q_shape[0], self.num_units)
        if self.return_extractor_states:
            return [final, (k_shape[0], k_shape[1], self.num_units)]
        return final

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_units": self.num_units,
                "att_type": self.att_type,
                "activation": activations.serialize(self.activation),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "return_extractor_states": self.return_extractor_states,
                "unroll": self.unroll,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class DMR_U2I(keras.layers.Layer):  # noqa: N801 (reference class name)
    """Deep Match to Rank, user-to-item part: positional attention pooling.

    For items `x` `[B, Di]` and a user behaviour sequence `e` `[B, T, Du]`:

    `c_t = e_t W_e + p_t + b` (`[B, T, cmp_dim]`, `p` a learned positional
    embedding), `alpha = softmax_t(c_t z)` over the unpadded steps,
    `u = act(sum_t alpha_t e_t W + b_d)` `[B, Di]` and the output is
    `u * x` (element-wise, as in the reference library, which replaces the
    paper's dot product and auxiliary loss).

    **No tanh**: the paper scores `z^T tanh(W_p p_t + W_e e_t + b)`; the
    reference (and this layer by default) uses the linear `z^T c_t`.
    `use_tanh=True` gives the paper's form.

    Padded steps (`mask` false, or `< 1` for numeric masks: a numeric mask
    is read as real where `>= 1`, never as a weight) get zero attention; a
    fully padded row pools to zeros, so its output is `act(b_d) * x`,
    independent of the padded values (which are replaced by zeros with a
    select first, so NaN or inf padding stays out).

    Args:
        cmp_dim: positive int. Width of the attention space.
        activation: activation after the dense projection (a name, a
            serialized dict, a callable or `None` for linear). Defaults to
            `"PReLU"`.
        initializer: initializer of `pos_emb`, `emb_weight` and the dense
            kernel (a Keras initializer, its name or its config; `None`
            means `"glorot_uniform"`). Defaults to `"glorot_uniform"`.
        regularizer: regularizer of the same weights (a Keras regularizer,
            its name, its config or `None`). Defaults to `None`.
        use_tanh: bool. Apply tanh to `c_t` (the paper's form). Defaults to
            `False`.
        **kwargs: Args to pass to the base class.

    Call arguments: `inputs = [items, user_seq]`, exactly two tensors
    (integer inputs are cast to the compute dtype); `mask` `[B, T]` (bool,
    or numeric read as real where `>= 1`) for the sequence, optional.

    Input shape: `[(batch, Di), (batch, T, Du)]`, `T` and `Du` static; after
    the first call, another `T`, `Du` or `Di` raises a `ValueError`.
    Output shape: `(batch, Di)`.

    Weights: `pos_emb` `(T, cmp_dim)`, `emb_weight` `(Du, cmp_dim)`,
    `z_weight` `(cmp_dim, 1)` (ones), `bias` `(cmp_dim,)` (zeros),
    `dense/kernel` `(Du, Di)`, `dense/bias` `(Di,)`,
    `dense_activation/alpha` `(Di,)` for PReLU (zeros).

    Example:

    ```python
    dmr = keras_mtl.layers.DMR_U2I(8)
    y = dmr([items, user_seq], mask=mask)  # (B, Di)
    ```

    References:
        - [Lyu et al., 2020, Deep Match to Rank Model for Personalized
          Click-Through Rate Prediction](https://ojs.aaai.org/index.php/AAAI/article/view/5346)
    """

    def __init__(
        self,
        cmp_dim: int,
        activation: activations.ActivationLike = "PReLU",
        initializer: InitializerLike = "glorot_uniform",
        regularizer: RegularizerLike = None,
        use_tanh: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cmp_dim = validation.positive_int("cmp_dim", cmp_dim)
        self.activation = activations.clone(
            activations.get_named("activation", activation),
            name="dense_activation",
            dtype=self.dtype_policy,
        )
        # `None` is Keras's default for these weights, `"glorot_uniform"`.
        self.initializer = validation.initializer(
            "initializer", "glorot_uniform" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.use_tanh = validation.boolean("use_tanh", use_tanh)
        self.supports_masking = True
        # `(Di, T, Du)` seen by `build`, checked again in `call`.
        self._built_dims: tuple[int, int, int] | None = None

    def _check_shapes(self, i_shape: Any, s_shape: Any) -> None:
        if len(i_shape) != 2 or len(s_shape) != 3:
            raise ValueError(
                "DMR_U2I expects items of rank 2 and user_seq of rank 3. "
                f"Received: items.shape={tuple(i_shape)}, "
                f"user_seq.shape={tuple(s_shape)}"
            )
        if s_shape[1] is None or s_shape[2] is None or i_shape[-1] is None:
            raise ValueError(
                "DMR_U2I needs static T, Du and Di. Received: "
                f"items.shape={tuple(i_shape)}, user_seq.shape={tuple(s_shape)}"
            )
        if None not in (i_shape[0], s_shape[0]) and i_shape[0] != s_shape[0]:
            raise ValueError(
                "items and user_seq must have the same batch size. Received: "
                f"items.shape={tuple(i_shape)}, user_seq.shape={tuple(s_shape)}"
            )

    def _check_built(self, i_shape: Any, s_shape: Any) -> None:
        if self._built_dims is None:
            return
        items_dim, steps, width = self._built_dims
        validation.last_dim(self, "items", i_shape, items_dim)
        validation.last_dim(self, "user_seq", s_shape, width)
        if s_shape[1] is not None and s_shape[1] != steps:
            raise ValueError(
                f"`DMR_U2I` (layer '{self.name}') expects user_seq with {steps} "
                "steps (axis 1, the length of `pos_emb`), as it was built with. "
                f"Received: user_seq of shape {tuple(s_shape)}"
            )

    def build(self, input_shape: Any) -> None:
        i_shape, s_shape = _input_shapes(self, input_shape, 2)
        self._check_shapes(i_shape, s_shape)
        steps, width = int(s_shape[1]), int(s_shape[2])
        self._built_dims = (int(i_shape[-1]), steps, width)
        self.pos_emb = self.add_weight(
            name="pos_emb",
            shape=(steps, self.cmp_dim),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        self.emb_weight = self.add_weight(
            name="emb_weight",
            shape=(width, self.cmp_dim),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        self.z_weight = self.add_weight(
            name="z_weight", shape=(self.cmp_dim, 1), initializer="ones"
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.cmp_dim,), initializer="zeros"
        )
        self.dense = keras.layers.Dense(
            int(i_shape[-1]),
            kernel_initializer=self.initializer,
            kernel_regularizer=self.regularizer,
            name="dense",
            dtype=self.dtype_policy,
        )
        self.dense.build((i_shape[0], width))
        if isinstance(self.activation, keras.layers.Layer):
            self.activation.build((i_shape[0], int(i_shape[-1])))

    def call(self, inputs: Any, mask: Any | None = None) -> Any:
        items, seq = validation.input_count(self, inputs, 2)
        self._check_shapes(items.shape, seq.shape)
        self._check_built(items.shape, seq.shape)
        items = ops.cast(items, self.compute_dtype)
        seq = ops.cast(seq, self.compute_dtype)
        mask = sequence_mask(mask, seq)
        seq = zero_padded(seq, mask)
        c = ops.matmul(seq, self.emb_weight) + self.pos_emb + self.bias
        if self.use_tanh:
            c = ops.tanh(c)
        logits = ops.squeeze(ops.matmul(c, self.z_weight), axis=-1)  # [B, T]
        alpha = numerics.masked_softmax(logits, mask, axis=-1)
        pooled = ops.sum(ops.expand_dims(alpha, -1) * seq, axis=1)
        u = self.dense(pooled)
        if self.activation is not None:
            u = self.activation(u)
        return u * items

    def compute_mask(self, inputs: Any, mask: Any | None = None) -> Any | None:
        return None

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(_input_shapes(self, input_shape, 2)[0])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "cmp_dim": self.cmp_dim,
                "activation": activations.serialize(self.activation),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "use_tanh": self.use_tanh,
            }
        )
        return config
