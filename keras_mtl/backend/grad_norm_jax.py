"""JAX adapter: a nested `jax.vjp` of the loss function of the shared tensors.

The primal outputs of `jax.vjp` are the losses themselves, so an enclosing
`jax.grad` (the Keras train step) differentiates through them; the per-task
pullbacks give `dL_i / d shared` with a one-hot cotangent each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def task_losses_and_grad_norms(
    loss_fn: Callable[[list[Any]], list[Any]], shared: list[Any]
) -> tuple[list[Any], Any]:
    def stacked(*tensors: Any) -> Any:
        return jnp.stack([jnp.asarray(v) for v in loss_fn(list(tensors))])

    values, pullback = jax.vjp(stacked, *[jnp.asarray(s) for s in shared])
    n = values.shape[0]
    norms = []
    for i in range(n):
        grads = pullback(jnp.zeros_like(values).at[i].set(1.0))
        norms.append(
            jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in grads))
        )
    return [values[i] for i in range(n)], jax.lax.stop_gradient(jnp.stack(norms))
