"""`take_along_axis` that the TorchScript ONNX exporter can express.

On torch, `keras.ops.take_along_axis` is `torch.take_along_dim`, for which
the TorchScript exporter has no ONNX symbolic (torch 2.13, opset 20). Where
the indices already have the input's rank, `torch.gather` computes the same
values with the same kernel and exports as ONNX `GatherElements`. Other
backends use `keras.ops.take_along_axis`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def take_along_axis(x: Any, indices: Any, axis: int) -> Any:
    """`x` gathered along `axis` at `indices` (in range, same rank as `x`,
    no larger than `x` on the other axes)."""
    if keras.backend.backend() == "torch":
        import torch

        x = ops.convert_to_tensor(x)
        indices = ops.convert_to_tensor(indices).to(torch.int64)
        return torch.gather(x, axis, indices)
    return ops.take_along_axis(x, indices, axis=axis)
