"""Layer that applies a registry activation (e.g. `sigmoid2`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_mtl import activations
from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class Activation(keras.layers.Layer):
    """Applies an activation from `keras_mtl.activations` by name.

    Unlike `keras.layers.Activation`, names are case-insensitive, include the
    reference library's `sigmoid2` (`2 * sigmoid(x)`), `thresholdedrelu` and
    `prelu`, and round-trip through `get_config`.

    Integer and boolean inputs are cast to the layer's compute dtype first,
    so they give the same float output on every backend.

    Args:
        activation: activation name (case-insensitive, see
            `keras_mtl.activations`), a dict from `activations.serialize`, a
            Keras layer or a callable. `None` is refused (use `"linear"`).
            Unknown names raise a `ValueError`.
        **kwargs: Args to pass to the base class.

    Input shape: any. Output shape: same as the input.

    Weights: `activation/alpha` for `"prelu"` (created by `build`), else none.

    Example:

    ```python
    y = keras_mtl.layers.Activation("Sigmoid2")(np.zeros((2, 3)))  # all ones
    ```
    """

    def __init__(
        self,
        activation: str | dict[str, Any] | Callable[..., Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if activation is None:
            raise ValueError(
                "`activation` must be a name, dict or callable (use 'linear' for "
                "the identity). Received: activation=None"
            )
        # A layer activation gets a fixed name: its weight path is stable.
        self.activation = activations.clone(
            activations.get_named("activation", activation),
            name="activation",
            dtype=self.dtype_policy,
        )
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        if isinstance(self.activation, keras.layers.Layer):
            self.activation.build(input_shape)

    def _check_shape(self, shape: Any) -> None:
        if isinstance(self.activation, keras.layers.PReLU) and self.activation.built:
            # PReLU's `alpha` is per feature (unless shared over the last axis):
            # a different size would fail inside the backend's multiply.
            alpha_shape = tuple(self.activation.alpha.shape)
            if alpha_shape and alpha_shape[-1] != 1:
                validation.last_dim(self, "inputs", shape, alpha_shape[-1])

    def call(self, inputs: Any) -> Any:
        self._check_shape(inputs.shape)
        return self.activation(ops.cast(inputs, self.compute_dtype))

    def compute_output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)  # Symbolic calls run this, not `call`.
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"activation": activations.serialize(self.activation)})
        return config
