"""What the mixture-of-experts layers share: the per-token shape contract."""

from __future__ import annotations

from typing import Any

import keras


class TokenMixture(keras.layers.Layer):
    """Base of the MoE layers: tokens `(..., d)` to `(..., output_dim or d)`,
    with the token mask passed through."""

    def _feature_dim(self, input_shape: Any) -> int:
        """The static feature (last) dimension `d` of `build`'s input shape."""
        if input_shape[-1] is None:
            raise ValueError(
                f"`{type(self).__name__}` needs a known feature (last) dimension. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        return int(input_shape[-1])

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*input_shape[:-1], self.output_dim or input_shape[-1])

    def compute_mask(self, inputs: Any, mask: Any | None = None) -> Any:
        return mask
