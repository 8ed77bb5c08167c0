"""`GradNormModel`: a shared bottom, task heads and GradNorm in `model.fit`."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import validation
from keras_mtl.backend.grad_norm import task_losses_and_grad_norms
from keras_mtl.layers.multi_task.grad_norm import GradNorm


@keras.saving.register_keras_serializable(package="keras_mtl")
class GradNormModel(keras.Model):
    """Multi-task model trained with `GradNorm` inside `model.fit`.

    `call(x)` returns `[head_i(shared(x)) for each task]`. The training loss
    (`compute_loss`) is

    `gnorm_loss + weighted_loss + regularization losses`

    from `GradNorm([losses, norms])`, with `L_i = mean(loss_i(y_i, head_i(h)))`
    and `norms` the gradient norms `||dL_i / dh||` w.r.t. the shared
    activations `h = shared(x)`, from the backend adapter
    (`keras_mtl.backend.grad_norm`). The per-task losses are written as a
    function of `h`, which is what a nested `jax.vjp` needs inside the JAX
    train step; TF uses a `GradientTape`, torch `torch.autograd.grad`.

    Compile with an optimizer only: a compiled `loss` is ignored.
    `compute_loss` runs the shared bottom and the heads once more, so `h` is
    recomputed: avoid dropout in the shared bottom (it would be
    sampled twice) and stateful layers (e.g. batch norm) in the heads.
    Sample weights are ignored.

    Args:
        shared: a Keras layer or model mapping the inputs to the shared
            activations.
        heads: a non-empty list of `n` Keras layers or models, one per task,
            applied to `h`.
        task_losses: a list of `n` Keras losses (names, configs or callables
            `(y_true, y_pred) -> per-example loss`).
        grad_norm: a `GradNorm` layer with `n` names, or `None` for
            `GradNorm(["task_0", ...])`. Defaults to `None`.
        **kwargs: Args to pass to `keras.Model`.

    Every argument is checked at construction (`ValueError` naming it), and
    targets `y` must hold one entry per head (`ValueError` naming the model).

    The model saves to and loads from `.keras` files: `get_config` holds the
    serialized `shared`, `heads`, `task_losses` and `grad_norm`.
    """

    def __init__(
        self,
        shared: keras.layers.Layer,
        heads: list[keras.layers.Layer],
        task_losses: list[Any],
        grad_norm: GradNorm | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(shared, keras.layers.Layer):
            raise ValueError(
                "`shared` must be a Keras layer or model. "
                f"Received: shared={shared!r} of type {type(shared).__name__}"
            )
        heads = validation.as_list(heads)
        if not heads or not all(isinstance(h, keras.layers.Layer) for h in heads):
            raise ValueError(
                "`heads` must be a non-empty list of Keras layers or models. "
                f"Received: heads={heads!r}"
            )
        task_losses = validation.as_list(task_losses)
        if len(heads) != len(task_losses):
            raise ValueError(
                "`heads` and `task_losses` must have the same length. "
                f"Received: {len(heads)} heads and {len(task_losses)} losses"
            )
        self.shared = shared
        self.heads = heads
        self.task_losses = [_loss(loss) for loss in task_losses]
        if grad_norm is None:
            grad_norm = GradNorm([f"task_{i}" for i in range(len(heads))])
        if not isinstance(grad_norm, GradNorm):
            raise ValueError(
                "`grad_norm` must be a `keras_mtl.layers.GradNorm` or None. "
                f"Received: grad_norm={grad_norm!r}"
            )
        if grad_norm.num_tasks != len(heads):
            raise ValueError(
                "`grad_norm` must have one loss name per head. "
                f"Received: {grad_norm.num_tasks} names and {len(heads)} heads"
            )
        self.grad_norm = grad_norm

    def build(self, input_shape: Any) -> None:
        if not self.grad_norm.built:
            self.grad_norm.build(None)
        super().build(input_shape)

    def build_from_config(self, config: dict[str, Any]) -> None:
        # The sub-layers arrive built from their own configs; build the rest.
        if config and config.get("input_shape") is not None:
            self.build(config["input_shape"])

    def call(self, inputs: Any, training: bool | None = None) -> list[Any]:
        h = self.shared(inputs, training=training)
        return [head(h, training=training) for head in self.heads]

    def task_losses_and_grad_norms(
        self, x: Any, y: Any, training: bool | None = None
    ) -> tuple[list[Any], Any]:
        """The per-task mean losses `L_i` and gradient norms `||dL_i/dh||`."""
        ys = validation.as_list(y)
        if len(ys) != len(self.heads):
            raise ValueError(
                f"`GradNormModel` (model '{self.name}') expects one target per "
                f"head: {len(self.heads)}. Received: {len(ys)} target(s)"
            )
        h = self.shared(x, training=training)

        def loss_fn(shared: list[Any]) -> list[Any]:
            return [
                ops.mean(loss(y_i, head(shared[0], training=training)))
                for loss, head, y_i in zip(
                    self.task_losses, self.heads, ys, strict=True
                )
            ]

        return task_losses_and_grad_norms(loss_fn, [h])

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        losses, norms = self.task_losses_and_grad_norms(x, y, training=training)
        gnorm_loss, weighted_loss = self.grad_norm([losses, norms])
        total = gnorm_loss + weighted_loss
        for loss in self.losses:  # Regularization and add_loss terms.
            total = total + ops.cast(ops.sum(loss), total.dtype)
        return total

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            {
                "shared": serialize(self.shared),
                "heads": [serialize(head) for head in self.heads],
                "task_losses": [serialize(loss) for loss in self.task_losses],
                "grad_norm": serialize(self.grad_norm),
            }
        )
        return config

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: Any = None
    ) -> GradNormModel:
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("shared", "grad_norm"):
            config[key] = deserialize(config[key], custom_objects=custom_objects)
        config["heads"] = [
            deserialize(head, custom_objects=custom_objects) for head in config["heads"]
        ]
        config["task_losses"] = [
            deserialize(loss, custom_objects=custom_objects)
            for loss in config["task_losses"]
        ]
        return cls(**config)


def _loss(identifier: Any) -> Any:
    """`keras.losses.get`, with a `ValueError` naming `task_losses`."""
    try:
        loss = keras.losses.get(identifier)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "`task_losses` must hold Keras losses (names, configs or callables). "
            f"Received: {identifier!r} ({error})"
        ) from None
    if loss is None or not callable(loss):
        raise ValueError(
            "`task_losses` must hold Keras losses (names, configs or callables). "
            f"Received: {identifier!r}"
        )
    return loss
