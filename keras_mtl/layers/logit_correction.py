"""Sample-rate correction of logits (log-odds shift for negative sampling)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics


@keras.saving.register_keras_serializable(package="keras_mtl")
class LogitCorrection(keras.layers.Layer):
    """Corrects logits for the sampling rate of training examples.

    With logits `x` and sample rates `r` (same shape):

    - `sample_bias=False`: `z = x - log(r)`
    - `sample_bias=True`: `z = log(sigmoid(x)) - log(r)` (stable log-sigmoid)

    Without `r`, `z = log(sigmoid(x))` if `sample_bias` else `z = x`. Then
    `y = activation(z)`.

    Args:
        activation: activation applied to the corrected value. Defaults to
            `None` (identity).
        sample_bias: bool. Use `log(sigmoid(x))` in place of `x`. Defaults to
            `False`.
        **kwargs: Args to pass to the base class.

    Call arguments:
        inputs: `logits` or `[logits, sample_rate]`, each of shape `(batch,)`
            or `(batch, 1)`; both must have the same shape.

    Output shape: the shape of `logits`. No weights.

    Example:

    ```python
    layer = keras_mtl.layers.LogitCorrection()
    y = layer([np.zeros((4, 1)), np.full((4, 1), 0.5)])  # log(2)
    ```
    """

    def __init__(
        self,
        activation: activations.ActivationLike = None,
        sample_bias: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.sample_bias = bool(sample_bias)
        self.built = True

    @staticmethod
    def _split(inputs: Any) -> tuple[Any, Any | None]:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 1:
                return inputs[0], None
            if len(inputs) != 2:
                raise ValueError(
                    "`LogitCorrection` expects `logits` or `[logits, sample_rate]`. "
                    f"Received: a list of {len(inputs)} tensors"
                )
            return inputs[0], inputs[1]
        return inputs, None

    @staticmethod
    def _check_shapes(logits_shape: Any, rate_shape: Any | None) -> None:
        if len(logits_shape) > 2:
            raise ValueError(
                "`logits` must have shape (batch,) or (batch, 1). "
                f"Received: logits.shape={tuple(logits_shape)}"
            )
        if rate_shape is not None and tuple(rate_shape) != tuple(logits_shape):
            raise ValueError(
                "`logits` and `sample_rate` must have the same shape. "
                f"Received: logits.shape={tuple(logits_shape)}, "
                f"sample_rate.shape={tuple(rate_shape)}"
            )

    def call(self, inputs: Any) -> Any:
        logits, sample_rate = self._split(inputs)
        self._check_shapes(
            logits.shape, None if sample_rate is None else sample_rate.shape
        )
        z = numerics.log_sigmoid(logits) if self.sample_bias else logits
        if sample_rate is not None:
            z = z - ops.log(ops.cast(sample_rate, z.dtype))
        if self.activation is not None:
            z = self.activation(z)
        return z

    def compute_output_shape(self, input_shape: Any) -> Any:
        if all(d is None or isinstance(d, int) for d in input_shape):
            self._check_shapes(input_shape, None)
            return tuple(input_shape)
        shapes = [tuple(s) for s in input_shape]
        self._check_shapes(shapes[0], shapes[1] if len(shapes) > 1 else None)
        return shapes[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "activation": activations.serialize(self.activation),
                "sample_bias": self.sample_bias,
            }
        )
        return config
