"""Per-backend autodiff and compilation, the only backend-specific code here.

Each adapter module provides:

- `vjp(layer, case, inputs, float_idx, cotangents)`: `harness.vjp` over the
  adapter's `value_and_gradients` (jitted on JAX), the gradients of
  `sum(outputs * cotangents) + sum(losses)` with respect to the inputs at
  `float_idx` and to `layer.trainable_variables`, as NumPy arrays.
- `compiled_call(layer, case, inputs)`: the layer's outputs under the
  backend's compiler (`jax.jit`, XLA `tf.function`, `torch.compile`).
- `value_and_gradients(fn, args, compiled=False)`: the scalar `fn(*args)` as a
  float and its gradients with respect to each of `args` (backend tensors or
  NumPy arrays) as NumPy arrays; under the backend's compiler when `compiled`.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def get(backend: str) -> ModuleType:
    return importlib.import_module(f"keras_mtl_conformance.adapters.{backend}_adapter")
