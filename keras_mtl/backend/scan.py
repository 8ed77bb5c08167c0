"""`scan_states`: a recurrence over time returning every state, XLA-safe on TF.

`keras.ops.scan` on TensorFlow (Keras 3.15) builds a `tf.while_loop` without
`maximum_iterations`, so its gradient does not compile under
`tf.function(jit_compile=True)` ("XLA compilation requires a fixed tensor list
size"). On TensorFlow this adapter uses `tf.scan`, whose loop is bounded by
the (static) sequence length; on JAX and torch it is `keras.ops.scan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops


def scan_states(step: Callable[[Any, Any], Any], init: Any, xs: Any) -> tuple[Any, Any]:
    """`h_t = step(h_{t-1}, xs[t])` over the leading axis of `xs`.

    Args:
        step: `(state, x_t) -> new state` (states are single tensors).
        init: the initial state.
        xs: a tensor or a nested structure of tensors, time first.

    Returns:
        `(final_state, states)` with `states` stacked time first.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        states = tf.scan(step, xs, initializer=init)
        return states[-1], states

    def body(h: Any, x: Any) -> tuple[Any, Any]:
        new = step(h, x)
        return new, new

    return ops.scan(body, init, xs)
