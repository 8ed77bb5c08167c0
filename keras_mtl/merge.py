"""`merge_tensor_list`: turn field embeddings into a concat, a stack or a list."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_mtl import validation

MERGE_TYPES = ("concat", "stack", None)


def merge_tensor_list(
    tensor_list: Any,
    merge_type: str | None = "concat",
    num_feature: int | None = None,
    axis: int = 1,
    keep_list: bool = False,
) -> Any:
    """Merges field tensors by concatenation or stacking, or splits them.

    One tensor:

    - rank 3 `(B, N, D)`: `"stack"` returns it; `"concat"` reshapes to
      `(B, N * D)`; `None` unstacks along `axis` into a list.
    - rank 2 `(B, W)` with `num_feature > 1` (`W` divisible by it):
      `"stack"` reshapes to `(B, num_feature, W / num_feature)`; `"concat"`
      returns it; `None` reshapes then unstacks along `axis`.
    - rank 2 otherwise: returned unchanged.

    Several tensors: `"stack"` stacks along `axis`, `"concat"` concatenates
    along `axis`, `None` returns the list.

    `keep_list=True` wraps a single tensor result in a one-element list. The
    caller's list is never modified (the reference library overwrote its
    first element).

    Args:
        tensor_list: a tensor or a list/tuple of tensors.
        merge_type: `"concat"`, `"stack"` or `None`. Defaults to `"concat"`.
        num_feature: number of fields packed in a rank-2 tensor. Defaults to
            `None`.
        axis: axis to stack, concatenate or unstack along. Defaults to `1`.
        keep_list: wrap tensor results in a list. Defaults to `False`.

    Returns:
        A tensor or a list of tensors.
    """
    validation.one_of("merge_type", merge_type, MERGE_TYPES)
    tensors = validation.as_list(tensor_list)
    if not tensors:
        raise ValueError("`tensor_list` must not be empty. Received: []")
    if len(tensors) > 1:
        if merge_type == "stack":
            merged = ops.stack(tensors, axis=axis)
        elif merge_type == "concat":
            merged = ops.concatenate(tensors, axis=axis)
        else:
            return tensors
        return [merged] if keep_list else merged

    tensor = tensors[0]
    shape = tuple(tensor.shape)
    if len(shape) == 3:
        if merge_type == "stack":
            merged = tensor
        elif merge_type == "concat":
            if shape[1] is None or shape[2] is None:
                raise ValueError(
                    "`merge_tensor_list` needs static field and embedding dims to "
                    f"concatenate. Received: shape={shape}"
                )
            merged = ops.reshape(tensor, (-1, shape[1] * shape[2]))
        else:
            return _unstack(tensor, axis)
    elif len(shape) == 2:
        if num_feature is not None and num_feature > 1:
            width = shape[1]
            if width is None or width % num_feature:
                raise ValueError(
                    "The last dimension must be divisible by `num_feature`. "
                    f"Received: shape={shape}, num_feature={num_feature}"
                )
            if merge_type == "concat":
                merged = tensor
            else:
                stacked = ops.reshape(tensor, (-1, num_feature, width // num_feature))
                if merge_type is None:
                    return _unstack(stacked, axis)
                merged = stacked
        else:
            merged = tensor
    else:
        raise ValueError(
            "`merge_tensor_list` expects a rank-2 or rank-3 tensor. "
            f"Received: shape={shape}"
        )
    return [merged] if keep_list else merged


def _unstack(tensor: Any, axis: int) -> list[Any]:
    size = tensor.shape[axis]
    return [ops.take(tensor, i, axis=axis) for i in range(size)]
