"""CAN: Co-Action Network unit (item embedding as MLP parameters)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class CAN(keras.layers.Layer):
    """Co-Action unit: the item embedding parametrizes an MLP applied to the user side.

    Inputs are `(user_emb, item_emb)`. With `u` the user embedding width, the
    item embedding `(batch, layer_num * (u * u + u))` is split, per layer `i`,
    into a weight `W_i = reshape(chunk, (u, u))` (row = input index) and a bias
    `b_i` `(u,)`. Then, starting from `h = user_emb`,

    `h <- act(h @ W_i + b_i)` for `i = 0 .. layer_num - 1`

    (the activation applies to every layer, the last one included). User
    shapes by case:

    | is_seq | is_stacked | user_emb | output |
    |---|---|---|---|
    | True | True | `(batch, F, S, u)` | summed over `S`: `(batch, F, u)` |
    | False | True | `(batch, F, u)` | `(batch, F, u)` |
    | True | False | `(batch, S, u)` | summed over `S`: `(batch, u)` |
    | False | False | `(batch, u)` | `(batch, u)` |

    Args:
        layer_num: positive int. Number of co-action layers. Defaults to `2`.
        activation: activation after every layer (a name, a serialized dict
            or a callable); `None` means linear. Defaults to `"relu"`.
        is_seq: bool. The user side carries a sequence axis `S`. Defaults
            to `False`.
        is_stacked: bool. The user side stacks `F` features. Defaults to
            `True`.
        **kwargs: Args to pass to the base class.

    Call arguments: `inputs = [user_emb, item_emb]`, exactly two tensors;
    integer inputs are cast to the compute dtype. After the first call, a
    user width `u` or an item width other than the built ones raises a
    `ValueError`.

    The layer has no weights.

    Example:

    ```python
    can = keras_mtl.layers.CAN(layer_num=2)
    y = can([np.random.rand(8, 3, 4), np.random.rand(8, 2 * (16 + 4))])
    # (8, 3, 4)
    ```

    References:
        - [Zhou et al., 2020 (CAN)](https://arxiv.org/abs/2011.05625)
    """

    def __init__(
        self,
        layer_num: int = 2,
        activation: activations.ActivationLike = "relu",
        is_seq: bool = False,
        is_stacked: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.layer_num = validation.positive_int("layer_num", layer_num)
        self.activation = activations.get_named("activation", activation)
        self.is_seq = validation.boolean("is_seq", is_seq)
        self.is_stacked = validation.boolean("is_stacked", is_stacked)
        self._act = activations.clone(
            self.activation, name="co_action", dtype=self.dtype_policy
        )
        # Widths seen by `build`, checked again in `call`.
        self._user_dim: int | None = None
        self._item_dim: int | None = None

    def _user_rank(self) -> int:
        return 2 + int(self.is_seq) + int(self.is_stacked)

    def _check(self, input_shape: Any) -> tuple[tuple, tuple]:
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "`CAN` expects a pair (user_emb, item_emb). "
                f"Received: input_shape={input_shape}"
            )
        user, item = tuple(input_shape[0]), tuple(input_shape[1])
        rank = self._user_rank()
        if len(user) != rank or user[-1] is None:
            raise ValueError(
                f"`user_emb` must have rank {rank} with a static last dimension for "
                f"is_seq={self.is_seq}, is_stacked={self.is_stacked}. "
                f"Received: user_emb shape={user}"
            )
        u = user[-1]
        width = self.layer_num * (u * u + u)
        if len(item) != 2 or item[1] != width:
            raise ValueError(
                f"`item_emb` must have shape (batch, layer_num * (u * u + u)) = "
                f"(batch, {width}) for layer_num={self.layer_num}, u={u}. "
                f"Received: item_emb shape={item}"
            )
        if user[0] is not None and item[0] is not None and user[0] != item[0]:
            raise ValueError(
                "`user_emb` and `item_emb` must have the same batch size. "
                f"Received: user_emb shape={user}, item_emb shape={item}"
            )
        return user, item

    def build(self, input_shape: Any) -> None:
        user, item = self._check(input_shape)
        self._user_dim, self._item_dim = user[-1], item[-1]
        if isinstance(self._act, keras.layers.Layer):
            self._act.build(user)

    def call(self, inputs: Any) -> Any:
        user, item = validation.input_count(self, inputs, 2)
        # Shapes are checked again: `build` runs once, later calls may differ.
        self._check((tuple(user.shape), tuple(item.shape)))
        validation.last_dim(self, "user_emb", user.shape, self._user_dim)
        validation.last_dim(self, "item_emb", item.shape, self._item_dim)
        user = ops.cast(user, self.compute_dtype)
        item = ops.cast(item, self.compute_dtype)
        u = user.shape[-1]
        h = user if self.is_seq or self.is_stacked else ops.expand_dims(user, 1)
        # Parameter views broadcast over the user axes between batch and u.
        extra = max(len(h.shape) - 3, 0)
        offset = 0
        for _ in range(self.layer_num):
            w = ops.reshape(
                item[:, offset : offset + u * u], (-1,) + (1,) * extra + (u, u)
            )
            offset += u * u
            b = ops.reshape(
                item[:, offset : offset + u], (-1,) + (1,) * (extra + 1) + (u,)
            )
            offset += u
            h = ops.matmul(h, w) + b
            if self._act is not None:
                h = self._act(h)
        if self.is_seq:
            return ops.sum(h, axis=-2)
        if not self.is_stacked:
            return ops.squeeze(h, axis=1)
        return h

    def compute_output_shape(self, input_shape: Any) -> Any:
        user, _ = self._check(input_shape)
        if self.is_seq:
            return user[:-2] + user[-1:]
        return user

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "layer_num": self.layer_num,
                "activation": activations.serialize(self.activation),
                "is_seq": self.is_seq,
                "is_stacked": self.is_stacked,
            }
        )
        return config
