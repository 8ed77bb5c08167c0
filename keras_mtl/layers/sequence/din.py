"""DIN: target attention over a behaviour sequence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import validation
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike
from keras_mtl.layers.core.mlp import MLP
from keras_mtl.layers.sequence._masks import cast_and_masked
from keras_mtl.layers.sequence._masks import input_shapes

DIN_MODES = ("sum", "weight")


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
        q_shape, k_shape = input_shapes(self, input_shape, 2)
        self._check_shapes(q_shape, k_shape)
        self._key_dim = k_shape[-1]
        self.compress_tower.build((*k_shape[:2], 4 * k_shape[-1]))

    def call(self, inputs: Any, mask: Any | None = None) -> Any:
        queries, keys = validation.input_count(self, inputs, 2)
        self._check_shapes(queries.shape, keys.shape)
        validation.last_dim(self, "keys", keys.shape, self._key_dim)
        queries, keys, mask = cast_and_masked(self, queries, keys, mask)
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
        _, k_shape = input_shapes(self, input_shape, 2)
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
