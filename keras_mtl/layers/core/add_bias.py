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
        initializer: initializer for the bias: a Keras initializer, its name
            or its config; `None` means zeros. Defaults to `None`.
        regularizer: regularizer for the bias: a Keras regularizer, its name,
            its config or `None`. Defaults to `None`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `"channels_last"`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, ..., channels)` or `(batch, channels, ...)`, rank >= 2,
    with the number of channels the layer was built with (else a
    `ValueError`). Integer inputs are cast to the compute dtype first.
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
        self.initializer = validation.initializer(
            "initializer", "zeros" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
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

    def _check_shape(self, shape: Any) -> None:
        channels = self.bias.shape[0]
        if self.data_format == "channels_last" or len(shape) == 2:
            validation.last_dim(self, "inputs", shape, channels)
        else:
            # A mismatch would broadcast or fail inside the backend's add.
            described = f"{channels} channels on axis 1 (channels_first)"
            validation.axis_size(self, "inputs", shape, 1, channels, described)

    def call(self, inputs: Any) -> Any:
        self._check_shape(inputs.shape)
        inputs = ops.cast(inputs, self.compute_dtype)
        rank = len(inputs.shape)
        if self.data_format == "channels_last" or rank == 2:
            return inputs + self.bias
        shape = [1, -1] + [1] * (rank - 2)
        return inputs + ops.reshape(self.bias, shape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        if self.built:  # Symbolic calls run this, not `call`.
            self._check_shape(input_shape)
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
