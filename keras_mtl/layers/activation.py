"""Layer that applies a registry activation (e.g. `sigmoid2`)."""

from __future__ import annotations

from typing import Any

import keras

from keras_mtl import activations


@keras.saving.register_keras_serializable(package="keras_mtl")
class Activation(keras.layers.Layer):
    """Applies an activation from `keras_mtl.activations` by name.

    Unlike `keras.layers.Activation`, names are case-insensitive, include the
    reference library's `sigmoid2` (`2 * sigmoid(x)`), `thresholdedrelu` and
    `prelu`, and round-trip through `get_config`.

    Args:
        activation: activation name, serialized dict or callable.
        **kwargs: Args to pass to the base class.

    Input shape: any. Output shape: same as the input.

    Example:

    ```python
    y = keras_mtl.layers.Activation("Sigmoid2")(np.zeros((2, 3)))  # all ones
    ```
    """

    def __init__(self, activation: activations.ActivationLike, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if activation is None:
            raise ValueError(
                "`activation` must be a name, dict or callable. Received: None"
            )
        self.activation = activations.clone(
            activations.get(activation), name="activation", dtype=self.dtype_policy
        )
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        if isinstance(self.activation, keras.layers.Layer):
            self.activation.build(input_shape)

    def call(self, inputs: Any) -> Any:
        return self.activation(inputs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"activation": activations.serialize(self.activation)})
        return config
