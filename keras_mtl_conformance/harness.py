"""Keras-side helpers shared by the checks: build, assign weights, call.

Imported only after the backend and device are configured (see conftest).
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np

from keras_mtl_conformance import spec as spec_lib

LAYER_NAME = "layer_under_test"


def layer_class(spec: spec_lib.LayerSpec) -> type:
    cls = spec_lib.resolve(spec.layer, spec.path, "layer")
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise spec_lib.SpecError(
            spec.path, f"'{spec.layer}' is not a Keras layer", field="layer"
        )
    return cls


def make_layer(case: spec_lib.Case, policy: str = "float32") -> keras.layers.Layer:
    config = dict(case.config)
    config.setdefault("name", LAYER_NAME)
    if policy != "float32":
        config["dtype"] = policy
    return layer_class(case.spec)(**config)


def input_dtype(tensor: dict[str, Any]) -> str:
    return tensor.get("dtype", "float32")


def symbolic_inputs(
    case: spec_lib.Case, static_batch: bool = False
) -> list[keras.KerasTensor]:
    """The case's inputs as `keras.Input`s; the batch axis is `None` unless
    `static_batch` fixes it to the case's batch size."""
    return [
        keras.Input(
            shape=tuple(t["shape"][1:]),
            batch_size=t["shape"][0] if static_batch else None,
            dtype=input_dtype(t),
            name=k,
        )
        for k, t in case.inputs.items()
    ]


def concrete_inputs(
    case: spec_lib.Case, arrays: dict[str, np.ndarray] | None = None
) -> list[Any]:
    arrays = arrays if arrays is not None else case.input_arrays()
    return [
        keras.ops.convert_to_tensor(arrays[k].astype(input_dtype(t)))
        for k, t in case.inputs.items()
    ]


def split(case: spec_lib.Case, inputs: list[Any]) -> tuple[Any, dict[str, Any]]:
    """The layer's first call argument and its tensor keyword arguments.

    The first argument is one tensor for `call_format: single`, else a list.
    """
    positional, tensor_kwargs = case.split_inputs(inputs)
    first = positional[0] if case.spec.call_format == "single" else positional
    return first, tensor_kwargs


def call_kwargs(case: spec_lib.Case, layer: keras.layers.Layer) -> dict[str, Any]:
    """The case's call kwargs, plus `training` when `layer.call` takes it."""
    kwargs = dict(case.call_kwargs)
    if "training" in inspect.signature(layer.call).parameters:
        kwargs["training"] = case.training
    return kwargs


def call_args(
    layer: keras.layers.Layer, case: spec_lib.Case, inputs: list[Any]
) -> tuple[Any, dict[str, Any]]:
    """`(first_argument, kwargs)` for calling `layer` (or its stateless_call)."""
    first, tensor_kwargs = split(case, inputs)
    return first, {**tensor_kwargs, **call_kwargs(case, layer)}


def call(layer: keras.layers.Layer, case: spec_lib.Case, inputs: list[Any]) -> Any:
    first, kwargs = call_args(layer, case, inputs)
    return layer(first, **kwargs)


def with_values(inputs: list[Any], indices: list[int], values: list[Any]) -> list[Any]:
    """A copy of `inputs` with `values` at `indices` (the differentiated inputs)."""
    args = list(inputs)
    for i, value in zip(indices, values, strict=True):
        args[i] = value
    return args


def vjp(
    value_and_gradients: Any,
    layer: keras.layers.Layer,
    case: spec_lib.Case,
    inputs: list[Any],
    float_idx: list[int],
    cotangents: list[np.ndarray],
    compiled: bool,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Gradients of `sum(outputs * cotangents) + sum(losses)` with respect to
    the inputs at `float_idx` and to `layer.trainable_variables`, as NumPy,
    by a backend adapter's `value_and_gradients`."""
    ntv = [v.value for v in layer.non_trainable_variables]
    n = len(float_idx)

    def objective(*args: Any) -> Any:
        first, kwargs = call_args(layer, case, with_values(inputs, float_idx, args[:n]))
        outputs, _, losses = layer.stateless_call(
            list(args[n:]), ntv, first, return_losses=True, **kwargs
        )
        total = sum(
            keras.ops.sum(
                keras.ops.cast(o, "float32") * keras.ops.convert_to_tensor(c, "float32")
            )
            for o, c in zip(flatten(outputs), cotangents, strict=True)
        )
        return total + sum(losses)

    args = [inputs[i] for i in float_idx] + [v.value for v in layer.trainable_variables]
    _, grads = value_and_gradients(objective, args, compiled=compiled)
    return grads[:n], grads[n:]


def model_inputs(inputs: list[Any]) -> Any:
    """Inputs as the functional model built by `functional_model` takes them."""
    return inputs[0] if len(inputs) == 1 else list(inputs)


def build(layer: keras.layers.Layer, case: spec_lib.Case) -> Any:
    """Builds the layer with a symbolic call (no state updates happen)."""
    return call(layer, case, symbolic_inputs(case))


def relative_path(layer: keras.layers.Layer, variable: Any) -> str:
    prefix = layer.name + "/"
    path = variable.path
    return path[len(prefix) :] if path.startswith(prefix) else path


def variables_by_path(layer: keras.layers.Layer) -> dict[str, Any]:
    return {relative_path(layer, v): v for v in layer.weights}


def assign_weights(layer: keras.layers.Layer, case: spec_lib.Case) -> None:
    variables = variables_by_path(layer)
    arrays = case.weight_arrays()
    missing = set(arrays) - set(variables)
    extra = set(variables) - set(arrays)
    if missing or extra:
        raise AssertionError(
            f"weight paths differ from the spec: missing in layer {sorted(missing)}, "
            f"not in spec {sorted(extra)}"
        )
    for path, value in arrays.items():
        var = variables[path]
        if tuple(var.shape) != value.shape:
            raise AssertionError(
                f"weight '{path}': shape {tuple(var.shape)} != spec {value.shape}"
            )
        var.assign(value.astype(var.dtype))


def ready_layer(case: spec_lib.Case, policy: str = "float32") -> keras.layers.Layer:
    layer = make_layer(case, policy)
    build(layer, case)
    assign_weights(layer, case)
    return layer


def flatten(outputs: Any) -> list[Any]:
    return list(keras.tree.flatten(outputs))


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(
        keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))
        if keras.backend.standardize_dtype(x.dtype) in ("bfloat16", "float16")
        else keras.ops.convert_to_numpy(x)
    )


def functional_model(
    case: spec_lib.Case, layer: keras.layers.Layer, static_batch: bool = False
) -> keras.Model:
    inputs = symbolic_inputs(case, static_batch)
    outputs = call(layer, case, inputs)
    return keras.Model(model_inputs(inputs), outputs)


def save_model(case: spec_lib.Case, path: Any) -> keras.Model:
    """The case's layer, with the spec's weights, in a model saved to `path`."""
    model = functional_model(case, ready_layer(case))
    model.save(path)
    return model


def run_model(model: keras.Model, case: spec_lib.Case, inputs: Any = None) -> Any:
    """`model` on the case's inputs, in the case's training mode."""
    inputs = concrete_inputs(case) if inputs is None else inputs
    return model(model_inputs(inputs), training=case.training)


def weights_of(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: to_numpy(v.value) for v in model.weights}


def assert_same_weights(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str
) -> None:
    """Identical paths and bit-identical values (a save/load must not round)."""
    assert sorted(got) == sorted(want), (
        f"{what}: weight paths {sorted(got)} != {sorted(want)}"
    )
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{what}: {key}")
