"""Stacked expert MLPs: the one routine every mixture-of-experts layer runs.

Expert `e` of layer `i` owns the slice `kernel_i[e]` (`[in, out]`) of a
stacked `[E, in, out]` kernel and `bias_i[e]` of a `[E, out]` bias. Rows
arrive in one of two layouts:

- expert-major `[E, M, in]` (capacity buffers, `MMoE`'s dense experts): one
  batched matmul per layer (`backend.affine.batched_affine`);
- sorted by expert `[M, in]` with a `routing.GroupedRows` (the grouped
  dispatcher): one grouped matmul per layer (`backend.grouped`), the bias
  gathered per row.

`SparseMoE`, `HierarchicalMoE` (its `X * Y` experts flattened) and
`StackedMLP` (expert-major, kernels from its weight-normalized sub-layers)
all go through `mlp`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from keras import ops

from keras_mtl.backend import grouped
from keras_mtl.backend.affine import batched_affine


def affine(h: Any, kernel: Any, bias: Any | None, rows: Any | None = None) -> Any:
    """`h[e] @ kernel[e] + bias[e]` (expert-major) or, with `rows`, each row
    times its expert's kernel plus its expert's bias."""
    if rows is None:
        return batched_affine(h, kernel, bias)
    y = grouped.grouped_matmul(h, kernel, rows)
    if bias is not None:
        # Row expert `E` (rows of no expert) reads an appended zero row.
        bias = ops.concatenate([bias, ops.zeros_like(bias[:1])], axis=0)
        y = y + ops.take(bias, rows.row_expert, axis=0)
    return y


def mlp(
    h: Any,
    kernels: Sequence[Any],
    biases: Sequence[Any | None] | None,
    activations: Sequence[Callable[[Any], Any] | None],
    rows: Any | None = None,
) -> Any:
    """Runs the stacked layers on `h`, casting weights to `h`'s dtype.

    `activations[i]` follows layer `i` (`None`: linear); `biases` may be
    `None` or hold `None` for layers without bias.
    """
    for i, kernel in enumerate(kernels):
        bias = biases[i] if biases else None
        if bias is not None:
            bias = ops.cast(bias, h.dtype)
        h = affine(h, ops.cast(kernel, h.dtype), bias, rows)
        if activations[i] is not None:
            h = activations[i](h)
    return h


def hidden_activations(
    activation: Callable[[Any], Any] | None, num_layers: int
) -> list[Callable[[Any], Any] | None]:
    """`activation` after every layer but the last, which stays linear."""
    return [activation] * (num_layers - 1) + [None]
