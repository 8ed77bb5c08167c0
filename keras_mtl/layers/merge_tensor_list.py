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

    Args:
        merge_type: `"concat"`, `"stack"` or `None`. Defaults to `"concat"`.
        num_feature: number of fields packed in a rank-2 input. Defaults to
            `None`.
        axis: axis to merge along. Defaults to `1`.
        keep_list: return a one-element list for tensor results. Defaults to
            `False`.
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
        self.num_feature = (
            None
            if num_feature is None
            else validation.positive_int("num_feature", num_feature)
        )
        self.axis = int(axis)
        self.keep_list = bool(keep_list)
        self.built = True

    def call(self, inputs: Any) -> Any:
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
