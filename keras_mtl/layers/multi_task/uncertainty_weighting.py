"""Homoscedastic-uncertainty weighting of task losses (Kendall et al., 2018)."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_mtl import validation


@keras.saving.register_keras_serializable(package="keras_mtl")
class UncertaintyWeighting(keras.layers.Layer):
    """Combines `n` task losses with learned uncertainties (Kendall et al.).

    With trainable log-variances `s_i = log(sigma_i^2)`:

    `y = sum_i exp(-s_i) * L_i + s_i`

    element-wise over the losses, which must share one shape: scalar batch
    means give a scalar, per-example losses `[B]` give a per-example `[B]`
    objective (average it yourself). For a fixed loss the optimum is
    `s_i = log(L_i)`: noisy (high-loss) tasks are down-weighted, and the `s_i`
    term keeps the weights from collapsing to zero.

    This is the regression form of the paper (Eq. 7) multiplied by 2, which
    does not change the minimiser: `1/(2 sigma^2) L + log sigma`
    `= (exp(-s) L + s) / 2`. The paper's classification form,
    `1/sigma^2 L + log sigma = exp(-s) L + s / 2`, is **not** used: every
    task, regression or classification, gets `exp(-s) L + s`, as in the
    authors' later code and most implementations. The factor 1/2 on the
    classification term only moves its optimum from `s = log(2 L)` to
    `s = log(L)`, i.e. scales the classification weights by 2 relative to
    the regression ones; use `loss_weights` on the inputs if you need the
    paper's exact mix.

    The output has no gradient constraint: the `s_i` are trained by the same
    optimizer as the model (use the output as the loss, e.g. with
    `add_loss` or in a custom `compute_loss`).

    Args:
        num_tasks: positive int. Number of task losses `n`.
        initial_log_variance: finite float. Initial value of every `s_i`.
            Defaults to `0.0`.
        **kwargs: Args to pass to the base class.

    Every argument is checked at construction: a wrong type or value raises a
    `ValueError` naming the argument.

    Input: a list of `n` tensors of one shape (scalars or per-example
    losses). Another number of tensors, or losses of different shapes (e.g.
    `(4, 1)` and `(4,)`, which would broadcast to `(4, 4)`), raise a
    `ValueError` naming the layer. Integer losses are cast to the compute
    dtype.

    Output: one tensor of that shape.

    Weights: `log_variances` `s` `[n]`.

    Example:

    ```python
    uw = keras_mtl.layers.UncertaintyWeighting(num_tasks=2)
    total = uw([l_ctr, l_cvr])  # exp(-s_0) l_ctr + s_0 + exp(-s_1) l_cvr + s_1
    ```

    References:
        - [Kendall et al., 2018](https://arxiv.org/abs/1705.07115)
    """

    def __init__(
        self,
        num_tasks: int,
        initial_log_variance: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_tasks = validation.positive_int("num_tasks", num_tasks)
        self.initial_log_variance = validation.in_range(
            "initial_log_variance", initial_log_variance, -math.inf, math.inf
        )

    def build(self, input_shape: Any = None) -> None:
        if input_shape is not None:
            self._check_shapes(validation.shapes_of(input_shape))
        self.log_variances = self.add_weight(
            name="log_variances",
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
        )
        self.built = True

    def _check_shapes(self, shapes: list[tuple[int | None, ...]]) -> None:
        if len(shapes) != self.num_tasks:
            raise ValueError(
                f"`UncertaintyWeighting` (layer '{self.name}') expects a list of "
                f"{self.num_tasks} losses (`num_tasks`). Received: "
                f"{len(shapes)} tensor(s)"
            )
        # Different shapes would broadcast, e.g. (4, 1) + (4,) -> (4, 4).
        validation.one_shape(self, "losses of one shape", shapes)

    def call(self, inputs: Any) -> Any:
        losses = [
            loss if hasattr(loss, "shape") else ops.convert_to_tensor(loss)
            for loss in validation.as_list(inputs)
        ]
        self._check_shapes([tuple(loss.shape) for loss in losses])
        s = ops.cast(self.log_variances, self.compute_dtype)
        total = None
        for i, loss in enumerate(losses):
            term = ops.exp(-s[i]) * ops.cast(loss, self.compute_dtype) + s[i]
            total = term if total is None else total + term
        return total

    def compute_output_shape(self, input_shape: Any) -> Any:
        shapes = validation.shapes_of(input_shape)
        self._check_shapes(shapes)  # Symbolic calls run this, not `call`.
        return shapes[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "initial_log_variance": self.initial_log_variance,
            }
        )
        return config
