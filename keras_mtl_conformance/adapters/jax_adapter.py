"""JAX: `jax.grad` and `jax.jit` over `Layer.stateless_call`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from keras_mtl_conformance import harness


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def objective(tv, float_inputs):
        args = harness.with_values(inputs, float_idx, float_inputs)
        first, kwargs = harness.call_args(layer, case, args)
        outputs, _, losses = layer.stateless_call(
            tv, ntv, first, return_losses=True, **kwargs
        )
        total = sum(
            jnp.sum(o.astype(jnp.float32) * c)
            for o, c in zip(harness.flatten(outputs), cotangents, strict=True)
        )
        return total + sum(losses)

    # Under jit, as JAX training steps run; eagerly every primitive and its
    # transpose would be compiled on its own (several times slower on CPU).
    g_tv, g_x = jax.jit(jax.grad(objective, argnums=(0, 1)))(
        tv, [inputs[i] for i in float_idx]
    )
    return [np.asarray(g) for g in g_x], [np.asarray(g) for g in g_tv]


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
