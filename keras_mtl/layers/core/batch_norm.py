"""Keras's `BatchNormalization`, traceable by `torch.compile` in training."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="keras_mtl")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with its reduction axes in a tuple.

    Same arguments, weights and results as Keras's layer. Keras keeps the
    axes it reduces over (every axis but `axis`) in a list attribute, which
    its layer tracking wraps in a `TrackedList`; torch's dynamo cannot pass
    that object to `torch.mean`, so with the torch backend every call in
    training broke the compiled graph (13 graphs for an `MMoE` whose experts
    use batch norm, instead of one). A tuple is not wrapped and traces.

    The class keeps Keras's name: a `.keras` file stores the layers of a list
    under their class names, so files saved with either class load with the
    other.
    """

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        axes = getattr(self, "_reduction_axes", None)
        if isinstance(axes, list):
            self._reduction_axes = tuple(axes)
