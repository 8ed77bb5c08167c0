"""Layer wrapper of `keras_mtl.merge_tensor_list` for functional models."""

from __future__ import annotations

from typing import Any

import keras

from keras_mtl import validation
from keras_mtl.merge import MERGE_TYPES
from keras_mtl.merge import merge_tensor_list


@keras.saving.register_keras_serializable(package="keras_mtl")
class MergeTensorList(keras.layers.Layer):
    """Concatenates, stacks or splits field tensors (see `merge_tensor_list`).

    Inputs keep their dtype (the layer only moves values; a list of mixed
    dtypes is promoted to a common one, as `keras.ops.concatenate` does).
    Shapes that cannot be merged along `axis` raise a `ValueError` naming
    the layer, before any backend op runs.

    Args:
        merge_type: `"concat"`, `"stack"` or `None` (split a single tensor
            into a list). Defaults to `"concat"`.
        num_feature: positive int or `None`. Number of fields packed in a
            rank-2 input. Defaults to `None`.
        axis: int (not a bool). Axis to merge or split along, checked
            against the rank of the inputs when called. Defaults to `1`.
        keep_list: bool. Return a one-element list for tensor results.
            Defaults to `False`.
        **kwargs: Args to pass to the base class.

    Example:

    ```python
    merge = keras_mtl.layers.MergeTensorList("stack")
    y = merge([np.ones((2, 4)), np.zeros((2, 4))])  # (2, 2, 4)
    ```
    """

    def __init__(
        self,
        merge_type: str | None = "concat",
        num_feature: int | None = None,
        axis: int = 1,
        keep_list: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.merge_type = validation.one_of("merge_type", merge_type, MERGE_TYPES)
        self.num_feature = validation.optional_positive_int("num_feature", num_feature)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"`axis` must be an integer. Received: axis={axis!r}")
        self.axis = axis
        self.keep_list = validation.boolean("keep_list", keep_list)
        self.built = True

    def _check(self, shapes: list[tuple[int | None, ...]]) -> None:
        """Refuses inputs the backend ops would reject (or index past)."""
        layer = f"`MergeTensorList` (layer '{self.name}')"
        if not shapes:
            raise ValueError(f"{layer} expects at least one tensor. Received: []")
        rank = len(shapes[0])
        several = len(shapes) > 1
        if several and self.merge_type is not None:
            out_rank = rank + 1 if self.merge_type == "stack" else rank
        elif (
            not several
            and self.merge_type is None
            and (rank == 3 or (rank == 2 and (self.num_feature or 0) > 1))
        ):
            out_rank = 3  # Split along `axis` (a rank-2 input is reshaped first).
        else:
            return  # `axis` is not used.
        if not -out_rank <= self.axis < out_rank:
            raise ValueError(
                f"{layer} needs an axis in [{-out_rank}, {out_rank - 1}] for "
                f"merge_type={self.merge_type!r} and inputs of rank {rank}. "
                f"Received: axis={self.axis}"
            )
        axis = self.axis % out_rank
        if not several:
            shape = shapes[0]
            if rank == 2:
                width = shape[1]
                nf = self.num_feature
                shape = (shape[0], nf, None if width is None else width // nf)
            if shape[axis] is None:
                raise ValueError(
                    f"{layer} splits along axis {self.axis}, which needs a static "
                    f"size there. Received: shape {tuple(shapes[0])}"
                )
            return
        concat = self.merge_type == "concat"
        for i, shape in enumerate(shapes[1:], start=1):
            if len(shape) != rank or not all(
                a is None or b is None or a == b or (concat and j == axis)
                for j, (a, b) in enumerate(zip(shapes[0], shape, strict=True))
            ):
                what = f"equal except on axis {self.axis}" if concat else "identical"
                raise ValueError(
                    f"{layer} with merge_type={self.merge_type!r} expects shapes "
                    f"{what}. Received: shape {tuple(shapes[0])} at index 0 and "
                    f"{tuple(shape)} at index {i}"
                )

    def call(self, inputs: Any) -> Any:
        self._check([tuple(t.shape) for t in validation.as_list(inputs)])
        return merge_tensor_list(
            inputs, self.merge_type, self.num_feature, self.axis, self.keep_list
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "merge_type": self.merge_type,
                "num_feature": self.num_feature,
                "axis": self.axis,
                "keep_list": self.keep_list,
            }
        )
        return config
