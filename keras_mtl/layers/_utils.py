"""Small helpers shared by the feature-interaction layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras


def clone_activation(
    activation: Callable[..., Any] | None, name: str, dtype_policy: Any
) -> Callable[..., Any] | None:
    """An unshared, renamed copy of a layer activation in the owner's dtype policy.

    Functions are returned as they are.
    """
    if isinstance(activation, keras.layers.Layer):
        config = activation.get_config()
        config["name"] = name
        config["dtype"] = dtype_policy
        return activation.__class__.from_config(config)
    return activation


def merged_output_shape(
    batch: int | None,
    fields: int,
    width: int,
    out_type: str | None,
    keep_list: bool,
) -> Any:
    """Output shape of `merge_tensor_list` on a `(batch, fields, width)` tensor."""
    if out_type == "concat":
        shape: Any = (batch, fields * width)
    elif out_type == "stack":
        shape = (batch, fields, width)
    else:
        return [(batch, width) for _ in range(fields)]
    return [shape] if keep_list else shape
