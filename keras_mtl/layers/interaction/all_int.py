"""AllInt: all-pairs field interaction through a compression matrix."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import merge
from keras_mtl import validation
from keras_mtl.layers.interaction._shapes import merged_output_shape


@keras.saving.register_keras_serializable(package="keras_mtl")
class AllInt(keras.layers.Layer):
    """All Interaction: every field pair interacts, compressed to `cmp_dim`.

    For fields `X` `(batch, F, D)` and a compression matrix `C` `(F, cmp_dim)`:

    `O = X Xᵀ C (+ X 1 bᵀ)`, computed as `O = X (Xᵀ C + b)` so the `(F, F)`
    matrix is never formed: `M = Xᵀ C + b` `(batch, D, cmp_dim)`, then
    `O = X M` `(batch, F, cmp_dim)`. The bias broadcasts over `D`. The result
    is merged with `merge_tensor_list(O, out_type, keep_list)`.

    Args:
        cmp_dim: positive int. Compressed dimension `C`.
        initializer: kernel initializer (a Keras initializer, its name or
            its config); `None` means `"glorot_normal"`. Defaults to `None`.
        regularizer: kernel regularizer (not the bias; a Keras regularizer,
            its name, its config or `None`). Defaults to `None`.
        use_bias: bool. Add the bias `b`. Defaults to `True`.
        out_type: `"concat"` `(batch, F * cmp_dim)`, `"stack"`
            `(batch, F, cmp_dim)` or `None` (a list of `F` tensors
            `(batch, cmp_dim)`). Defaults to `"concat"`.
        keep_list: bool. Wrap a tensor output in a list. Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, F, D)` with static `F` and `D`; integer inputs are
    cast to the compute dtype. After the first call, other `F` or `D` raise
    a `ValueError`.

    Weights: `allint_kernel` `(F, cmp_dim)` and `allint_bias` `(cmp_dim,)`.

    Example:

    ```python
    y = keras_mtl.layers.AllInt(cmp_dim=4)(np.random.rand(8, 5, 6))  # (8, 20)
    ```

    References:
        - [Rendle, 2010 (Factorization Machines)](https://www.csie.ntu.edu.tw/~b97053/paper/Rendle2010FM.pdf)
    """

    def __init__(
        self,
        cmp_dim: int,
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        use_bias: bool = True,
        out_type: str | None = "concat",
        keep_list: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.cmp_dim = validation.positive_int("cmp_dim", cmp_dim)
        self.initializer = validation.initializer(
            "initializer", "glorot_normal" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.use_bias = validation.boolean("use_bias", use_bias)
        self.out_type = validation.one_of("out_type", out_type, merge.MERGE_TYPES)
        self.keep_list = validation.boolean("keep_list", keep_list)
        # Other args.
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                "`AllInt` expects inputs of shape (batch, fields, dim) with static "
                f"fields and dim. Received: input_shape={tuple(input_shape)}"
            )
        f, d = int(input_shape[1]), int(input_shape[2])
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={1: f, 2: d})
        self.allint_kernel = self.add_weight(
            name="allint_kernel",
            shape=(f, self.cmp_dim),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        if self.use_bias:
            self.allint_bias = self.add_weight(
                name="allint_bias", shape=(self.cmp_dim,), initializer="zeros"
            )

    def call(self, inputs: Any) -> Any:
        inputs = ops.cast(inputs, self.compute_dtype)
        m = ops.matmul(ops.transpose(inputs, (0, 2, 1)), self.allint_kernel)
        if self.use_bias:
            m = m + self.allint_bias  # (B, D, C)
        outputs = ops.matmul(inputs, m)  # (B, F, C)
        return merge.merge_tensor_list(
            outputs, merge_type=self.out_type, keep_list=self.keep_list
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return merged_output_shape(
            input_shape[0], input_shape[1], self.cmp_dim, self.out_type, self.keep_list
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "cmp_dim": self.cmp_dim,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "use_bias": self.use_bias,
                "out_type": self.out_type,
                "keep_list": self.keep_list,
            }
        )
        return config
