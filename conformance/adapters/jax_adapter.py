"""JAX: `jax.grad` and `jax.jit` over `Layer.stateless_call`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conformance import harness


def _objective(layer, case, ntv, inputs, float_idx, cotangents):
    def objective(tv, float_inputs):
        args = list(inputs)
        for i, x in zip(float_idx, float_inputs, strict=True):
            args[i] = x
        outputs, _, losses = layer.stateless_call(
            tv,
            ntv,
            harness.pack(case, args),
            return_losses=True,
            **harness.call_kwargs(case, layer),
        )
        flat = harness.flatten(outputs)
        total = sum(
            jnp.sum(o.astype(jnp.float32) * c)
            for o, c in zip(flat, cotangents, strict=True)
        )
        return total + sum(losses)

    return objective


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]
    objective = _objective(layer, case, ntv, inputs, float_idx, cotangents)
    g_tv, g_x = jax.grad(objective, argnums=(0, 1))(tv, [inputs[i] for i in float_idx])
    return [np.asarray(g) for g in g_x], [np.asarray(g) for g in g_tv]


def compiled_call(layer, case, inputs) -> Any:
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def run(tv, ntv, args):
        outputs, _ = layer.stateless_call(
            tv, ntv, harness.pack(case, args), **harness.call_kwargs(case, layer)
        )
        return outputs

    return run(tv, ntv, list(inputs))
