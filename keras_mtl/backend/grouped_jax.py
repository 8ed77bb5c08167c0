"""JAX's grouped matmul, `jax.lax.ragged_dot` (see `grouped`)."""

from __future__ import annotations

from typing import Any

import jax


def is_fast(x: Any, kernel_shape: tuple[int, ...]) -> bool:
    # XLA's CPU ragged_dot is a slow loop; GPU and TPU have real kernels.
    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def grouped_matmul(x: Any, kernel: Any, sizes: Any) -> Any:
    return jax.lax.ragged_dot(x, kernel, jax.numpy.asarray(sizes, "int32"))
