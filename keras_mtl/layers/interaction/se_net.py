"""SeNet: squeeze-and-excitation re-weighting of feature fields."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import merge
from keras_mtl import validation
from keras_mtl.layers.core.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_mtl")
class SeNet(keras.layers.Layer):
    """Squeeze-and-excitation weighting of `F` feature fields (FiBiNET-style).

    Squeeze: `s_i = mean(X_i)` over each field's embedding. Excitation:
    `w = sigmoid(relu(s @ K_0 + b_0) @ K_1 + b_1)` computed by the `MLP`
    `cmp_tower` with output dims `[cmp_dim, F]` (weight-normalized kernels with
    learnable scales, the `MLP` default); with `cmp_dim=None` there is no tower
    and `w = s` (no sigmoid). Re-weight: `Y_i = X_i * w_i`.

    Inputs are either a stacked tensor `(batch, F, D)` or a list (or tuple) of
    `F` tensors `(batch, d_i)` whose widths may differ. The result goes
    through `merge_tensor_list(Y, out_type, keep_list)`: for a stacked input
    `"concat"` gives `(batch, F * D)`, `"stack"` `(batch, F, D)`; for a list
    input `"concat"` gives `(batch, sum d_i)` and `"stack"` needs equal
    widths; `None` gives the list of fields.

    Args:
        num_feature: positive int. Number of fields `F`; must match the
            input.
        cmp_dim: positive int or `None`. Width of the compression layer;
            `None` means no excitation tower.
        initializer: kernel initializer of the tower (a Keras initializer,
            its name or its config); `None` means `"glorot_uniform"`.
            Defaults to `None`.
        regularizer: kernel regularizer of the tower (a Keras regularizer,
            its name, its config or `None`). Defaults to `None`.
        on_gpu: bool. Kept for compatibility with the reference library,
            where it picked a kernel giving identical numbers; no effect.
            Defaults to `False`.
        out_type: `"concat"`, `"stack"` or `None`. Defaults to `"concat"`.
        keep_list: bool. Wrap a tensor output in a list. Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Integer inputs are cast to the compute dtype. Every call checks the
    field count (and, for a stacked input, the rank) again.

    Weights (with `cmp_dim`): `cmp_tower/dense_0/{kernel, kernel_norm, bias}`
    `(F, cmp_dim)`, `(cmp_dim,)`, `(cmp_dim,)` and
    `cmp_tower/dense_1/{kernel, kernel_norm, bias}` `(cmp_dim, F)`, `(F,)`,
    `(F,)`. DeepCTR's `SENETLayer` uses relu on both layers and no biases, so
    it is a different function.

    Example:

    ```python
    se = keras_mtl.layers.SeNet(num_feature=4, cmp_dim=2)
    y = se(np.random.rand(8, 4, 6))  # (8, 24)
    y = keras_mtl.layers.SeNet(3, 2, out_type=None)(
        [np.random.rand(8, 2), np.random.rand(8, 5), np.random.rand(8, 1)])
    ```

    References:
        - [Hu et al., 2018 (Squeeze-and-Excitation)](https://arxiv.org/abs/1709.01507)
        - [Huang et al., 2019 (FiBiNET)](https://arxiv.org/abs/1905.09433)
    """

    def __init__(
        self,
        num_feature: int,
        cmp_dim: int | None,
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        on_gpu: bool = False,
        out_type: str | None = "concat",
        keep_list: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.num_feature = validation.positive_int("num_feature", num_feature)
        if cmp_dim is not None:
            cmp_dim = validation.positive_int("cmp_dim", cmp_dim)
        self.cmp_dim = cmp_dim
        self.initializer = validation.initializer(
            "initializer", "glorot_uniform" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.on_gpu = validation.boolean("on_gpu", on_gpu)
        self.out_type = validation.one_of("out_type", out_type, merge.MERGE_TYPES)
        self.keep_list = validation.boolean("keep_list", keep_list)
        # Sub-layers are created here so their names (weight paths) are stable.
        self.cmp_tower = (
            MLP(
                [self.cmp_dim, self.num_feature],
                activations=["relu", "sigmoid"],
                initializers=keras.initializers.serialize(self.initializer),
                kernel_regularizer=self.regularizer,
                dtype=self.dtype_policy,
                name="cmp_tower",
            )
            if self.cmp_dim is not None
            else None
        )

    def _check_shapes(self, input_shape: Any) -> list[tuple[int | None, ...]] | None:
        """Field shapes of a list input (None for a stacked tensor)."""
        is_list = isinstance(input_shape, (list, tuple)) and (
            len(input_shape) > 0 and isinstance(input_shape[0], (list, tuple))
        )
        if not is_list:
            shape = tuple(input_shape)
            if len(shape) != 3 or shape[1] != self.num_feature or shape[2] is None:
                raise ValueError(
                    f"`SeNet` (layer '{self.name}') expects a tensor (batch, "
                    "num_feature, dim) or a list of "
                    f"num_feature={self.num_feature} tensors (batch, dim_i). "
                    f"Received: input_shape={shape}"
                )
            return None
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) != self.num_feature:
            raise ValueError(
                f"`SeNet` (layer '{self.name}') expects a list of "
                f"num_feature={self.num_feature} tensors. "
                f"Received: {len(shapes)} tensors with shapes {shapes}"
            )
        for s in shapes:
            if len(s) != 2 or s[1] is None:
                raise ValueError(
                    "`SeNet` list inputs must be rank-2 tensors (batch, dim_i) with a "
                    f"static dim. Received: shapes={shapes}"
                )
        if self.out_type == "stack" and len({s[1] for s in shapes}) > 1:
            raise ValueError(
                "`out_type='stack'` needs list inputs of equal widths. "
                f"Received: out_type='stack' with shapes={shapes}"
            )
        return shapes

    def build(self, input_shape: Any) -> None:
        self._check_shapes(input_shape)
        if self.cmp_tower is not None:
            self.cmp_tower.build((None, self.num_feature))

    def call(self, inputs: Any) -> Any:
        # Shapes are checked again: `build` runs once, later calls may differ.
        if isinstance(inputs, (list, tuple)):
            self._check_shapes([tuple(x.shape) for x in inputs])
            fields = [ops.cast(x, self.compute_dtype) for x in inputs]
            squeezed = ops.concatenate(
                [ops.mean(x, axis=-1, keepdims=True) for x in fields], axis=-1
            )
        else:
            self._check_shapes(tuple(inputs.shape))
            inputs = ops.cast(inputs, self.compute_dtype)
            fields = None
            squeezed = ops.mean(inputs, axis=-1)
        weights = squeezed if self.cmp_tower is None else self.cmp_tower(squeezed)
        if fields is None:
            outputs: Any = inputs * ops.expand_dims(weights, -1)
        else:
            outputs = [x * weights[:, i : i + 1] for i, x in enumerate(fields)]
        return merge.merge_tensor_list(
            outputs,
            merge_type=self.out_type,
            num_feature=self.num_feature,
            keep_list=self.keep_list,
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        shapes = self._check_shapes(input_shape)
        if shapes is None:
            b, f, d = tuple(input_shape)
            if self.out_type == "concat":
                out: Any = (b, f * d)
            elif self.out_type == "stack":
                out = (b, f, d)
            else:
                return [(b, d) for _ in range(f)]
        else:
            b = shapes[0][0]
            if self.out_type == "concat":
                out = (b, sum(s[1] for s in shapes))
            elif self.out_type == "stack":
                out = (b, len(shapes), shapes[0][1])
            else:
                return shapes
        return [out] if self.keep_list else out

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_feature": self.num_feature,
                "cmp_dim": self.cmp_dim,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "on_gpu": self.on_gpu,
                "out_type": self.out_type,
                "keep_list": self.keep_list,
            }
        )
        return config
