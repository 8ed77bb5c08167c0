"""Expert parallelism on `keras.distribution`: layouts that shard the expert axis.

`SparseMoE` and `HierarchicalMoE` keep every expert weight stacked on a
leading expert axis (`[E, ...]`, `[X, Y, ...]`), so expert parallelism is
only a layout: put that axis on one axis of a `DeviceMesh` and let the
compiler (XLA SPMD on JAX and TensorFlow) insert the collectives. Keras
implements `keras.distribution` for JAX and TensorFlow.

```python
devices = keras.distribution.list_devices()
mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "expert"), devices)
layout_map = keras_mtl.distribution.expert_parallel_layout_map(mesh, "expert")
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
)
model = build_model()  # variables are created sharded
```

The number of experts (`E` for `SparseMoE`, `X` for `HierarchicalMoE`) must
be divisible by the size of the mesh axis.
"""

from __future__ import annotations

import keras

# Variable-path patterns (regexes matched in full by `LayoutMap`) and the
# position of the expert axis in the variable's shape, by rank.
_EXPERT_WEIGHTS = {
    r".*/expert_kernel_\d+": 3,  # SparseMoE [E, d_in, d_out]
    r".*/expert_bias_\d+": 2,  # SparseMoE [E, d_out]
    r".*/expert_kernel_(in|out)": 4,  # HierarchicalMoE [X, Y, d, h]
    r".*/expert_bias_(in|out)": 3,  # HierarchicalMoE [X, Y, h]
    r".*/inner_gate_kernel": 3,  # HierarchicalMoE [X, d, Y]
}


def expert_parallel_layout_map(
    device_mesh: keras.distribution.DeviceMesh,
    expert_axis: str = "expert",
    layout_map: keras.distribution.LayoutMap | None = None,
) -> keras.distribution.LayoutMap:
    """A `LayoutMap` that shards the expert axis of the MoE layers' weights.

    Args:
        device_mesh: the `keras.distribution.DeviceMesh`.
        expert_axis: name of the mesh axis the experts are split over.
            Defaults to `"expert"`.
        layout_map: an existing `LayoutMap` to add the entries to (e.g. with
            layouts for other layers). Defaults to `None` (a new one).

    Returns:
        The `LayoutMap`. Routers and all other weights stay replicated.

    Raises:
        ValueError: if `expert_axis` is not an axis of `device_mesh`.
    """
    if expert_axis not in device_mesh.axis_names:
        raise ValueError(
            "`expert_axis` must be one of the mesh axes "
            f"{list(device_mesh.axis_names)}. Received: expert_axis={expert_axis!r}"
        )
    if layout_map is None:
        layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, rank in _EXPERT_WEIGHTS.items():
        layout_map[pattern] = (expert_axis,) + (None,) * (rank - 1)
    return layout_map
