"""`x @ W + b` as one fused kernel on torch; `keras.ops` elsewhere.

`keras.ops` has no fused matmul-plus-bias, so `ops.matmul(x, w) + b` is two
kernels on torch: the add reads and writes the whole product again, and under
`torch.compile` on CPU Inductor's code for that epilogue (add, activation,
and in the backward the bias gradient, a reduction over the rows) made the
stacked expert MLPs about 1.5x slower than eager. torch's `addmm` / `baddbmm`
add the bias inside the BLAS call and reduce its gradient in the matmul's
backward. XLA (JAX, TensorFlow) fuses the add itself, so those backends keep
`keras.ops`. Both paths compute the same values (the conformance specs of
`MMoE` and `SparseMoE` run through whichever one the backend takes).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _torch() -> bool:
    return keras.backend.backend() == "torch"


def affine(x: Any, kernel: Any, bias: Any = None) -> Any:
    """`x @ kernel + bias` for `x` `[N, in]`, `kernel` `[in, out]`, `bias` `[out]`."""
    if bias is None:
        return ops.matmul(x, kernel)
    if _torch() and len(x.shape) == 2:
        import torch

        return torch.addmm(
            ops.convert_to_tensor(bias),
            ops.convert_to_tensor(x),
            ops.convert_to_tensor(kernel),
        )
    return ops.matmul(x, kernel) + bias


def batched_affine(x: Any, kernel: Any, bias: Any = None) -> Any:
    """`x[e] @ kernel[e] + bias[e]`: `[E, N, in]`, `[E, in, out]`, `[E, out]`."""
    if bias is None:
        return ops.matmul(x, kernel)
    if _torch():
        import torch

        return torch.baddbmm(
            ops.expand_dims(ops.convert_to_tensor(bias), 1),
            ops.convert_to_tensor(x),
            ops.convert_to_tensor(kernel),
        )
    return ops.matmul(x, kernel) + ops.expand_dims(bias, 1)
