"""Argument checks that raise `ValueError` naming the argument and the value."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable
from typing import Any


def _is_int(value: Any) -> bool:
    # NumPy integers count (they are `numbers.Integral`); booleans do not.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def optional_positive_int(name: str, value: Any) -> int | None:
    """`None` (the layer picks the value) or a positive int."""
    return None if value is None else positive_int(name, value)


def positive_int_list(name: str, value: Any) -> list[int]:
    if _is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"`{name}` must be a non-empty list of positive integers. "
            f"Received: {name}={value!r}"
        )
    for v in value:
        if not _is_int(v) or v <= 0:
            raise ValueError(
                f"`{name}` must be a non-empty list of positive integers. "
                f"Received: {name}={value!r}"
            )
    return [int(v) for v in value]


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(
            f"`{name}` must be one of {allowed}. Received: {name}={value!r}"
        )
    return value


def choice(
    layer: str, name: str, value: Any, allowed: Iterable[Any], aliases: dict
) -> Any:
    """`one_of`, where a deprecated spelling (a key of `aliases`) is
    accepted with a `DeprecationWarning` and replaced by the current one."""
    if isinstance(value, str) and value in aliases:
        new = aliases[value]
        warnings.warn(
            f"`{layer}({name}={value!r})` is deprecated: use {name}={new!r}, "
            "which means the same.",
            DeprecationWarning,
            stacklevel=3,
        )
        value = new
    return one_of(name, value, allowed)


def renamed(
    layer: str, kwargs: dict[str, Any], old: str, new: str, value: Any, default: Any
) -> Any:
    """The value of argument `new`, taken from the deprecated spelling `old`
    when `kwargs` holds it (removed from `kwargs`, with a
    `DeprecationWarning`), so configs saved with the old name still load."""
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    if value is not default and value != default:
        raise ValueError(
            f"`{layer}` takes `{new}` or its deprecated name `{old}`, not both. "
            f"Received: {new}={value!r}, {old}={old_value!r}"
        )
    warnings.warn(
        f"`{layer}({old}=...)` is deprecated: use `{new}`, which means the same.",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """A finite number in the interval; NaN and infinities are refused even
    where a bound is infinite."""
    finite = _finite_number(value)
    ok_low = finite and (value >= low if low_inclusive else value > low)
    ok_high = finite and (value <= high if high_inclusive else value < high)
    if not (ok_low and ok_high):
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        raise ValueError(
            f"`{name}` must be a finite number in {lo}{low}, {high}{hi}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def boolean(name: str, value: Any) -> bool:
    """`True` or `False` only: `2`, `"yes"`, `None` or `numpy.bool_(1)` are not
    silently read as truth values."""
    if value is True or value is False:
        return value
    raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")


def int_in_range(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An int (not a bool) in `[low, high]` (`high=None`: no upper bound)."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        upper = "" if high is None else f", <= {high}"
        raise ValueError(
            f"`{name}` must be an integer >= {low}{upper}. Received: {name}={value!r}"
        )
    return int(value)


def positive_int_or_list(name: str, value: Any, allow_empty: bool = False) -> list[int]:
    """The one rule for "int or list of int": an int means a list of one;
    an empty list only where the layer gives it a meaning (`allow_empty`)."""
    if _is_int(value):
        value = [value]
    if isinstance(value, (list, tuple)) and not value and allow_empty:
        return []
    return positive_int_list(name, value)


def _keras_object(getter: Any, name: str, value: Any, expected: str) -> Any:
    """`getter(value)`, with a `ValueError` naming the argument and what it takes."""
    try:
        return getter(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{name}` must be {expected}. Received: {name}={value!r} ({error})"
        ) from None


def initializer(name: str, value: Any) -> Any:
    """`keras.initializers.get`, with a `ValueError` naming the argument."""
    import keras

    return _keras_object(
        keras.initializers.get,
        name,
        value,
        "a Keras initializer, its name or its config",
    )


def regularizer(name: str, value: Any) -> Any:
    """`keras.regularizers.get` (`None` allowed), with a `ValueError` naming
    the argument."""
    import keras

    return _keras_object(
        keras.regularizers.get,
        name,
        value,
        "a Keras regularizer, its name, its config or None",
    )


def as_list(inputs: Any) -> list[Any]:
    """Lists and tuples (functional models may deliver either) become lists."""
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    return [inputs]


def _finite_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
    )


def positive_float(name: str, value: Any) -> float:
    if not _finite_number(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={value!r}"
        )
    return float(value)


def non_negative_float(name: str, value: Any) -> float:
    if not _finite_number(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: {name}={value!r}"
        )
    return float(value)


def last_dim(layer: Any, what: str, shape: Any, expected: int | None) -> None:
    """Call-time check of a feature size against the one the layer was built
    with: `ValueError` naming the layer, the input, the expected size and the
    received shape (instead of a backend's matmul error)."""
    if expected is not None and len(tuple(shape)):
        axis_size(layer, what, shape, -1, expected, f"a last dimension of {expected}")


def axis_size(
    layer: Any, what: str, shape: Any, axis: int, expected: int, described: str
) -> None:
    """Call-time check of `shape[axis]` against the size the layer was built
    with; `described` says that size in the error (unknown sizes pass)."""
    received = tuple(shape)[axis]
    if received is not None and received != expected:
        raise ValueError(
            f"`{type(layer).__name__}` (layer '{layer.name}') expects {what} "
            f"with {described}, as it was built with. "
            f"Received: {what} of shape {tuple(shape)}"
        )


def shapes_of(input_shape: Any) -> list[tuple]:
    """`build`'s `input_shape` as a list of shape tuples: Keras passes one
    shape for a single tensor and a list of shapes for a list of tensors."""
    if all(d is None or isinstance(d, int) for d in input_shape):
        return [tuple(input_shape)]
    return [tuple(s) for s in input_shape]


def input_count(layer: Any, inputs: Any, expected: int | tuple[int, ...]) -> list:
    """Call-time check of the number of tensors in a list input."""
    items = as_list(inputs)
    counts = (expected,) if isinstance(expected, int) else tuple(expected)
    if len(items) not in counts:
        wanted = " or ".join(str(c) for c in counts)
        raise ValueError(
            f"`{type(layer).__name__}` (layer '{layer.name}') expects a list of "
            f"{wanted} tensors. Received: {len(items)} tensor(s)"
        )
    return items


def seed(name: str, value: Any) -> int | None:
    """A random seed: `None` or an int (not a bool) >= 0."""
    if value is None:
        return None
    return int_in_range(name, value, 0)


def compatible_shapes(a: Any, b: Any) -> bool:
    """Same rank and equal sizes wherever both are known (`None` matches any)."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b, strict=True)
    )


def one_shape(layer: Any, what: str, shapes: list) -> None:
    """Call-time check that the (non-empty) `shapes` of a list input agree,
    unknown sizes matching any; `what` says what the layer expects."""
    first = tuple(shapes[0])
    for i, shape in enumerate(shapes[1:], start=1):
        if not compatible_shapes(first, shape):
            raise ValueError(
                f"`{type(layer).__name__}` (layer '{layer.name}') expects {what}. "
                f"Received: shape {first} at index 0 and {tuple(shape)} at index {i}"
            )


def same_shape(layer: Any, what: str, shape: Any, expected: Any) -> None:
    """Call-time check that `what` has the shape `expected` (unknown
    dimensions on either side match anything)."""
    shape, expected = tuple(shape), tuple(expected)
    if not compatible_shapes(shape, expected):
        raise ValueError(
            f"`{type(layer).__name__}` (layer '{layer.name}') expects {what} of "
            f"shape {expected}. Received: {what} of shape {shape}"
        )


def float_tensor(x: Any, dtype: str) -> Any:
    """Integer and boolean inputs cast to the compute dtype `dtype`, so they
    behave alike on every backend (Keras casts only floating inputs)."""
    import keras
    from keras import ops

    if keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
        return x
    return ops.cast(x, dtype)
