"""Element-wise pooling across a list of equally shaped tensors."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import validation


class _ListPooling(keras.layers.Layer):
    """Base class: reduces a list of same-shape tensors element-wise."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = True

    def _check(self, shapes: list[tuple[int | None, ...]]) -> None:
        if not shapes:
            raise ValueError(
                f"`{type(self).__name__}` (layer '{self.name}') expects a "
                "non-empty list of tensors. Received: an empty list"
            )
        validation.one_shape(self, "tensors of identical shape", shapes)

    def call(self, inputs: Any) -> Any:
        tensors = validation.as_list(inputs)
        self._check([tuple(t.shape) for t in tensors])
        if len(tensors) == 1:
            return tensors[0]
        return self._reduce(ops.stack(tensors, axis=0))

    def _reduce(self, stacked: Any) -> Any:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: Any) -> Any:
        if all(d is None or isinstance(d, int) for d in input_shape):
            return tuple(input_shape)  # a single tensor
        shapes = [tuple(s) for s in input_shape]
        self._check(shapes)
        return shapes[0]


@keras.saving.register_keras_serializable(package="keras_mtl")
class SumPooling(_ListPooling):
    """Element-wise sum of a list of tensors: `y = sum_i x_i`.

    Input: a list or tuple of N >= 1 tensors of identical shape `S` (any
    batch size, 0 included). Output: one tensor of shape `S`. No weights.
    Integer inputs give an integer sum on every backend; a list of mixed
    dtypes is promoted to a common one (`keras.ops.stack`).

    Args:
        **kwargs: Args to pass to the base class.

    Example:

    ```python
    y = keras_mtl.layers.SumPooling()([np.ones((2, 3)), np.ones((2, 3))])  # 2s
    ```
    """

    def _reduce(self, stacked: Any) -> Any:
        return ops.sum(stacked, axis=0)


@keras.saving.register_keras_serializable(package="keras_mtl")
class AvgPooling(_ListPooling):
    """Element-wise mean of a list of tensors: `y = (1/N) sum_i x_i`.

    Input: a list or tuple of N >= 1 tensors of identical shape `S` (any
    batch size, 0 included). Output: one tensor of shape `S`. No weights.
    The mean of N >= 2 integer tensors is a float on every backend (a
    one-element list is returned unchanged, by every pooling layer).

    Args:
        **kwargs: Args to pass to the base class.

    Example:

    ```python
    y = keras_mtl.layers.AvgPooling()([np.zeros((2, 3)), np.ones((2, 3))])  # 0.5
    ```
    """

    def _reduce(self, stacked: Any) -> Any:
        return ops.mean(stacked, axis=0)


@keras.saving.register_keras_serializable(package="keras_mtl")
class MaxPooling(_ListPooling):
    """Element-wise maximum of a list of tensors: `y = max_i x_i`.

    Input: a list or tuple of N >= 1 tensors of identical shape `S` (any
    batch size, 0 included). Output: one tensor of shape `S`. No weights.
    Integer inputs give an integer maximum on every backend; a list of
    mixed dtypes is promoted to a common one (`keras.ops.stack`).

    Args:
        **kwargs: Args to pass to the base class.

    Example:

    ```python
    y = keras_mtl.layers.MaxPooling()([np.zeros((2, 3)), np.ones((2, 3))])  # 1s
    ```
    """

    def _reduce(self, stacked: Any) -> Any:
        if 0 in tuple(stacked.shape):
            # An empty output (e.g. batch 0): Keras's `max` refuses empty
            # tensors on TensorFlow (eager) and torch, whatever the axis.
            return stacked[0]
        # `amax` as in `numerics.first_max_one_hot`: no torch.compile break.
        return ops.amax(stacked, axis=0)
