"""`top_k` with one tie rule on every backend: the lower index first.

`jax.lax.top_k` and `tf.math.top_k` document it ("if two elements are equal,
the lower-index element appears first"); torch's `topk` leaves the order of
tied values unspecified (on the CPU it prefers the higher index), so torch
takes a stable descending sort instead, which keeps tied entries in index
order. One kernel either way: a `keras.ops`-only rule (k rounds of max and
lowest matching index) cost about 30 more operators per call on torch.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def top_k(scores: Any, k: int) -> tuple[Any, Any]:
    """`(values, indices)` of the `k` largest entries of the last axis,
    descending; ties in index order. Indices are int32."""
    if keras.backend.backend() == "torch":
        import torch

        scores = ops.convert_to_tensor(scores)
        values, indices = torch.sort(scores, dim=-1, descending=True, stable=True)
        return values[..., :k], indices[..., :k].to(torch.int32)
    values, indices = ops.top_k(scores, k)
    return values, ops.cast(indices, "int32")
