"""GroupInt (FFM): cross product of two groups of fields, optionally attended."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import merge
from keras_mtl import validation
from keras_mtl.layers.core.mlp import MLP
from keras_mtl.layers.interaction._shapes import merged_output_shape

INTERACTION_TYPES = ("multiply", "dot")


def _side_shape(name: str, shape: Any) -> tuple[int, int | None]:
    """(fields, dim) of one side: a list of (batch, D) or a (batch, N, D) tensor."""
    if (
        isinstance(shape, (list, tuple))
        and shape
        and isinstance(shape[0], (list, tuple))
    ):
        shapes = [tuple(s) for s in shape]
        dims = {s[-1] for s in shapes}
        if any(len(s) != 2 for s in shapes) or len(dims) != 1:
            raise ValueError(
                f"`{name}` fields must be rank-2 tensors (batch, D) sharing D. "
                f"Received: {name} shapes={shapes}"
            )
        return len(shapes), shapes[0][-1]
    shape = tuple(shape)
    if len(shape) != 3 or shape[1] is None:
        raise ValueError(
            f"`{name}` must be a list of (batch, D) tensors or a (batch, N, D) "
            f"tensor. Received: {name} shape={shape}"
        )
    return shape[1], shape[2]


def _stack(side: Any, dtype: str) -> Any:
    """One side as a `(batch, N, D)` tensor of `dtype` (fields are stacked)."""
    if isinstance(side, (list, tuple)):
        return ops.stack([ops.cast(x, dtype) for x in side], axis=1)
    return ops.cast(side, dtype)


def _shapes(side: Any) -> Any:
    """The shape of a tensor side, or the list of shapes of a list side."""
    if isinstance(side, (list, tuple)):
        return [tuple(x.shape) for x in side]
    return tuple(side.shape)


@keras.saving.register_keras_serializable(package="keras_mtl")
class GroupInt(keras.layers.Layer):
    """Group Interaction: every left field crossed with every right field.

    Inputs are a pair `(left, right)`; each side is a list of `L` (or `R`)
    field tensors `(batch, D)` sharing `D`, or a stacked tensor
    `(batch, L, D)`. Pairs are ordered left-major (`p = l * R + r`):

    - `interaction_type="dot"`: `e[b, p] = <left_l, right_r>`, width 1;
    - `interaction_type="multiply"`: `e[b, p, :] = left_l * right_r`,
      width `D`.

    With `use_attention=True` (multiply only) an `MLP` named
    `groupint_attention_mlp` with output dims `attention_units` (last `1`,
    `activation` on hidden layers, linear last layer, weight-normalized
    kernels) scores each pair, and `e[b, p, :] *= score[b, p]`. As in the
    reference there is no softmax and no sum over pairs.

    The pairs `(batch, L * R, width)` are merged with
    `merge_tensor_list(e, out_type, keep_list)`: `"concat"`
    `(batch, L * R * width)`, `"stack"` `(batch, L * R, width)`, `None` a list
    of `L * R` tensors `(batch, width)`.

    Args:
        interaction_type: `"multiply"` or `"dot"`. Defaults to `"multiply"`.
        use_attention: bool. Scale pairs by an MLP score (multiply only).
            Defaults to `False`.
        attention_units: int, non-empty list of int ending in `1`, or
            `None`; required with `use_attention` (an int `n` means `[n]`,
            so only `1`). Defaults to `None`.
        activation: hidden activation of the attention MLP (a name, a
            serialized dict, a callable or `None`). Defaults to `"relu"`.
        initializer: kernel initializer of the attention MLP (a Keras
            initializer, its name or its config); `None` means
            `"glorot_normal"`. Defaults to `None`.
        regularizer: kernel regularizer of the attention MLP (a Keras
            regularizer, its name, its config or `None`). Defaults to
            `None`.
        out_type: `"concat"`, `"stack"` or `None`. Defaults to `"concat"`.
        keep_list: bool. Wrap a tensor output in a list. Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Call arguments: `inputs = (left, right)`, exactly two sides sharing
    `D`; integer inputs are cast to the compute dtype. After the first call,
    another `D` raises a `ValueError`.

    Weights (with attention): `groupint_attention_mlp/dense_{i}/{kernel,
    kernel_norm, bias}`.

    Example:

    ```python
    left = [np.random.rand(8, 4) for _ in range(3)]
    right = [np.random.rand(8, 4) for _ in range(2)]
    y = keras_mtl.layers.GroupInt("dot")((left, right))  # (8, 6)
    ```

    References:
        - [Rendle, 2010 (Factorization Machines)](https://www.csie.ntu.edu.tw/~b97053/paper/Rendle2010FM.pdf)
    """

    def __init__(
        self,
        interaction_type: str = "multiply",
        use_attention: bool = False,
        attention_units: int | Sequence[int] | None = None,
        activation: activations.ActivationLike = "relu",
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        out_type: str | None = "concat",
        keep_list: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.interaction_type = validation.one_of(
            "interaction_type", interaction_type, INTERACTION_TYPES
        )
        self.use_attention = validation.boolean("use_attention", use_attention)
        if self.use_attention and self.interaction_type != "multiply":
            raise ValueError(
                "`use_attention=True` requires `interaction_type='multiply'`. "
                f"Received: interaction_type={interaction_type!r}"
            )
        if attention_units is not None:
            attention_units = validation.positive_int_or_list(
                "attention_units", attention_units
            )
            if attention_units[-1] != 1:
                raise ValueError(
                    "The last entry of `attention_units` must be 1. "
                    f"Received: attention_units={attention_units!r}"
                )
        elif self.use_attention:
            raise ValueError(
                "`use_attention=True` requires `attention_units`. "
                "Received: attention_units=None"
            )
        self.attention_units = attention_units
        self.activation = activations.get_named("activation", activation)
        self.initializer = validation.initializer(
            "initializer", "glorot_normal" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.out_type = validation.one_of("out_type", out_type, merge.MERGE_TYPES)
        self.keep_list = validation.boolean("keep_list", keep_list)
        # The field width seen by `build`, checked again in `call`.
        self._dim: int | None = None
        # Sub-layers are created here so their names (weight paths) are stable.
        self.attention_mlp = (
            MLP(
                self.attention_units,
                activations=activations.serialize(self.activation),
                initializers=keras.initializers.serialize(self.initializer),
                kernel_regularizer=self.regularizer,
                dtype=self.dtype_policy,
                name="groupint_attention_mlp",
            )
            if self.use_attention
            else None
        )

    def _sides(self, input_shape: Any) -> tuple[int, int, int]:
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(
                "`GroupInt` expects a pair (left_fields, right_fields). "
                f"Received: input_shape={input_shape}"
            )
        n_left, d_left = _side_shape("left_fields", input_shape[0])
        n_right, d_right = _side_shape("right_fields", input_shape[1])
        if d_left is None or d_left != d_right:
            raise ValueError(
                "Left and right fields must share a static dimension D. "
                f"Received: left D={d_left}, right D={d_right}"
            )
        return n_left, n_right, d_left

    def build(self, input_shape: Any) -> None:
        _, _, d = self._sides(input_shape)
        self._dim = d
        if self.attention_mlp is not None:
            self.attention_mlp.build((None, None, d))

    def call(self, inputs: Any) -> Any:
        sides = validation.input_count(self, inputs, 2)
        # Shapes are checked again: `build` runs once, later calls may differ.
        self._sides([_shapes(side) for side in sides])
        # (B, L, D), (B, R, D); integer fields become floats on every backend.
        left, right = (_stack(side, self.compute_dtype) for side in sides)
        validation.last_dim(self, "left_fields", left.shape, self._dim)
        n_left, n_right, d = left.shape[1], right.shape[1], left.shape[2]
        if self.interaction_type == "dot":
            pairs = ops.matmul(left, ops.transpose(right, (0, 2, 1)))  # (B, L, R)
            pairs = ops.reshape(pairs, (-1, n_left * n_right, 1))
        else:
            pairs = ops.expand_dims(left, 2) * ops.expand_dims(right, 1)
            pairs = ops.reshape(pairs, (-1, n_left * n_right, d))
            if self.attention_mlp is not None:
                pairs = pairs * self.attention_mlp(pairs)
        return merge.merge_tensor_list(
            pairs, merge_type=self.out_type, keep_list=self.keep_list
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        n_left, n_right, d = self._sides(input_shape)
        batch = _first_dim(input_shape[0])
        width = 1 if self.interaction_type == "dot" else d
        return merged_output_shape(
            batch, n_left * n_right, width, self.out_type, self.keep_list
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "interaction_type": self.interaction_type,
                "use_attention": self.use_attention,
                "attention_units": self.attention_units,
                "activation": activations.serialize(self.activation),
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "out_type": self.out_type,
                "keep_list": self.keep_list,
            }
        )
        return config


def _first_dim(shape: Any) -> int | None:
    if (
        isinstance(shape, (list, tuple))
        and shape
        and isinstance(shape[0], (list, tuple))
    ):
        return shape[0][0]
    return shape[0]


FFM = GroupInt
