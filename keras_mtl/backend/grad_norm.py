"""Per-task gradient norms w.r.t. shared activations: one dispatcher.

`keras.ops` has no gradient operator, so the norms of `dL_i / d shared` need
the backend's autodiff. Each backend has its own small adapter module
(`grad_norm_tensorflow`, `grad_norm_jax`, `grad_norm_torch`); this module
picks one from `keras.backend.backend()`.

All adapters take the loss as a *function* of the shared tensors, which is
what makes them work inside a JAX train step (a nested `jax.vjp` of that
function) as well as under TF's `GradientTape` and torch autograd:

    losses, norms = task_losses_and_grad_norms(loss_fn, [shared])

`loss_fn(list_of_shared_tensors) -> list of n scalar losses`. `losses` stay
differentiable (through `loss_fn` and the shared tensors) so the caller can
train on them; `norms` is a `[n]` tensor of Frobenius norms
`||dL_i / d(shared_1, ..., shared_k)||_2` over the whole batch, with the
gradient stopped. A loss that does not depend on the shared tensors has norm
0.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import keras

SUPPORTED = ("tensorflow", "jax", "torch")


def task_losses_and_grad_norms(
    loss_fn: Callable[[list[Any]], list[Any]], shared: list[Any]
) -> tuple[list[Any], Any]:
    """Returns `(losses, norms)`; see the module docstring."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED:
        raise NotImplementedError(
            f"Gradient norms need one of the backends {SUPPORTED}. "
            f"Received: backend={backend!r}"
        )
    module = importlib.import_module(f"keras_mtl.backend.grad_norm_{backend}")
    return module.task_losses_and_grad_norms(loss_fn, list(shared))
