"""Dense layer with optional weight normalization and a ReLU activity monitor."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class Dense(keras.layers.Layer):
    """Densely connected layer with optional weight normalization.

    `y = activation(x @ K + b)` over the last axis, where the effective kernel
    `K` is the raw kernel `W` or, with `allow_kernel_norm=True`, its weight
    normalization (Salimans & Kingma, 2016):

    `K[:, j] = g[j] * W[:, j] / sqrt(max(sum_i W[i, j]^2, 1e-6))`

    `g` (weight `kernel_norm`) starts at the column norms of the initial `W`,
    so a freshly built layer computes exactly what a plain Dense with `W`
    would. It is trained when `kernel_norm_trainable=True` and frozen
    otherwise. `K` is recomputed from the variables on every call.

    With `inactive_relu_monitor=True` (ReLU only) the non-trainable weight
    `inactive_relu_moving_avg` tracks, per unit, an exponential moving average
    of the fraction of examples for which the unit is inactive (output 0):
    `m <- (1 - decay) * m + decay * mean_batch(y[..., j] == 0)`, updated only
    when `training=True`.

    Args:
        units: int. Output dimension.
        activation: activation name (see `keras_mtl.activations`), callable or
            `None` (linear). Defaults to `None`.
        use_bias: bool. Whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer for `W`. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for `b`. Defaults to `"zeros"`.
        kernel_regularizer: regularizer applied to the raw `W`. Defaults to
            `None`.
        bias_regularizer: regularizer for `b`. Defaults to `None`.
        allow_kernel_norm: bool. Use weight normalization. Defaults to `False`.
        kernel_norm_trainable: bool. Whether `g` is trainable. Defaults to
            `False`.
        inactive_relu_monitor: bool. Track inactive ReLU units (requires the
            `relu` activation). Defaults to `False`.
        inactive_relu_monitor_decay: float in (0, 1]. Moving-average rate.
            Defaults to `0.1`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, ..., input_dim)`.
    Output shape: `(batch, ..., units)`.

    Weights: `kernel` `(input_dim, units)`; `kernel_norm` `(units,)` when
    `allow_kernel_norm`; `bias` `(units,)` when `use_bias`;
    `inactive_relu_moving_avg` `(units,)` (non-trainable) with the monitor.

    Example:

    ```python
    layer = keras_mtl.layers.Dense(4, activation="relu", allow_kernel_norm=True,
                                   kernel_norm_trainable=True)
    y = layer(np.random.rand(8, 16))  # (8, 4)
    ```

    References:
        - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868)
    """

    def __init__(
        self,
        units: int,
        activation: activations.ActivationLike = None,
        use_bias: bool = True,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
        bias_regularizer: str | keras.regularizers.Regularizer | None = None,
        allow_kernel_norm: bool = False,
        kernel_norm_trainable: bool = False,
        inactive_relu_monitor: bool = False,
        inactive_relu_monitor_decay: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.units = validation.positive_int("units", units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or "glorot_uniform"
        )
        self.bias_initializer = keras.initializers.get(bias_initializer or "zeros")
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.allow_kernel_norm = bool(allow_kernel_norm)
        self.kernel_norm_trainable = bool(kernel_norm_trainable)
        self.inactive_relu_monitor = bool(inactive_relu_monitor)
        self.inactive_relu_monitor_decay = validation.in_range(
            "inactive_relu_monitor_decay",
            inactive_relu_monitor_decay,
            0.0,
            1.0,
            low_inclusive=False,
        )
        if self.inactive_relu_monitor and activations.name_of(self.activation) != (
            "relu"
        ):
            raise ValueError(
                "`inactive_relu_monitor=True` requires `activation='relu'`. "
                f"Received: activation={activation!r}"
            )
        # Other args.
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "`Dense` needs a static last input dimension. "
                f"Received: input_shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.allow_kernel_norm:
            self.kernel_norm = self.add_weight(
                name="kernel_norm",
                shape=(self.units,),
                initializer=numerics.column_norm_initializer(self.kernel),
                trainable=self.kernel_norm_trainable,
            )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        if self.inactive_relu_monitor:
            self.inactive_relu_moving_avg = self.add_weight(
                name="inactive_relu_moving_avg",
                shape=(self.units,),
                initializer="zeros",
                trainable=False,
            )

    def effective_kernel(self) -> Any:
        """The kernel used in the matmul (weight-normalized when enabled)."""
        if not self.allow_kernel_norm:
            return self.kernel
        return numerics.weight_norm(self.kernel, self.kernel_norm)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        outputs = ops.matmul(inputs, self.effective_kernel())
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        if self.inactive_relu_monitor and training:
            self._update_monitor(outputs)
        return outputs

    def _update_monitor(self, outputs: Any) -> None:
        axes = tuple(range(len(outputs.shape) - 1))
        inactive = ops.mean(ops.cast(outputs <= 0, "float32"), axis=axes)
        decay = self.inactive_relu_monitor_decay
        moving = self.inactive_relu_moving_avg
        moving.assign(
            (1.0 - decay) * moving.value + decay * ops.cast(inactive, moving.dtype)
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "allow_kernel_norm": self.allow_kernel_norm,
                "kernel_norm_trainable": self.kernel_norm_trainable,
                "inactive_relu_monitor": self.inactive_relu_monitor,
                "inactive_relu_monitor_decay": self.inactive_relu_monitor_decay,
            }
        )
        return config
