"""Sample-rate correction of logits (log-odds shift for negative sampling)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_mtl import activations
from keras_mtl import numerics
from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class LogitCorrection(keras.layers.Layer):
    """Corrects logits for the sampling rate of training examples.

    With logits `x` and sample rates `r` (same shape):

    - `sample_bias=False`: `z = x - log(r)`
    - `sample_bias=True`: `z = log(sigmoid(x)) - log(r)` (stable log-sigmoid)

    Without `r`, `z = log(sigmoid(x))` if `sample_bias` else `z = x`. Then
    `y = activation(z)`.

    Sample rates must be finite and > 0. Python numbers and NumPy arrays are
    checked when the layer is called (`ValueError`). Tensors cannot be checked
    without a device-to-host copy, so their rates are clipped to
    `[tiny, max]` of the compute dtype before the log (`tiny` the smallest
    positive normal number, 1.2e-38 in float32 and 6.1e-5 in float16): a rate
    `<= 0` gives the finite correction `-log(tiny)` (87.3 in float32) and
    `+inf` gives `-log(max)`, never an infinite or NaN output. Rates inside
    the interval are unchanged; a NaN rate stays NaN.

    Args:
        activation: activation applied to the corrected value: a name (see
            `keras_mtl.activations`), a serialized dict, a Keras layer, a
            callable or `None` (identity). A layer activation (e.g.
            `"prelu"`) is copied into the sub-layer `activation`. Defaults to
            `None`.
        sample_bias: bool. Use `log(sigmoid(x))` in place of `x`. Defaults to
            `False`.
        **kwargs: Args to pass to the base class.

    Call arguments:
        inputs: `logits` or `[logits, sample_rate]`, each of shape `(batch,)`
            or `(batch, 1)`; both must have the same shape. Integer inputs
            are cast to the compute dtype first.

    Output shape: the shape of `logits`. Weights: none, except a layer
    activation's (created by `build`, under `activation/`).

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
        self.activation = activations.clone(
            activations.get_named("activation", activation),
            name="activation",
            dtype=self.dtype_policy,
        )
        self.sample_bias = validation.boolean("sample_bias", sample_bias)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # Host values are checked before Keras turns them into tensors.
        _, sample_rate = self._split(inputs)
        if isinstance(sample_rate, (int, float, np.ndarray, np.generic)):
            rate = np.asarray(sample_rate, dtype="float64")
            bad = rate[~(np.isfinite(rate) & (rate > 0))]
            if bad.size:
                raise ValueError(
                    f"`LogitCorrection` (layer '{self.name}') expects sample rates "
                    f"that are finite and > 0. Received: sample_rate with "
                    f"{bad.size} such value(s), e.g. {float(bad[0])}"
                )
        return super().__call__(inputs, *args, **kwargs)

    def _split(self, inputs: Any) -> tuple[Any, Any | None]:
        if isinstance(inputs, (list, tuple)):
            items = validation.input_count(self, inputs, (1, 2))
            return items[0], items[1] if len(items) == 2 else None
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

    def build(self, input_shape: Any) -> None:
        if isinstance(self.activation, keras.layers.Layer):
            self.activation.build(validation.shapes_of(input_shape)[0])

    def call(self, inputs: Any) -> Any:
        logits, sample_rate = self._split(inputs)
        if sample_rate is not None:
            sample_rate = ops.convert_to_tensor(sample_rate)
        self._check_shapes(
            logits.shape, None if sample_rate is None else sample_rate.shape
        )
        logits = ops.cast(logits, self.compute_dtype)
        z = numerics.log_sigmoid(logits) if self.sample_bias else logits
        if sample_rate is not None:
            z = z - ops.log(_clip_rate(ops.cast(sample_rate, z.dtype)))
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


# (smallest positive normal, largest finite) per float dtype; NumPy has no
# bfloat16, which shares float32's exponent range.
_FLOAT_RANGE = {
    "float16": (6.103515625e-05, 65504.0),
    "bfloat16": (1.1754943508222875e-38, 3.3895313892515355e38),
    "float32": (1.1754943508222875e-38, 3.4028234663852886e38),
    "float64": (2.2250738585072014e-308, 1.7976931348623157e308),
}


def _clip_rate(rate: Any) -> Any:
    """`rate` clipped to `[tiny, max]` of its dtype, so `log(rate)` is finite
    (values in the interval, i.e. every valid rate, are unchanged)."""
    tiny, largest = _FLOAT_RANGE[keras.backend.standardize_dtype(rate.dtype)]
    return ops.clip(rate, tiny, largest)
