"""Layer normalization over the last axis with the reference library's epsilon."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import validation
from keras_mtl.layers.core.dense import InitializerLike
from keras_mtl.layers.core.dense import RegularizerLike


@keras.saving.register_keras_serializable(package="keras_mtl")
class LayerNorm(keras.layers.Layer):
    """Layer normalization over the last axis (Ba et al., 2016).

    `y = (x - mean(x)) / sqrt(var(x) + epsilon) * gamma + beta`, with the
    population variance over the last axis and `epsilon = 1e-6` by default
    (Keras's `LayerNormalization` defaults to 1e-3).

    Args:
        initializer: initializer for `gamma`: a Keras initializer, its name or
            its config; `None` means ones. Defaults to `None`.
        regularizer: regularizer for `gamma` and `beta`: a Keras regularizer,
            its name, its config or `None`. Defaults to `None`.
        epsilon: finite float > 0. Added to the variance. Defaults to `1e-6`.
        **kwargs: Args to pass to the base class.

    Input shape: `(batch, ..., features)`, with the `features` the layer was
    built with (else a `ValueError`). Integer inputs are cast to the compute
    dtype first. Output shape: same.

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
        initializer: InitializerLike = None,
        regularizer: RegularizerLike = None,
        epsilon: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Passed args.
        self.initializer = validation.initializer(
            "initializer", "ones" if initializer is None else initializer
        )
        self.regularizer = validation.regularizer("regularizer", regularizer)
        self.epsilon = validation.positive_float("epsilon", epsilon)
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
        validation.last_dim(self, "inputs", inputs.shape, self.gamma.shape[0])
        inputs = ops.cast(inputs, self.compute_dtype)
        # Statistics in float32 at least: float16 variances underflow.
        dtype = inputs.dtype
        x = ops.cast(inputs, "float32") if self.compute_dtype == "float16" else inputs
        mean = ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        normalized = (x - mean) * ops.rsqrt(variance + self.epsilon)
        return ops.cast(normalized, dtype) * self.gamma + self.beta

    def compute_output_shape(self, input_shape: Any) -> Any:
        if self.built:  # Symbolic calls run this, not `call`.
            validation.last_dim(self, "inputs", input_shape, self.gamma.shape[0])
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
