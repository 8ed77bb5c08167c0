"""Masks and input checks shared by the behaviour-sequence layers."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_mtl import numerics
from keras_mtl import validation


def sequence_mask(mask: Any, keys: Any, name: str = "mask") -> Any | None:
    """Checks a `[B, T]` sequence mask against `keys` `[B, T, ...]`; bool or None.

    Keras passes a list of masks for list inputs; the last entry (the keys')
    is used then. Numeric masks keep the positions with `mask >= 1` (the
    reference library's rule, pinned by the DIN conformance spec): `0.5` is
    padding, never a weight.
    """
    if isinstance(mask, (list, tuple)):
        mask = mask[-1]
    if mask is None:
        return None
    shape = tuple(mask.shape)
    expected = tuple(keys.shape[:2])
    if len(shape) != 2 or not validation.compatible_shapes(shape, expected):
        raise ValueError(
            f"`{name}` must have shape (batch, steps) = {expected} matching "
            f"the keys. Received: {name}.shape={shape}"
        )
    return numerics.real_mask(mask)


def input_shapes(layer: Any, input_shape: Any, expected: Any) -> list:
    """The list of input shapes, with the count checked."""
    return validation.input_count(layer, validation.shapes_of(input_shape), expected)


def zero_padded(x: Any, mask: Any | None) -> Any:
    """`x` `[B, T, ...]` with padded steps set to 0 (so NaN/inf padding stays out)."""
    if mask is None:
        return x
    m = ops.reshape(mask, tuple(ops.shape(mask)) + (1,) * (len(x.shape) - 2))
    return ops.where(m, x, ops.zeros_like(x))


def cast_and_masked(layer: Any, queries: Any, keys: Any, mask: Any) -> tuple:
    """`(queries, keys, mask)`: both inputs in the compute dtype, the bool mask
    of the keys (`sequence_mask`) and the keys' padded steps set to 0."""
    queries = ops.cast(queries, layer.compute_dtype)
    keys = ops.cast(keys, layer.compute_dtype)
    mask = sequence_mask(mask, keys)
    return queries, zero_padded(keys, mask), mask
