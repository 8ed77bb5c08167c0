"""Multi-layer perceptron built from weight-normalized `Dense` layers."""

from __future__ import annotations

from typing import Any

import keras

from keras_mtl import activations
from keras_mtl import validation
from keras_mtl.layers.dense import Dense

InitializerLike = str | keras.initializers.Initializer | None


@keras.saving.register_keras_serializable(package="keras_mtl")
class MLP(keras.layers.Layer):
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
        output_dims: list of int. Units of each `Dense` layer.
        activations: activation, list of activations, or `None`. Defaults to
            `None`.
        initializers: kernel initializer, or a list (padded with `None`, which
            means `"glorot_uniform"`). Defaults to `None`.
        kernel_regularizer: regularizer for every kernel. Defaults to `None`.
        use_weight_norm: bool. Weight-normalize every kernel. Defaults to
            `True`.
        use_learnable_weight_norm: bool. Train the weight-norm scales.
            Defaults to `True`.
        use_bias: bool. Defaults to `True`.
        bias_regularizer: regularizer for every bias. Defaults to `None`.
        enable_batch_normalization: bool. Defaults to `False`.
        batch_normalization_momentum: float. Defaults to `0.99`.
        batch_normalization_renorm: bool. Defaults to `False`.
        batch_normalization_renorm_clipping: dict or `None`. Defaults to `None`.
        batch_normalization_renorm_momentum: float. Defaults to `0.99`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, ..., input_dim)`.
    Output shape: `(batch, ..., output_dims[-1])`.

    Weights: `dense_{i}/kernel`, `dense_{i}/kernel_norm`, `dense_{i}/bias`;
    with batch normalization `batch_norm_in/*` and `batch_norm_{i}/*`
    (`gamma`, `beta`, `moving_mean`, `moving_variance`) for hidden layers `i`.

    Example:

    ```python
    mlp = keras_mtl.layers.MLP([32, 16, 1], activations="relu")
    y = mlp(np.random.rand(8, 10))  # (8, 1), last layer linear
    ```
    """

    def __init__(
        self,
        output_dims: list[int],
        activations: activations.ActivationLike | list[Any] = None,
        initializers: InitializerLike | list[InitializerLike] = None,
        kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
        use_weight_norm: bool = True,
        use_learnable_weight_norm: bool = True,
        use_bias: bool = True,
        bias_regularizer: str | keras.regularizers.Regularizer | None = None,
        enable_batch_normalization: bool = False,
        batch_normalization_momentum: float = 0.99,
        batch_normalization_renorm: bool = False,
        batch_normalization_renorm_clipping: dict[str, float] | None = None,
        batch_normalization_renorm_momentum: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.output_dims = validation.positive_int_list("output_dims", output_dims)
        n = len(self.output_dims)
        self.activations = _resolve_activations(activations, n, self.dtype_policy)
        self.initializers = _resolve_initializers(initializers, n)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.use_weight_norm = bool(use_weight_norm)
        self.use_learnable_weight_norm = bool(use_learnable_weight_norm)
        self.use_bias = bool(use_bias)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.enable_batch_normalization = bool(enable_batch_normalization)
        self.batch_normalization_momentum = float(batch_normalization_momentum)
        self.batch_normalization_renorm = bool(batch_normalization_renorm)
        self.batch_normalization_renorm_clipping = batch_normalization_renorm_clipping
        self.batch_normalization_renorm_momentum = float(
            batch_normalization_renorm_momentum
        )
        # Sub-layers are created here so their names (weight paths) are stable.
        self.batch_norm_in = self._batch_norm("batch_norm_in")
        self.dense_layers = []
        self.batch_norms = []
        for i, units in enumerate(self.output_dims):
            self.dense_layers.append(
                Dense(
                    units,
                    activation=None,
                    use_bias=self.use_bias,
                    kernel_initializer=self.initializers[i],
                    bias_initializer="zeros",
                    kernel_regularizer=self.kernel_regularizer,
                    bias_regularizer=self.bias_regularizer,
                    allow_kernel_norm=self.use_weight_norm,
                    kernel_norm_trainable=self.use_learnable_weight_norm,
                    dtype=self.dtype_policy,
                    name=f"dense_{i}",
                )
            )
            if i < n - 1 and self.enable_batch_normalization:
                self.batch_norms.append(self._batch_norm(f"batch_norm_{i}"))
        self.supports_masking = True

    def _batch_norm(self, name: str) -> keras.layers.BatchNormalization | None:
        if not self.enable_batch_normalization:
            return None
        return keras.layers.BatchNormalization(
            momentum=self.batch_normalization_momentum,
            renorm=self.batch_normalization_renorm,
            renorm_clipping=self.batch_normalization_renorm_clipping,
            renorm_momentum=self.batch_normalization_renorm_momentum,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "`MLP` expects inputs of rank >= 2 with a static last dimension. "
                f"Received: input_shape={input_shape}"
            )
        shape = tuple(input_shape)
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
        x = inputs
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
                **serialize_mlp_options(self),
            }
        )
        return config


activations_serialize = activations.serialize

# Constructor options that layers building MLPs (MMoE experts) pass through.
MLP_OPTIONS = (
    "kernel_regularizer",
    "use_weight_norm",
    "use_learnable_weight_norm",
    "use_bias",
    "bias_regularizer",
    "enable_batch_normalization",
    "batch_normalization_momentum",
    "batch_normalization_renorm",
    "batch_normalization_renorm_clipping",
    "batch_normalization_renorm_momentum",
)


def mlp_options(layer: Any) -> dict[str, Any]:
    """`layer`'s values of `MLP_OPTIONS`, as `MLP.__init__` takes them."""
    return {name: getattr(layer, name) for name in MLP_OPTIONS}


def serialize_mlp_options(layer: Any) -> dict[str, Any]:
    """`mlp_options(layer)` with regularizers serialized, for `get_config`."""
    options = mlp_options(layer)
    for name in ("kernel_regularizer", "bias_regularizer"):
        options[name] = keras.regularizers.serialize(options[name])
    return options


def _resolve_activations(spec: Any, n: int, dtype: Any) -> list[Any]:
    """Applies the MLP activation rules; every layer gets its own instance."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ValueError(
                "`activations` given as a list must have one entry per layer. "
                f"Received: {len(spec)} activations for output_dims of length {n}"
            )
        resolved = [activations.get(a) for a in spec]
    else:
        hidden = activations.get("relu" if spec is None else spec)
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
            keras.initializers.serialize(keras.initializers.get(i))
            if i is not None
            else "glorot_uniform"
        )
        for i in items
    ]
