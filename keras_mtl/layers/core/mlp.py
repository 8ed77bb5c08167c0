"""Multi-layer perceptron built from weight-normalized `Dense` layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import validation
from keras_mtl.layers.core.dense import Dense
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike
from keras_mtl.layers.core.mlp_options import MLPOptionAttributes
from keras_mtl.layers.core.mlp_options import MLPOptions


@keras.saving.register_keras_serializable(package="keras_mtl")
class MLP(MLPOptionAttributes, keras.layers.Layer):
    """A stack of `Dense` layers with optional batch normalization.

    Layer order: `[BN_in] -> (Dense_i -> [BN_i] -> act_i) * (n - 1) ->
    Dense_last -> [act_last]`. Batch normalization sits between each hidden
    linear map and its activation; there is none after the last `Dense`.

    Activation rules (kept from the reference library, and easy to trip on):

    - `activations=None`: ReLU on every hidden layer, **last layer linear**.
    - a single activation (not a list): that activation on every hidden layer,
      **last layer linear**.
    - a list or tuple of length `n`: used exactly, last layer included
      (entries may be `None`).

    Weight normalization is **on by default** (`use_weight_norm=True`); see
    `keras_mtl.layers.Dense` for its formula.

    Args:
        output_dims: positive int or non-empty list of positive ints. Units
            of each `Dense` layer (an int means one layer).
        activations: activation (name, serialized dict, Keras layer or
            callable), a list or tuple of one activation per layer (entries
            may be `None`), or `None`. Unknown names raise a `ValueError`.
            Defaults to `None`.
        initializers: kernel initializer (a Keras initializer, its name or
            its config), or a list of at most `len(output_dims)` of them
            (padded with `None`, which means `"glorot_uniform"`). Defaults to
            `None`.
        kernel_regularizer: regularizer for every kernel (a Keras
            regularizer, its name, its config or `None`). Defaults to `None`.
        use_weight_norm: bool. Weight-normalize every kernel. Defaults to
            `True`.
        use_learnable_weight_norm: bool. Train the weight-norm scales.
            Defaults to `True`.
        use_bias: bool. Defaults to `True`.
        bias_regularizer: regularizer for every bias. Defaults to `None`.
        enable_batch_normalization: bool. Defaults to `False`.
        batch_normalization_momentum: finite float in [0, 1]. Defaults to
            `0.99`.
        batch_normalization_renorm: bool. Defaults to `False`.
        batch_normalization_renorm_clipping: `None` or a dict with keys among
            `"rmax"`, `"rmin"`, `"dmax"` (numbers >= 0, not NaN, `rmin <=
            rmax`). Defaults to `None`.
        batch_normalization_renorm_momentum: finite float in [0, 1].
            Defaults to `0.99`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction: a wrong type or value raises a
    `ValueError` naming the argument.

    Input shape: `(batch, ..., input_dim)`, with the `input_dim` the layer was
    built with (else a `ValueError`). Integer inputs are cast to the compute
    dtype first. A batch of size 0 gives an empty output; with a static
    batch size of 0, `training=True` leaves the batch-norm moving statistics
    as they are (they would become NaN).
    Output shape: `(batch, ..., output_dims[-1])`.

    Weights (all created by `build`): `dense_{i}/kernel`,
    `dense_{i}/kernel_norm`, `dense_{i}/bias`; with batch normalization
    `batch_norm_in/*` and `batch_norm_{i}/*` (`gamma`, `beta`, `moving_mean`,
    `moving_variance`) for hidden layers `i`; layer activations' weights
    under `activation_{i}/`, e.g. `activation_{i}/alpha` for `"prelu"`.

    Example:

    ```python
    mlp = keras_mtl.layers.MLP([32, 16, 1], activations="relu")
    y = mlp(np.random.rand(8, 10))  # (8, 1), last layer linear
    ```
    """

    def __init__(
        self,
        output_dims: int | Sequence[int],
        activations: activations.ActivationLike
        | Sequence[activations.ActivationLike] = None,
        initializers: InitializerLike | Sequence[InitializerLike] = None,
        kernel_regularizer: RegularizerLike = None,
        use_weight_norm: bool = True,
        use_learnable_weight_norm: bool = True,
        use_bias: bool = True,
        bias_regularizer: RegularizerLike = None,
        enable_batch_normalization: bool = False,
        batch_normalization_momentum: float = 0.99,
        batch_normalization_renorm: bool = False,
        batch_normalization_renorm_clipping: dict[str, float] | None = None,
        batch_normalization_renorm_momentum: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.output_dims = validation.positive_int_or_list("output_dims", output_dims)
        n = len(self.output_dims)
        self.activations = _resolve_activations(activations, n, self.dtype_policy)
        self.initializers = _resolve_initializers(initializers, n)
        self.mlp_options = MLPOptions.checked(
            kernel_regularizer=kernel_regularizer,
            use_weight_norm=use_weight_norm,
            use_learnable_weight_norm=use_learnable_weight_norm,
            use_bias=use_bias,
            bias_regularizer=bias_regularizer,
            enable_batch_normalization=enable_batch_normalization,
            batch_normalization_momentum=batch_normalization_momentum,
            batch_normalization_renorm=batch_normalization_renorm,
            batch_normalization_renorm_clipping=batch_normalization_renorm_clipping,
            batch_normalization_renorm_momentum=batch_normalization_renorm_momentum,
        )
        self._input_dim: int | None = None  # Set by `build`.
        # Sub-layers are created here so their names (weight paths) are stable.
        self.batch_norm_in = self.mlp_options.batch_norm(
            "batch_norm_in", self.dtype_policy
        )
        self.dense_layers = []
        self.batch_norms = []
        for i, units in enumerate(self.output_dims):
            self.dense_layers.append(
                Dense(
                    units,
                    activation=None,
                    kernel_initializer=self.initializers[i],
                    bias_initializer="zeros",
                    **self.mlp_options.dense_kwargs(),
                    dtype=self.dtype_policy,
                    name=f"dense_{i}",
                )
            )
            if i < n - 1 and self.enable_batch_normalization:
                self.batch_norms.append(
                    self.mlp_options.batch_norm(f"batch_norm_{i}", self.dtype_policy)
                )
        self.supports_masking = True

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "`MLP` expects inputs of rank >= 2 with a static last dimension. "
                f"Received: input_shape={input_shape}"
            )
        shape = tuple(input_shape)
        self._input_dim = shape[-1]
        if self.batch_norm_in is not None:
            self.batch_norm_in.build(shape)
        for i, dense in enumerate(self.dense_layers):
            dense.build(shape)
            shape = shape[:-1] + (dense.units,)
            if i < len(self.batch_norms):
                self.batch_norms[i].build(shape)
            act = self.activations[i]
            if isinstance(act, keras.layers.Layer):
                act.build(shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        validation.last_dim(self, "inputs", inputs.shape, self._input_dim)
        if training and inputs.shape[0] == 0:
            # An empty batch has no statistics: batch norm would store NaN.
            training = False
        x = ops.cast(inputs, self.compute_dtype)
        if self.batch_norm_in is not None:
            x = self.batch_norm_in(x, training=training)
        for i, dense in enumerate(self.dense_layers):
            x = dense(x, training=training)
            if i < len(self.batch_norms):
                x = self.batch_norms[i](x, training=training)
            if self.activations[i] is not None:
                x = self.activations[i](x)
        return x

    def get_layer(self, index: int) -> Dense:
        """The `index`-th `Dense` layer."""
        return self.dense_layers[index]

    def compute_output_shape(self, input_shape: Any) -> Any:
        # Symbolic calls run this, not `call`.
        validation.last_dim(self, "inputs", input_shape, self._input_dim)
        return tuple(input_shape[:-1]) + (self.output_dims[-1],)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "output_dims": list(self.output_dims),
                "activations": [activations_serialize(a) for a in self.activations],
                "initializers": [
                    keras.initializers.serialize(i) for i in self.initializers
                ],
                **self.mlp_options.config(),
            }
        )
        return config


activations_serialize = activations.serialize


def _resolve_activations(spec: Any, n: int, dtype: Any) -> list[Any]:
    """Applies the MLP activation rules; every layer gets its own instance."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ValueError(
                "`activations` given as a list must have one entry per layer. "
                f"Received: {len(spec)} activations for output_dims of length {n}"
            )
        resolved = [activations.get_named("activations", a) for a in spec]
    else:
        hidden = activations.get_named("activations", "relu" if spec is None else spec)
        resolved = [hidden] * (n - 1) + [None]
    return [
        activations.clone(a, name=f"activation_{i}", dtype=dtype)
        for i, a in enumerate(resolved)
    ]


def _resolve_initializers(spec: Any, n: int) -> list[keras.initializers.Initializer]:
    if isinstance(spec, (list, tuple)):
        if len(spec) > n:
            raise ValueError(
                "`initializers` must not have more entries than layers. "
                f"Received: {len(spec)} initializers for {n} layers"
            )
        items = list(spec) + [None] * (n - len(spec))
    else:
        items = [spec] * n
    # Deserialize each entry separately so seeded initializers are not shared.
    return [
        keras.initializers.get(
            keras.initializers.serialize(validation.initializer("initializers", i))
            if i is not None
            else "glorot_uniform"
        )
        for i in items
    ]
