"""TensorFlow: `tf.GradientTape` and `tf.function(jit_compile=True)` (XLA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from keras_mtl_conformance import harness


def vjp(layer, case, inputs, float_idx, cotangents) -> tuple[list, list]:
    tv = [tf.convert_to_tensor(v.value) for v in layer.trainable_variables]
    ntv = [tf.convert_to_tensor(v.value) for v in layer.non_trainable_variables]
    float_inputs = [tf.convert_to_tensor(inputs[i]) for i in float_idx]
    with tf.GradientTape() as tape:
        tape.watch(tv)
        tape.watch(float_inputs)
        args = harness.with_values(inputs, float_idx, float_inputs)
        first, kwargs = harness.call_args(layer, case, args)
        outputs, _, losses = layer.stateless_call(
            tv, ntv, first, return_losses=True, **kwargs
        )
        total = tf.add_n(
            [
                tf.reduce_sum(tf.cast(o, tf.float32) * c)
                for o, c in zip(harness.flatten(outputs), cotangents, strict=True)
            ]
        )
        if losses:
            total = total + tf.add_n(list(losses))
    g_x, g_tv = tape.gradient(total, (float_inputs, tv))
    g_x = [
        tf.zeros_like(x) if g is None else g
        for x, g in zip(float_inputs, g_x, strict=True)
    ]
    g_tv = [tf.zeros_like(t) if g is None else g for t, g in zip(tv, g_tv, strict=True)]

    # A gather's gradient is `tf.IndexedSlices` (sparse rows); densify it.
    def dense(g: Any) -> np.ndarray:
        return tf.convert_to_tensor(g).numpy()

    return [dense(g) for g in g_x], [dense(g) for g in g_tv]


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
