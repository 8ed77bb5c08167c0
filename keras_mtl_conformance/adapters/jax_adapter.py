"""JAX: `jax.grad` and `jax.jit` over `Layer.stateless_call`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from keras_mtl_conformance import harness


@contextlib.contextmanager
def _optimized() -> Iterator[None]:
    # `JAX_DISABLE_MOST_OPTIMIZATIONS=1` (set by the noxfile's CPU sessions)
    # cuts about a third of the compile time of the one-op programs that
    # eager calls compile; jitted layers, as they train and serve, are still
    # compiled with every optimization, so that the compiled and grad checks
    # test them.
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


# The noxfile's CPU sessions also turn XLA's CPU fusion emitters off in
# `XLA_FLAGS` (faster compiles of the eager one-op programs); jitted layers
# get them back, per compile, as users' default XLA compiles them.
_FUSION_EMITTERS_OFF = "--xla_cpu_use_fusion_emitters=false"


def compiler_options() -> dict[str, bool] | None:
    """XLA options for the jitted checks: the fusion emitters back on where
    `XLA_FLAGS` turned them off (`None`: nothing to override)."""
    if _FUSION_EMITTERS_OFF in os.environ.get("XLA_FLAGS", "").split():
        return {"xla_cpu_use_fusion_emitters": True}
    return None


def _jit(fn: Callable) -> Callable:
    return jax.jit(fn, compiler_options=compiler_options())


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    # Under jit, as JAX training steps run; eagerly every primitive and its
    # transpose would be compiled on its own (several times slower on CPU).
    return harness.vjp(
        value_and_gradients, layer, case, inputs, float_idx, cotangents, True
    )


def compiled_call(layer, case, inputs) -> Any:
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    @_jit
    def run(tv, ntv, args):
        first, kwargs = harness.call_args(layer, case, args)
        outputs, _ = layer.stateless_call(tv, ntv, first, **kwargs)
        return outputs

    with _optimized():
        return run(tv, ntv, list(inputs))


def value_and_gradients(fn, args, compiled=False) -> tuple[float, list]:
    grad = jax.value_and_grad(fn, argnums=tuple(range(len(args))))
    if compiled:
        grad = _jit(grad)
    with _optimized() if compiled else contextlib.nullcontext():
        value, grads = grad(*[jnp.asarray(a) for a in args])
    return float(value), [np.asarray(g) for g in grads]
