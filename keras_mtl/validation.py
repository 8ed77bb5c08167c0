"""Argument checks that raise `ValueError` naming the argument and the value."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return value


def positive_int_list(name: str, value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"`{name}` must be a non-empty list of positive integers. "
            f"Received: {name}={value!r}"
        )
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
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


def in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (ok_low and ok_high)
    ):
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        raise ValueError(
            f"`{name}` must be a number in {lo}{low}, {high}{hi}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


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
