"""TensorFlow: `tf.GradientTape` and `tf.function(jit_compile=True)` (XLA)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_mtl_conformance import harness


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    return harness.vjp(
        value_and_gradients, layer, case, inputs, float_idx, cotangents, False
    )


def compiled_call(layer, case, inputs) -> Any:
    @tf.function(jit_compile=True)
    def run(args):
        return harness.call(layer, case, args)

    return run(list(inputs))


def value_and_gradients(fn, args, compiled=False) -> tuple[float, list]:
    def run(*tensors):
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
        # Densified inside: a gather's `tf.IndexedSlices` returned from an XLA
        # function keeps a padded static shape.
        return value, [
            tf.zeros_like(t) if g is None else tf.convert_to_tensor(g)
            for t, g in zip(tensors, grads, strict=True)
        ]

    if compiled:
        run = tf.function(run, jit_compile=True)
    value, grads = run(*[tf.convert_to_tensor(a) for a in args])
    return float(value), [g.numpy() for g in grads]
