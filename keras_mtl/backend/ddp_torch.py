"""PyTorch data parallelism: the layers' non-trainable state across ranks.

On the torch backend every Keras variable is a `torch.nn.Parameter`,
non-trainable ones with `requires_grad=False`
(`keras/src/backend/torch/core.py`), tracked by the layer as a parameter,
not as a buffer (`keras/src/backend/torch/layer.py`). `DistributedDataParallel`
broadcasts all parameters and buffers from rank 0 once, when it is
constructed (`torch/distributed/utils.py`, `_sync_module_states`), all-reduces
the gradients of the parameters that require grad, and re-broadcasts only
buffers before each forward. The layers' statistics (`SparseMoE.expert_load`
and `dropped_fraction`, batch-norm moving statistics, `Dense`'s ReLU monitor)
are therefore left alone after the start: each rank keeps the values its own
local batches wrote. `average_across_ranks` replaces them by their mean over
the ranks, weighted by how many examples or tokens each rank's value
describes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import torch
import torch.distributed as dist


def non_trainable_weights(module: torch.nn.Module) -> list[keras.Variable]:
    """The floating-point non-trainable weights of every Keras layer in
    `module` (a `torch.nn.Module`, a DDP wrapper, or a Keras layer), each once.

    Weights only (`layer.non_trainable_weights`): seed-generator states and
    metric variables are not statistics to average.
    """
    seen: set[int] = set()
    found = []
    for sub in module.modules():
        if not isinstance(sub, keras.layers.Layer):
            continue
        for variable in sub.non_trainable_weights:
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            if keras.backend.is_float_dtype(variable.dtype):
                found.append(variable)
    return found


def average_across_ranks(
    variables: Iterable[keras.Variable],
    weight: float = 1.0,
    group: Any | None = None,
) -> None:
    """Sets each variable to `sum_r w_r v_r / sum_r w_r` over the ranks of
    `group` (default: the default process group), with one all-reduce.

    `weight` is this rank's `w_r`: the number of examples (batch
    statistics, ReLU monitor) or real tokens (`SparseMoE.expert_load`,
    `dropped_fraction`) its values were computed from in the last call.
    With those weights a per-call ratio such as `expert_load` becomes the
    ratio over the global batch, and an exponential moving average of
    per-batch means (batch-norm `moving_mean`, the ReLU monitor), started
    from the same value on every rank, becomes the moving average of the
    global batches' means, as long as every step's local batches have the
    same sizes. It is not the global value for nonlinear statistics: the
    mean of local batch variances misses the variance between the local
    means.

    Every rank must call it with the same variables, in the same order.
    """
    variables = list(variables)
    weight = float(weight)
    if not weight >= 0.0:
        raise ValueError(f"`weight` must be >= 0. Received: weight={weight}")
    if not variables:
        return
    values = [torch.as_tensor(v.value).detach() for v in variables]
    # One flat float64 buffer, the weight last: one collective, and the
    # weighted sums lose nothing before the division.
    flat = torch.cat(
        [weight * v.reshape(-1).to(torch.float64) for v in values]
        + [torch.tensor([weight], dtype=torch.float64, device=values[0].device)]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    total = flat[-1]
    if not total > 0:
        raise ValueError("`weight` is 0 on every rank: nothing to average.")
    offset = 0
    for variable, value in zip(variables, values, strict=True):
        size = value.numel()
        mean = (flat[offset : offset + size] / total).reshape(value.shape)
        variable.assign(mean.to(value.dtype))
        offset += size
