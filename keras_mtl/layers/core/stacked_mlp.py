"""`E` equally shaped MLPs evaluated together from stacked weights.

Used by `MMoE` when all experts share one architecture: expert `e` of layer
`i` owns the slice `kernel[e]` of a `[E, in, out]` kernel, and every layer is
one matmul over all experts (no Python loop over experts): the first layer a
single 2-D matmul against the experts' kernels side by side, the later ones
batched matmuls in an expert-major `[E, B, d]` layout.
"""

from __future__ import annotations

import copy
from typing import Any

import keras
from keras import ops

from keras_mtl import experts
from keras_mtl import numerics
from keras_mtl import validation
from keras_mtl.backend.affine import affine
from keras_mtl.layers.core.mlp import _resolve_activations
from keras_mtl.layers.core.mlp_options import MLPOptions


def check_expert_input(layer: Any, what: str, shape: Any, expected: int | None) -> None:
    """Call-time check of a `(batch, features)` input of a mixture-of-experts
    layer: rank 2 and the feature size it was built with (`ValueError` naming
    the layer, instead of a silent reshape or a backend's matmul error)."""
    if len(shape) != 2:
        raise ValueError(
            f"`{type(layer).__name__}` (layer '{layer.name}') expects {what} of "
            f"rank 2 (batch, features). Received: {what} of shape {tuple(shape)}"
        )
    validation.last_dim(layer, what, shape, expected)


def per_expert_initializers(initializer: Any, n: int) -> list[dict[str, Any]]:
    """Serialized copies of one initializer for `n` experts.

    A seeded initializer returns the same values on every call, which would
    make all experts identical (and their gates unable to tell them apart);
    copy `e` therefore gets the seed `seed + e`. Unseeded ones are copied
    as they are.
    """
    config = keras.initializers.serialize(
        keras.initializers.get(initializer or "glorot_uniform")
    )
    seed = config.get("config", {}).get("seed") if isinstance(config, dict) else None
    copies = []
    for e in range(n):
        item = copy.deepcopy(config)
        if isinstance(seed, int) and not isinstance(seed, bool):
            item["config"]["seed"] = seed + e
        copies.append(item)
    return copies


def _stacked_initializer(initializers: list[Any]) -> Any:
    """Initializes slice `e` of a `[E, ...]` weight with `initializers[e]`.

    Each slice is drawn with its own 2-D shape, so fan-in/fan-out (Glorot,
    He, ...) are those of one expert's kernel, as with separate `Dense`s.
    """

    def initializer(shape: tuple[int, ...], dtype: Any = None) -> Any:
        return ops.stack(
            [init(tuple(shape[1:]), dtype=dtype) for init in initializers], axis=0
        )

    return initializer


