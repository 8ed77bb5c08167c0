"""PyTorch: `torch.autograd.grad` and `torch.compile`."""

from __future__ import annotations

from typing import Any

import keras
import torch

from keras_mtl_conformance import harness


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    tv = [
        v.value.detach().clone().requires_grad_(True) for v in layer.trainable_variables
    ]
    ntv = [v.value.detach().clone() for v in layer.non_trainable_variables]
    args = list(inputs)
    float_inputs = []
    for i in float_idx:
        args[i] = args[i].detach().clone().requires_grad_(True)
        float_inputs.append(args[i])
    first, kwargs = harness.call_args(layer, case, args)
    outputs, _, losses = layer.stateless_call(
        tv, ntv, first, return_losses=True, **kwargs
    )
    flat = harness.flatten(outputs)
    device = flat[0].device
    total = sum(
        torch.sum(o.float() * torch.as_tensor(c, device=device))
        for o, c in zip(flat, cotangents, strict=True)
    )
    total = total + sum(losses)
    grads = torch.autograd.grad(total, float_inputs + tv, allow_unused=True)
    grads = [
        torch.zeros_like(t) if g is None else g
        for t, g in zip(float_inputs + tv, grads, strict=True)
    ]
    as_np = [g.detach().cpu().numpy() for g in grads]
    return as_np[: len(float_inputs)], as_np[len(float_inputs) :]


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
