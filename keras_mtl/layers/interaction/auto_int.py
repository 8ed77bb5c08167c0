"""AutoInt: self-attention over feature fields."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_mtl import merge
from keras_mtl import validation
from keras_mtl.layers.interaction._shapes import merged_output_shape


@keras.saving.register_keras_serializable(package="keras_mtl")
class AutoInt(keras.layers.Layer):
    """Self-attention over the fields of `X` `(batch, F, D)` (AutoInt).

    By default (the reference library's form) the layer has **no weights**:
    each of the `layer_num` layers computes

    `A = softmax(X Xᵀ, axis=-1)` `(F, F)` and `X <- A X`.

    The AutoInt paper's interacting layer is available through options:
    `attention_units=a` adds per-layer query/key/value projections with
    `head_num` heads of width `a` (contiguous column blocks):
    `Q = X W_q`, `K = X W_k`, `V = X W_v`, head `h` computes
    `softmax(Q_h K_hᵀ [/ sqrt(a)]) V_h` and the heads are concatenated
    (width `a * head_num`). `use_residual=True` adds `X W_res` (or `X` itself
    without projections), `use_relu=True` applies a ReLU to the result and
    `scaling=True` divides the logits by `sqrt(a)` (`sqrt(D)` without
    projections).

    The result is merged with `merge_tensor_list(X, out_type, keep_list)`:
    `"concat"` `(batch, F * D')`, `"stack"` `(batch, F, D')`, `None` a list
    of `F` tensors `(batch, D')`, where `D' = a * head_num` with projections
    and `D` otherwise.

    Args:
        layer_num: positive int. Number of attention layers. Defaults to `1`.
        out_type: `"concat"`, `"stack"` or `None`. Defaults to `"concat"`.
        keep_list: bool. Wrap a tensor output in a list. Defaults to `False`.
        attention_units: positive int or `None`. Per-head projection width;
            `None` means the parameter-free form. Defaults to `None`.
        head_num: positive int. Number of heads (more than one needs
            `attention_units`). Defaults to `1`.
        use_residual: bool. Add the (projected) input. Defaults to `False`.
        use_relu: bool. Apply a ReLU after each layer. Defaults to `False`.
        scaling: bool. Scale the attention logits by `1 / sqrt(width)`.
            Defaults to `False`.
        initializer: initializer of the projections (a Keras initializer,
            its name or its config; `None` means `"glorot_uniform"`).
            Defaults to `"glorot_uniform"`.
        regularizer: regularizer of the projections (a Keras regularizer,
            its name, its config or `None`). Defaults to `None`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, F, D)` with static `F` and `D`; integer inputs are
    cast to the compute dtype. After the first call, other `F` or `D` raise
    a `ValueError`.

    Weights (only with `attention_units`), per layer `i`: `query_kernel_{i}`,
    `key_kernel_{i}`, `value_kernel_{i}` and, with `use_residual`,
    `residual_kernel_{i}`, each `(D_in, a * head_num)` in `x @ K` layout.
    DeepCTR `InteractingLayer(att_embedding_size=a, head_num, use_res,
    scaling)` stacked `layer_num` times (with `use_relu=True`) stores exactly
    these matrices as `W_Query`, `W_key`, `W_Value`, `W_Res`.

    Example:

    ```python
    y = keras_mtl.layers.AutoInt(layer_num=2)(np.random.rand(4, 5, 8))
    # (4, 40)
    paper = keras_mtl.layers.AutoInt(attention_units=4, head_num=2,
                                     use_residual=True, use_relu=True)
    ```

    References:
        - [Song et al., 2019 (AutoInt)](https://arxiv.org/abs/1810.11921)
    """

    def __init__(
        self,
        layer_num: int = 1,
        out_type: str | None = "concat",
        keep_list: bool = False,
        attention_units: int | None = None,
        head_num: int = 1,
        use_residual: bool = False,
        use_relu: bool = False,
        scaling: bool = False,
        initializer: str | keras.initializers.Initializer | None = "glorot_uniform",
        regularizer: str | keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.layer_num = validation.positive_int("layer_num", layer_num)
        self.out_type = validation.one_of("out_type", out_type, merge.MERGE_TYPES)
        self.keep_list = validation.boolean("keep_list", keep_list)
        if attention_units is not None:
            attention_units = validation.positive_int(
                "attention_units", attention_units
            )
        self.attention_units = attention_units
        self.head_num = validation.positive_int("head_num", head_num)
        if self.head_num > 1 and attention_units is None:
            raise ValueError(
                "`head_num > 1` needs projections: set `attention_units`. "
                f"Received: head_num={head_num!r} with attention_units=None"
            )
        self.use_residual = validation.boolean("use_residual", use_residual)
        self.use_relu = validation.boolean("use_relu", use_relu)
        self.scaling = validation.boolean("scaling", scaling)
        self.initializer = validation.initializer(
            "initializer", "glorot_uniform" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        # Other args.
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def _width(self, d: int) -> int:
        if self.attention_units is None:
            return d
        return self.attention_units * self.head_num

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                "`AutoInt` expects inputs of shape (batch, fields, dim) with static "
                f"fields and dim. Received: input_shape={tuple(input_shape)}"
            )
        f, d = int(input_shape[1]), int(input_shape[2])
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={1: f, 2: d})
        self.projections: list[dict[str, Any]] = []
        if self.attention_units is None:
            return
        width = self._width(d)
        d_in = d
        for i in range(self.layer_num):
            names = ["query", "key", "value"] + (
                ["residual"] if self.use_residual else []
            )
            self.projections.append(
                {
                    n: self.add_weight(
                        name=f"{n}_kernel_{i}",
                        shape=(d_in, width),
                        initializer=self.initializer,
                        regularizer=self.regularizer,
                    )
                    for n in names
                }
            )
            d_in = width

    def _attend(self, q: Any, k: Any, v: Any, width: int) -> Any:
        logits = ops.matmul(q, ops.swapaxes(k, -1, -2))
        if self.scaling:
            logits = logits / ops.cast(math.sqrt(width), logits.dtype)
        return ops.matmul(ops.softmax(logits, axis=-1), v)

    def _split_heads(self, x: Any, f: int) -> Any:
        x = ops.reshape(x, (-1, f, self.head_num, self.attention_units))
        return ops.transpose(x, (0, 2, 1, 3))  # (B, H, F, a)

    def call(self, inputs: Any) -> Any:
        f = inputs.shape[1]
        # Integer inputs: softmax and matmul need floats on every backend.
        x = ops.cast(inputs, self.compute_dtype)
        for i in range(self.layer_num):
            if self.attention_units is None:
                out = self._attend(x, x, x, x.shape[-1])
                if self.use_residual:
                    out = out + x
            else:
                w = self.projections[i]
                q = self._split_heads(ops.matmul(x, w["query"]), f)
                k = self._split_heads(ops.matmul(x, w["key"]), f)
                v = self._split_heads(ops.matmul(x, w["value"]), f)
                heads = self._attend(q, k, v, self.attention_units)
                out = ops.reshape(
                    ops.transpose(heads, (0, 2, 1, 3)),
                    (-1, f, self.attention_units * self.head_num),
                )
                if self.use_residual:
                    out = out + ops.matmul(x, w["residual"])
            if self.use_relu:
                out = ops.relu(out)
            x = out
        return merge.merge_tensor_list(
            x, merge_type=self.out_type, keep_list=self.keep_list
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return merged_output_shape(
            input_shape[0],
            input_shape[1],
            self._width(input_shape[2]),
            self.out_type,
            self.keep_list,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "layer_num": self.layer_num,
                "out_type": self.out_type,
                "keep_list": self.keep_list,
                "attention_units": self.attention_units,
                "head_num": self.head_num,
                "use_residual": self.use_residual,
                "use_relu": self.use_relu,
                "scaling": self.scaling,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
            }
        )
        return config
