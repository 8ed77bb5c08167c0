"""Dense layer with optional weight normalization and a ReLU activity monitor."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation

# What the initializer and regularizer arguments of the layers accept (a name,
# a config dict, an instance or `None`), checked by `keras_mtl.validation`.
InitializerLike = str | dict[str, Any] | keras.initializers.Initializer | None
RegularizerLike = str | dict[str, Any] | keras.regularizers.Regularizer | None


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
    when `training=True` and the batch is not empty.

    Args:
        units: positive int. Output dimension.
        activation: activation name (case-insensitive, see
            `keras_mtl.activations`), a serialized dict, a Keras layer, a
            callable or `None` (linear). A layer activation (e.g. `"prelu"`)
            is copied into the sub-layer `activation`. Defaults to `None`.
        use_bias: bool. Whether to add a bias. Defaults to `True`.
        kernel_initializer: initializer for `W`: a Keras initializer, its
            name or its config (`None` means the default). Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer for `b` (`None` means the default).
            Defaults to `"zeros"`.
        kernel_regularizer: regularizer applied to the raw `W`: a Keras
            regularizer, its name, its config or `None`. Defaults to `None`.
        bias_regularizer: regularizer for `b`. Defaults to `None`.
        allow_kernel_norm: bool. Use weight normalization. Defaults to `False`.
        kernel_norm_trainable: bool. Whether `g` is trainable. Defaults to
            `False`.
        inactive_relu_monitor: bool. Track inactive ReLU units (requires the
            `relu` activation). Defaults to `False`.
        inactive_relu_monitor_decay: finite float in (0, 1]. Moving-average
            rate. Defaults to `0.1`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction: a wrong type or value raises a
    `ValueError` naming the argument.

    Input shape: `(batch, ..., input_dim)`, with the `input_dim` the layer was
    built with. Integer inputs are cast to the compute dtype first.
    Output shape: `(batch, ..., units)`.

    Weights (all created by `build`): `kernel` `(input_dim, units)`;
    `kernel_norm` `(units,)` when `allow_kernel_norm`; `bias` `(units,)` when
    `use_bias`; `inactive_relu_moving_avg` `(units,)` (non-trainable) with the
    monitor; a layer activation's weights under `activation/`, e.g.
    `activation/alpha` `(..., units)` for `"prelu"`.

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
        kernel_initializer: InitializerLike = "glorot_uniform",
        bias_initializer: InitializerLike = "zeros",
        kernel_regularizer: RegularizerLike = None,
        bias_regularizer: RegularizerLike = None,
        allow_kernel_norm: bool = False,
        kernel_norm_trainable: bool = False,
        inactive_relu_monitor: bool = False,
        inactive_relu_monitor_decay: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.units = validation.positive_int("units", units)
        # A layer activation (PReLU) is an unshared copy with a fixed name, so
        # its weight path is `<dense>/activation/...`, and `build` creates it.
        self.activation = activations.clone(
            activations.get_named("activation", activation),
            name="activation",
            dtype=self.dtype_policy,
        )
        self.use_bias = validation.boolean("use_bias", use_bias)
        self.kernel_initializer = validation.initializer(
            "kernel_initializer",
            "glorot_uniform" if kernel_initializer is None else kernel_initializer,
        )
        self.bias_initializer = validation.initializer(
            "bias_initializer",
            "zeros" if bias_initializer is None else bias_initializer,
        )
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
        self.inactive_relu_monitor = validation.boolean(
            "inactive_relu_monitor", inactive_relu_monitor
        )
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
        if isinstance(self.activation, keras.layers.Layer):
            self.activation.build(tuple(input_shape[:-1]) + (self.units,))

    def effective_kernel(self) -> Any:
        """The kernel used in the matmul (weight-normalized when enabled)."""
        if not self.allow_kernel_norm:
            return self.kernel
        return numerics.weight_norm(self.kernel, self.kernel_norm)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        inputs = ops.cast(inputs, self.compute_dtype)
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
        updated = (1.0 - decay) * moving.value + decay * ops.cast(
            inactive, moving.dtype
        )
        # An empty batch (mean NaN) leaves the average as it is; a select, so
        # the NaN never reaches the variable.
        moving.assign(ops.where(ops.size(outputs) > 0, updated, moving.value))

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
