"""Grouped matmul: rows sorted by expert, each block times its expert's kernel.

`grouped_matmul(x, kernel, rows)` computes `y[r] = x[r] @ kernel[e_r]` for
`x` `[M, in]` whose rows are sorted by expert, `kernel` `[E, in, out]` and
`rows` a `routing.GroupedRows` (`sizes` `[E]`, `row_expert` `[M]`). Rows
past `sum(sizes)` belong to no expert: their values are undefined (torch
leaves them unwritten, JAX writes zeros) and must not be read. `keras.ops`
has no such operation; the native ones are

- torch: `torch._grouped_mm` (`grouped_torch`), on the CPU in float32,
  bfloat16 and float16, and on CUDA in bfloat16 on compute capability 9.x
  and 10.x, where it is one CUTLASS kernel. Elsewhere on CUDA torch loops
  over the groups after copying the offsets to the host (a sync per call),
  so those cases take the fallback below. Both operand row strides must be
  multiples of 16 bytes (`in` and `out` multiples of 4 in float32, of 8 in
  16-bit types); other widths take the fallback.
- JAX: `jax.lax.ragged_dot` (`grouped_jax`) on GPU and TPU. On the CPU,
  XLA's `ragged_dot` ran at 1.8 GFLOP/s on this project's 2-core machine
  (T*k = 8192 rows, 256 x 512, E = 64), against 117 GFLOP/s for the batched
  matmul of the same shape, so the CPU takes the fallback.
- TensorFlow has none: always the fallback.

The fallback, `blocked_grouped_matmul`, uses `keras.ops` only and has static
shapes: every expert's rows are padded to a multiple of a block of `b` rows,
each block is multiplied by its expert's kernel in one batched matmul
(`[nb, b, in] x [nb, in, out]`, the kernels gathered per block), and the
rows are gathered back. With `b` about `M / E` there are at most
`nb = ceil(M / b) + E <= 2E + 1` blocks, so it computes at most about twice
the rows (on average about 1.5x for balanced routing) and reads about two
copies of the kernels.

`set_implementation("native" | "blocked" | "auto")` forces one path (tests
compare them; "native" raises where the backend has none).
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import keras
from keras import ops

IMPLEMENTATIONS = ("auto", "native", "blocked")
_implementation = "auto"


def set_implementation(name: str) -> None:
    """Forces the native grouped matmul or the fallback (`"auto"`: per
    backend, device, dtype and widths, as the module docstring says)."""
    global _implementation
    if name not in IMPLEMENTATIONS:
        raise ValueError(
            f"`name` must be one of {list(IMPLEMENTATIONS)}. Received: name={name!r}"
        )
    _implementation = name


def _load_native() -> Any | None:
    backend = keras.backend.backend()
    if backend not in ("torch", "jax"):
        return None
    return importlib.import_module(f"keras_mtl.backend.grouped_{backend}")


# Looked up once: the backend is fixed when Keras is imported, and an import
# inside a call would break `torch.compile`'s graph there.
_NATIVE = _load_native()


def native_is_fast(x: Any, kernel_shape: tuple[int, ...]) -> bool:
    """Whether the native grouped matmul runs fast for `x` (its backend,
    device and dtype) and kernels of `kernel_shape` `[E, in, out]`."""
    module = _NATIVE
    return module is not None and module.is_fast(x, kernel_shape)


def grouped_matmul(x: Any, kernel: Any, rows: Any) -> Any:
    """`y[r] = x[r] @ kernel[rows.row_expert[r]]` for expert-sorted rows."""
    module = _NATIVE
    if _implementation == "native":
        if module is None:
            raise ValueError(
                "No native grouped matmul on the "
                f"{keras.backend.backend()} backend. Received: implementation "
                "'native'"
            )
        return module.grouped_matmul(x, kernel, rows.sizes)
    if (
        _implementation == "auto"
        and module is not None
        and module.is_fast(x, tuple(kernel.shape))
    ):
        return module.grouped_matmul(x, kernel, rows.sizes)
    return blocked_grouped_matmul(x, kernel, rows)


def block_size(num_rows: int | None, num_experts: int) -> int:
    """Rows per block of the fallback: about `M / E` (a power of two, at
    least 8), so that there are at most `2E + 1` blocks."""
    if num_rows is None:
        return 64
    per_expert = max(num_rows / num_experts, 1.0)
    return max(8, 2 ** round(math.log2(per_expert)))


def blocked_grouped_matmul(x: Any, kernel: Any, rows: Any) -> Any:
    """The `keras.ops` grouped matmul (see the module docstring)."""
    num_experts, _, d_out = kernel.shape
    m = x.shape[0]
    block = block_size(m, num_experts)
    m = ops.shape(x)[0] if m is None else m
    sizes = ops.cast(rows.sizes, "int32")
    padded = (sizes + (block - 1)) // block * block
    starts = ops.cumsum(sizes) - sizes
    padded_ends = ops.cumsum(padded)
    padded_starts = padded_ends - padded
    # Rows of no expert (`E`, past the kept ones) are computed here as rows
    # of the last expert: they hold zeros and nobody reads them.
    expert = ops.minimum(
        rows.row_expert, ops.zeros_like(rows.row_expert) + (num_experts - 1)
    )
    row = ops.arange(m, dtype="int32")
    # The padded row of every row, and the inverse map (0: a zero row).
    dest = ops.take(padded_starts - starts, expert, axis=0) + row
    num_blocks = -(-m // block) + num_experts
    inverse = ops.scatter_update(
        ops.zeros((num_blocks * block,), dtype="int32"),
        ops.expand_dims(dest, -1),
        row + 1,
    )
    with_zero = ops.concatenate([ops.zeros_like(x[:1]), x], axis=0)
    blocks = ops.reshape(ops.take(with_zero, inverse, axis=0), (num_blocks, block, -1))
    first_row = ops.arange(num_blocks, dtype="int32") * block
    block_expert = ops.cast(
        ops.searchsorted(padded_ends, first_row, side="right"), "int32"
    )
    # Blocks past the last expert's rows hold zeros; any kernel will do.
    block_expert = ops.minimum(
        block_expert, ops.zeros_like(block_expert) + (num_experts - 1)
    )
    out = ops.matmul(blocks, ops.take(kernel, block_expert, axis=0))
    return ops.take(ops.reshape(out, (-1, d_out)), dest, axis=0)
