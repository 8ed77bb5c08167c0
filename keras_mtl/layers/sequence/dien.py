"""DIEN: interest extraction and evolution over a behaviour sequence."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation
from keras_mtl.backend.gru import gru_states
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike
from keras_mtl.layers.sequence._masks import cast_and_masked
from keras_mtl.layers.sequence._masks import input_shapes
from keras_mtl.layers.sequence.agru import AGRUCell
from keras_mtl.layers.sequence.agru import dynamic_rnn_with_attention
from keras_mtl.layers.sequence.agru import static_rnn_with_attention


@keras.saving.register_keras_serializable(package="keras_mtl")
class DIEN(keras.layers.Layer):
    """Deep Interest Evolution Network: GRU interest extractor + AGRU/AUGRU.

    For queries `q` `[B, U]` and behaviour keys `k` `[B, T, E]`:

    1. Interest extractor: `h = GRU(k)` `[B, T, U]` (a Keras `GRU`,
       `reset_after=True`, zero initial state; on torch a masked sequence
       runs the same recurrence with the GRU's weights as one scan, which
       `torch.compile` traces in one graph).
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
        q_shape, k_shape = input_shapes(self, input_shape, (2, 3))[:2]
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
        queries, keys, mask = cast_and_masked(self, queries, keys, mask)
        # Keras's GRU; on torch a masked sequence runs as one traceable scan.
        states = gru_states(self.gru, keys, mask)
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
        q_shape, k_shape = input_shapes(self, input_shape, (2, 3))[:2]
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
