"""Small helpers shared by the feature-interaction layers."""

from __future__ import annotations

from typing import Any


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