@keras.saving.register_keras_serializable(package="keras_mtl")
class StackedDense(keras.layers.Layer):
    """`E` weight-normalizable dense maps applied in one (batched) matmul.

    `y[b, e] = x[b] @ K[e] + bias[e]` (shared input `[B, in]`) or
    `y[b, e] = x[b, e] @ K[e] + bias[e]` (per-stack input `[B, E, in]`), with
    `K[e] = weight_norm(W[e], g[e])` when `allow_kernel_norm` (see `Dense`).

    Args:
        num_stacks: int. Number of stacked maps `E`.
        units: int. Output dimension of each map.
        kernel_initializers: list of `E` initializers (one per slice).
        use_bias: bool. Defaults to `True`.
        kernel_regularizer: regularizer for the stacked kernel. Defaults to
            `None`.
        bias_regularizer: regularizer for the stacked bias. Defaults to `None`.
        allow_kernel_norm: bool. Defaults to `False`.
        kernel_norm_trainable: bool. Defaults to `False`.
        shared_input: bool. Input is `[B, in]` shared by all maps (else
            `[B, E, in]`). Defaults to `True`.
        **kwargs: Args to pass to the base class.

    Weights: `kernel` `[E, in, units]`, `kernel_norm` `[E, units]`, `bias`
    `[E, units]`.
    """

    def __init__(
        self,
        num_stacks: int,
        units: int,
        kernel_initializers: list[Any],
        use_bias: bool = True,
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        allow_kernel_norm: bool = False,
        kernel_norm_trainable: bool = False,
        shared_input: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_stacks = validation.positive_int("num_stacks", num_stacks)
        self.units = validation.positive_int("units", units)
        self.kernel_initializers = [
            validation.initializer("kernel_initializers", i)
            for i in validation.as_list(kernel_initializers)
        ]
        if len(self.kernel_initializers) != self.num_stacks:
            raise ValueError(
                "`kernel_initializers` needs one entry per stack. Received: "
                f"{len(self.kernel_initializers)} initializers with "
                f"num_stacks={self.num_stacks}"
            )
        self.use_bias = validation.boolean("use_bias", use_bias)
        self.kernel_regularizer = validation.regularizer(
            "kernel_regularizer", kernel_regularizer
        )
        self.bias_regularizer = validation.regularizer(
            "bias_regularizer", bias_regularizer
        )
        self.allow_kernel_norm = validation.boolean(
            "allow_kernel_norm", allow_kernel_norm
        )
        self.kernel_norm_trainable = validation.boolean(
            "kernel_norm_trainable", kernel_norm_trainable
        )
        self.shared_input = validation.boolean("shared_input", shared_input)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.num_stacks, input_dim, self.units),
            initializer=_stacked_initializer(self.kernel_initializers),
            regularizer=self.kernel_regularizer,
        )
        if self.allow_kernel_norm:
            kernel = self.kernel
            self.kernel_norm = self.add_weight(
                name="kernel_norm",
                shape=(self.num_stacks, self.units),
                initializer=lambda shape, dtype=None: ops.cast(
                    numerics.column_norms(kernel.value), dtype
                ),
                trainable=self.kernel_norm_trainable,
            )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_stacks, self.units),
                initializer="zeros",
                regularizer=self.bias_regularizer,
            )

    def stacked_weights(self) -> tuple[Any, Any | None]:
        """`(kernel [E, in, units], bias [E, units] or None)`, the kernel
        weight-normalized when `allow_kernel_norm`."""
        kernel = self.kernel
        if self.allow_kernel_norm:
            kernel = numerics.weight_norm(kernel, self.kernel_norm)
        return kernel, self.bias if self.use_bias else None

    def call(self, inputs: Any, expert_major: bool = False) -> Any:
        """`[B, E, units]`, or `[E, B, units]` with `expert_major=True`.

        With `expert_major=True` a per-stack input is `[E, B, in]` too (a
        shared input is always `[B, in]`). Plain matmuls, no `einsum`: a
        shared input is one `[B, in] x [in, E * units]` product, later layers
        a batched `[E, B, in] x [E, in, units]` product with the batch axis
        first. With the einsums `"bi,eio->beo"` / `"bei,eio->beo"` an MMoE
        training step (B=2048, in=512, E=8, [256, 128]) took 1.3x as long on
        JAX and 1.16x on TensorFlow (CPU; bench/mmoe_results.md as of commit
        89979ec). On torch the
        bias is added inside the matmul (`keras_mtl.backend.affine`).
        """
        kernel, bias = self.stacked_weights()
        stacks, input_dim, units = kernel.shape
        if self.shared_input:
            # All stacks share the input: one [B, in] x [in, E * units] matmul.
            flat = ops.reshape(
                ops.transpose(kernel, (1, 0, 2)), (input_dim, stacks * units)
            )
            if bias is not None:
                bias = ops.reshape(bias, (stacks * units,))
            outputs = ops.reshape(affine(inputs, flat, bias), (-1, stacks, units))
            return ops.transpose(outputs, (1, 0, 2)) if expert_major else outputs
        if not expert_major:
            inputs = ops.transpose(inputs, (1, 0, 2))
        outputs = experts.affine(inputs, kernel, bias)  # [E, B, units]
        return outputs if expert_major else ops.transpose(outputs, (1, 0, 2))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], self.num_stacks, self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_stacks": self.num_stacks,
                "units": self.units,
                "kernel_initializers": [
                    keras.initializers.serialize(i) for i in self.kernel_initializers
                ],
                "use_bias": self.use_bias,
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "allow_kernel_norm": self.allow_kernel_norm,
                "kernel_norm_trainable": self.kernel_norm_trainable,
                "shared_input": self.shared_input,
            }
        )
        return config


