"""torch's grouped matmul, `torch._grouped_mm` (see `grouped`)."""

from __future__ import annotations

import functools
from typing import Any

import torch

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _aligned(width: int, dtype: Any) -> bool:
    # Row strides must be multiples of 16 bytes (torch checks it on every
    # device).
    return width * dtype.itemsize % 16 == 0


@functools.cache
def _capability_major(device: Any) -> int:
    return torch.cuda.get_device_capability(device)[0]


def is_fast(x: Any, kernel_shape: tuple[int, ...]) -> bool:
    if not hasattr(torch, "_grouped_mm") or not isinstance(x, torch.Tensor):
        return False
    dtype = x.dtype
    if dtype not in _DTYPES:
        return False
    if not (_aligned(kernel_shape[-2], dtype) and _aligned(kernel_shape[-1], dtype)):
        return False
    if dtype != torch.bfloat16 and torch.compiler.is_compiling():
        # The fake-tensor (meta) kernel that `torch.compile` traces with
        # accepts bfloat16 only (torch 2.13), though eager runs the rest.
        return False
    if x.device.type == "cpu":
        return True
    if x.device.type == "cuda":
        # One CUTLASS kernel for bfloat16 on sm90 / sm100; torch loops over
        # the groups (with a host copy of the offsets) otherwise.
        major = _capability_major(x.device)
        return dtype == torch.bfloat16 and major in (9, 10)
    return False


def grouped_matmul(x: Any, kernel: Any, sizes: Any) -> Any:
    offsets = torch.cumsum(sizes, 0, dtype=torch.int32)
    return torch._grouped_mm(x, kernel, offs=offsets)
