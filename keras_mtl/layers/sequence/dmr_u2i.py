"""DMR_U2I: the user-to-item network of Deep Match to Rank."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike
from keras_mtl.layers.sequence._masks import cast_and_masked
from keras_mtl.layers.sequence._masks import input_shapes


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
        described = f"{steps} steps (axis 1, the length of `pos_emb`)"
        validation.axis_size(self, "user_seq", s_shape, 1, steps, described)

    def build(self, input_shape: Any) -> None:
        i_shape, s_shape = input_shapes(self, input_shape, 2)
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
        items, seq, mask = cast_and_masked(self, items, seq, mask)
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
        return tuple(input_shapes(self, input_shape, 2)[0])

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
