"""A learned bias per channel."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class AddBias(keras.layers.Layer):
    """Adds a learned bias per channel.

    `y = x + b`, with `b` broadcast along the channel axis: the last axis for
    `"channels_last"`, axis 1 for `"channels_first"`.

    The reference library stored one bias per position (`input_shape[1:]`) and
    mis-handled `channels_first`; this layer keeps one bias per channel and
    transposes correctly (see `specs/add_bias/spec.yaml`, deviations).

    Args:
        initializer: initializer for the bias. `None` means zeros. Defaults to
            `None`.
        regularizer: regularizer for the bias. Defaults to `None`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `"channels_last"`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, ..., channels)` or `(batch, channels, ...)`, rank >= 2.
    Output shape: same as the input.

    Weights: `bias`, shape `(channels,)`.

    Example:

    ```python
    layer = keras_mtl.layers.AddBias(initializer="ones")
    y = layer(np.zeros((2, 3)))  # all ones
    ```
    """

    def __init__(
        self,
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        data_format: str = "channels_last",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.initializer = keras.initializers.get(initializer or "zeros")
        self.regularizer = keras.regularizers.get(regularizer)
        self.data_format = validation.one_of(
            "data_format", data_format, ["channels_last", "channels_first"]
        )
        # Other args.
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def _channel_axis(self, rank: int) -> int:
        return rank - 1 if self.data_format == "channels_last" else 1

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = input_shape[self._channel_axis(len(input_shape))]
        if channels is None:
            raise ValueError(
                "`AddBias` needs a static channel dimension. "
                f"Received: input_shape={input_shape}"
            )
        self.bias = self.add_weight(
            name="bias",
            shape=(channels,),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )

    def call(self, inputs: Any) -> Any:
        rank = len(inputs.shape)
        if self.data_format == "channels_last" or rank == 2:
            return inputs + self.bias
        shape = [1, -1] + [1] * (rank - 2)
        return inputs + ops.reshape(self.bias, shape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "data_format": self.data_format,
            }
        )
        return config
