"""GradNorm-style task-loss balancer (simplified, as in the reference)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class GradNorm(keras.layers.Layer):
    """GradNorm-style balancing of `n` task losses (Chen et al., ICML 2018).

    Task weights are softmax-parametrised, `w = softmax(theta)` (uniform
    `1/n` at init, summing to 1). Given the task losses `L_i` and the norms
    `n_i = ||dL_i / d shared||_2` of their gradients w.r.t. the shared
    activations (Frobenius norm over the whole batch; the gradient of the
    norms is stopped):

    `wn_i = n_i * w_i`, `avg = sum_i wn_i / n` (not gradient-stopped)
    `diff_i = |wn_i - avg|`, divided by `avg + epsilon` if `relative_diff`
    `gnorm_loss = scale * sum_i diff_i ** loss_pow`
    `weighted_loss = sum_i L_i * stop_gradient(w_i)`

    `gnorm_loss` trains only `theta` (the norms are constants);
    `weighted_loss` trains only the model. The layer returns both and adds
    nothing with `add_loss`: the caller adds both to the objective.

    Differences from the paper: no relative inverse training rate
    `r_i ** alpha` (no `alpha`, no initial losses `L_i(0)`), so the target is
    simply the mean weighted norm and the method equalises weighted gradient
    norms; the norms are taken w.r.t. the shared *activations* passed in,
    not the last shared weights; the weights are a softmax (sum 1) instead
    of being renormalised to sum to `n` after each step.

    `keras.ops` has no gradient operator, so the norms are computed outside
    this layer: `keras_mtl.backend.grad_norm.task_losses_and_grad_norms`
    dispatches to `tf.GradientTape`, `jax.vjp` or `torch.autograd`, and
    `keras_mtl.models.GradNormModel` wires both into `model.fit`.

    Args:
        loss_names: non-empty list or tuple of distinct str. One name per
            task; `n = len(loss_names)`.
        scale: finite float >= 0. Coefficient of `gnorm_loss`. Defaults to
            `1.0`.
        loss_pow: finite float > 0. Power of the absolute differences.
            Defaults to `2.0`.
        relative_diff: bool. Divide the differences by `avg + epsilon`.
            Defaults to `False`.
        epsilon: finite float > 0 (0 would divide by zero when all weighted
            norms are 0). Added to `avg` with `relative_diff`. Defaults to
            `1e-06`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction: a wrong type or value raises a
    `ValueError` naming the argument.

    Input: a list `[losses, grad_norms]`: `losses` and `grad_norms` each a
    list of `n` scalars or a `[n]` tensor (any tensor of `n` elements is
    flattened). Another number of entries or elements raises a `ValueError`
    naming the layer. Integer values are cast to the compute dtype.

    Output: the list `[gnorm_loss, weighted_loss]` of two scalars.

    Weights: `grad_norm_weights` `theta` `[n]` (zeros).

    Example:

    ```python
    gn = keras_mtl.layers.GradNorm(["ctr", "cvr"])
    gnorm_loss, weighted_loss = gn([[l_ctr, l_cvr], [norm_ctr, norm_cvr]])
    total = gnorm_loss + weighted_loss
    ```

    References:
        - [Chen et al., 2018](https://arxiv.org/abs/1711.02257)
    """

    def __init__(
        self,
        loss_names: Sequence[str],
        scale: float = 1.0,
        loss_pow: float = 2.0,
        relative_diff: bool = False,
        epsilon: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (
            not isinstance(loss_names, (list, tuple))
            or not loss_names
            or not all(isinstance(name, str) for name in loss_names)
        ):
            raise ValueError(
                "`loss_names` must be a non-empty list of str. "
                f"Received: loss_names={loss_names!r}"
            )
        if len(set(loss_names)) != len(loss_names):
            raise ValueError(
                "`loss_names` must be distinct (one name per task). "
                f"Received: loss_names={loss_names!r}"
            )
        self.loss_names = list(loss_names)
        self.scale = validation.non_negative_float("scale", scale)
        self.loss_pow = validation.positive_float("loss_pow", loss_pow)
        self.relative_diff = validation.boolean("relative_diff", relative_diff)
        self.epsilon = validation.positive_float("epsilon", epsilon)

    @property
    def num_tasks(self) -> int:
        return len(self.loss_names)

    def build(self, input_shape: Any = None) -> None:
        self.grad_norm_weights = self.add_weight(
            name="grad_norm_weights",
            shape=(self.num_tasks,),
            initializer="zeros",
            trainable=True,
        )
        self.built = True

    @property
    def task_weights(self) -> Any:
        """`softmax(theta)`, the current task weights `[n]`."""
        return ops.softmax(self.grad_norm_weights)

    def call(self, inputs: Any) -> list[Any]:
        losses, grad_norms = validation.input_count(self, inputs, 2)
        losses = self._as_vector("losses", losses)
        norms = ops.stop_gradient(self._as_vector("grad_norms", grad_norms))
        weights = ops.cast(ops.softmax(self.grad_norm_weights), self.compute_dtype)
        weighted_norms = norms * weights
        avg = ops.mean(weighted_norms)
        diff = ops.abs(weighted_norms - avg)
        if self.relative_diff:
            diff = diff / (avg + self.epsilon)
        gnorm_loss = self.scale * ops.sum(ops.power(diff, self.loss_pow))
        weighted_loss = ops.sum(losses * ops.stop_gradient(weights))
        return [gnorm_loss, weighted_loss]

    def _as_vector(self, name: str, values: Any) -> Any:
        """A list of `n` scalars or a tensor of `n` elements as a `[n]` tensor."""
        n = self.num_tasks
        dtype = self.compute_dtype
        expected = (
            f"`GradNorm` (layer '{self.name}'): Expected {n} {name} (one per "
            f"name in `loss_names`): a list of {n} scalars or a [{n}] tensor."
        )
        if isinstance(values, (list, tuple)):
            if len(values) != n:
                raise ValueError(
                    f"{expected} Received: `{name}` a list of {len(values)} entries"
                )
            values = [
                v if hasattr(v, "shape") else ops.convert_to_tensor(v) for v in values
            ]
            for i, v in enumerate(values):
                shape = tuple(v.shape)
                if None not in shape and math.prod(shape) != 1:
                    raise ValueError(
                        f"{expected} Received: `{name}[{i}]` a tensor of shape {shape}"
                    )
            return ops.stack([ops.reshape(ops.cast(v, dtype), ()) for v in values])
        values = ops.convert_to_tensor(values)
        try:
            shape = tuple(values.shape)
        except ValueError:  # A TensorFlow shape of unknown rank.
            shape = (None,)
        if all(d is not None for d in shape) and math.prod(shape) != n:
            raise ValueError(f"{expected} Received: `{name}` a tensor of shape {shape}")
        return ops.reshape(ops.cast(values, dtype), (n,))

    def compute_output_spec(self, inputs: Any) -> list[Any]:
        # Two distinct tensors: a functional model maps outputs by identity,
        # so one object twice would make both outputs `weighted_loss`.
        return [keras.KerasTensor((), dtype=self.compute_dtype) for _ in range(2)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "loss_names": list(self.loss_names),
                "scale": self.scale,
                "loss_pow": self.loss_pow,
                "relative_diff": self.relative_diff,
                "epsilon": self.epsilon,
            }
        )
        return config
