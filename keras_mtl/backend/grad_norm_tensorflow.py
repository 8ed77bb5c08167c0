"""TensorFlow adapter: a persistent `tf.GradientTape` around the loss function.

Inside a Keras `train_step` the outer tape also records the losses, so they
stay differentiable w.r.t. the model weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def task_losses_and_grad_norms(
    loss_fn: Callable[[list[Any]], list[Any]], shared: list[Any]
) -> tuple[list[Any], Any]:
    shared = [tf.convert_to_tensor(s) for s in shared]
    with tf.GradientTape(persistent=True) as tape:
        for s in shared:
            tape.watch(s)
        losses = list(loss_fn(shared))
    norms = []
    for loss in losses:
        grads = tape.gradient(
            loss, shared, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        squares = [tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads]
        norms.append(tf.sqrt(tf.add_n(squares)))
    del tape
    return losses, tf.stop_gradient(tf.stack(norms))
