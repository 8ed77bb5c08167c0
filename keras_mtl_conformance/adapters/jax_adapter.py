"""JAX: `jax.grad` and `jax.jit` over `Layer.stateless_call`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from keras_mtl_conformance import harness


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    # Under jit, as JAX training steps run; eagerly every primitive and its
    # transpose would be compiled on its own (several times slower on CPU).
    return harness.vjp(
        value_and_gradients, layer, case, inputs, float_idx, cotangents, True
    )


def compiled_call(layer, case, inputs) -> Any:
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def run(tv, ntv, args):
        first, kwargs = harness.call_args(layer, case, args)
        outputs, _ = layer.stateless_call(tv, ntv, first, **kwargs)
        return outputs

    return run(tv, ntv, list(inputs))


def value_and_gradients(fn, args, compiled=False) -> tuple[float, list]:
    grad = jax.value_and_grad(fn, argnums=tuple(range(len(args))))
    if compiled:
        grad = jax.jit(grad)
    value, grads = grad(*[jnp.asarray(a) for a in args])
    return float(value), [np.asarray(g) for g in grads]
