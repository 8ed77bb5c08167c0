"""Layer normalization over the last axis with the reference library's epsilon."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mtl")
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last axis (Ba et al., 2016).

    `y = (x - mean(x)) / sqrt(var(x) + epsilon) * gamma + beta`, with the
    population variance over the last axis and `epsilon = 1e-6` by default
    (Keras's `LayerNormalization` defaults to 1e-3).

    Args:
        initializer: initializer for `gamma`. `None` means ones. Defaults to
            `None`.
        regularizer: regularizer for `gamma` and `beta`. Defaults to `None`.
        epsilon: float. Added to the variance. Defaults to `1e-6`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, ..., features)`. Output shape: same.

    Weights: `gamma` and `beta`, shape `(features,)`.

    Example:

    ```python
    y = keras_mtl.layers.LayerNorm()(np.random.rand(4, 8))
    ```

    References:
        - [Ba et al., 2016](https://arxiv.org/abs/1607.06450)
    """

    def __init__(
        self,
        initializer: str | keras.initializers.Initializer | None = None,
        regularizer: str | keras.regularizers.Regularizer | None = None,
        epsilon: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.initializer = keras.initializers.get(initializer or "ones")
        self.regularizer = keras.regularizers.get(regularizer)
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon}")
        self.epsilon = float(epsilon)
        # Other args.
        self.supports_masking = True

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if not input_shape or input_shape[-1] is None:
            raise ValueError(
                "`LayerNorm` needs a static last dimension. "
                f"Received: input_shape={input_shape}"
            )
        dim = input_shape[-1]
        self.gamma = self.add_weight(
            name="gamma",
            shape=(dim,),
            initializer=self.initializer,
            regularizer=self.regularizer,
        )
        self.beta = self.add_weight(
            name="beta",
            shape=(dim,),
            initializer="zeros",
            regularizer=self.regularizer,
        )

    def call(self, inputs: Any) -> Any:
        # Statistics in float32 at least: float16 variances underflow.
        dtype = inputs.dtype
        x = ops.cast(inputs, "float32") if self.compute_dtype == "float16" else inputs
        mean = ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        normalized = (x - mean) * ops.rsqrt(variance + self.epsilon)
        return ops.cast(normalized, dtype) * self.gamma + self.beta

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "epsilon": self.epsilon,
            }
        )
        return config