class StackedMLP(keras.layers.Layer):
    """`E` MLPs of identical shape -> `[B, E, out]`.

    The input is `[B, in]`, shared by all MLPs (`shared_input=True`), or
    `[B, E, in]`, one slice per MLP.

    Same layer order and activation rules as `MLP` (per expert): `[BN_in] ->
    (Dense_i -> [BN_i] -> act_i) * (n - 1) -> Dense_last -> [act_last]`.
    Batch normalization is per expert and per unit: the `[B, E, d]` tensor is
    viewed as `[B, E * d]` and normalized over the batch, so its weights have
    shape `[E * d]`. `options` (an `MLPOptions`; defaults when None) sets
    the dense and batch-norm options, as `MLP`'s arguments of the same names.
    Not serialized on its own: `MMoE` rebuilds it from its config.
    """

    def __init__(
        self,
        num_stacks: int,
        output_dims: list[int],
        activations: Any,
        initializers: list[Any],
        options: MLPOptions | None = None,
        shared_input: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_stacks = validation.positive_int("num_stacks", num_stacks)
        self.shared_input = validation.boolean("shared_input", shared_input)
        self.output_dims = validation.positive_int_or_list("output_dims", output_dims)
        n = len(self.output_dims)
        self.activations = _resolve_activations(activations, n, self.dtype_policy)
        options = MLPOptions() if options is None else options
        bn = options.enable_batch_normalization
        self.batch_norm_in = options.batch_norm("batch_norm_in", self.dtype_policy)
        self.dense_layers = []
        self.batch_norms = []
        for i, units in enumerate(self.output_dims):
            self.dense_layers.append(
                StackedDense(
                    num_stacks,
                    units,
                    kernel_initializers=[
                        keras.initializers.get(
                            keras.initializers.serialize(keras.initializers.get(init))
                        )
                        for init in initializers
                    ],
                    **options.dense_kwargs(),
                    shared_input=(i == 0 and self.shared_input and not bn),
                    dtype=self.dtype_policy,
                    name=f"dense_{i}",
                )
            )
            if bn and i < n - 1:
                self.batch_norms.append(
                    options.batch_norm(f"batch_norm_{i}", self.dtype_policy)
                )

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        batch, input_dim = input_shape[0], input_shape[-1]
        e = self.num_stacks
        if self.batch_norm_in is not None:
            self.batch_norm_in.build((batch, e * input_dim))
        if self.shared_input and self.batch_norm_in is None:
            self.dense_layers[0].build((batch, input_dim))
        else:
            self.dense_layers[0].build((batch, e, input_dim))
        dim = self.output_dims[0]
        for i in range(1, len(self.dense_layers)):
            self.dense_layers[i].build((batch, e, dim))
            dim = self.output_dims[i]
        for i, bn in enumerate(self.batch_norms):
            bn.build((batch, e * self.output_dims[i]))
        for i, act in enumerate(self.activations):
            if isinstance(act, keras.layers.Layer):
                act.build((batch, e, self.output_dims[i]))

    def _per_expert_bn(self, bn: Any, x: Any, training: Any) -> Any:
        e, d = x.shape[-2], x.shape[-1]
        y = bn(ops.reshape(x, (-1, e * d)), training=training)
        return ops.reshape(y, (-1, e, d))

    def call(
        self, inputs: Any, training: bool | None = None, expert_major: bool = False
    ) -> Any:
        """`[B, E, out]`, or `[E, B, out]` with `expert_major=True`."""
        if training and inputs.shape[0] == 0:
            # An empty batch has no statistics: batch norm would store NaN.
            training = False
        if self.batch_norm_in is None and not any(
            isinstance(a, keras.layers.Layer) for a in self.activations
        ):
            # Expert-major [E, B, d] between layers: batched matmuls with no
            # transposes of the activations except after the first and last
            # layers. (Batch norm and layer activations such as PReLU, whose
            # weights are [E, d], take the [B, E, d] path below.)
            x = inputs
            if not self.shared_input:
                x = ops.transpose(x, (1, 0, 2))
            first, *rest = self.dense_layers
            x = first(x, expert_major=True)
            if self.activations[0] is not None:
                x = self.activations[0](x)
            # The later layers are the stacked-expert routine every MoE layer
            # runs (`keras_mtl.experts.mlp`), on weight-normalized kernels.
            stacked = [dense.stacked_weights() for dense in rest]
            x = experts.mlp(
                x,
                [kernel for kernel, _ in stacked],
                [bias for _, bias in stacked],
                self.activations[1:],
            )
            return x if expert_major else ops.transpose(x, (1, 0, 2))
        x = inputs
        if self.batch_norm_in is not None:
            if self.shared_input:
                x = ops.repeat(ops.expand_dims(x, 1), self.num_stacks, axis=1)
            x = self._per_expert_bn(self.batch_norm_in, x, training)
        for i, dense in enumerate(self.dense_layers):
            x = dense(x)
            if i < len(self.batch_norms):
                x = self._per_expert_bn(self.batch_norms[i], x, training)
            if self.activations[i] is not None:
                x = self.activations[i](x)
        return ops.transpose(x, (1, 0, 2)) if expert_major else x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], self.num_stacks, self.output_dims[-1])
