"""PyTorch: `torch.autograd.grad` and `torch.compile`."""

from __future__ import annotations

from typing import Any

import keras
import torch

from keras_mtl_conformance import harness


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    return harness.vjp(
        value_and_gradients, layer, case, inputs, float_idx, cotangents, False
    )


def compiled_call(layer, case, inputs) -> Any:
    def run(*args):
        return harness.call(layer, case, list(args))

    compiled = torch.compile(run, fullgraph=False, dynamic=False)
    with torch.no_grad():
        return compiled(*inputs)


def value_and_gradients(fn, args, compiled=False) -> tuple[float, list]:
    # On Keras's device (a GPU where there is one), as the layer's variables.
    tensors = [
        keras.ops.convert_to_tensor(a).detach().clone().requires_grad_(True)
        for a in args
    ]
    value = (torch.compile(fn) if compiled else fn)(*tensors)
    grads = torch.autograd.grad(value, tensors, allow_unused=True)
    grads = [
        torch.zeros_like(t) if g is None else g
        for t, g in zip(tensors, grads, strict=True)
    ]
    return float(value.detach()), [g.detach().cpu().numpy() for g in grads]
