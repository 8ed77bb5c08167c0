"""Activation registry: `get`, `serialize` and `deserialize` by case-insensitive name.

The registry mirrors the reference library's table of activation names (see
`specs/activation/spec.yaml`): look-ups are case-insensitive, `sigmoid2`
(`2 * sigmoid(x)`) is available and survives serialization, and unknown names
raise `ValueError` instead of being evaluated as Python code.

Stateless activations resolve to functions; `prelu`, which carries weights,
resolves to a new `keras.layers.PReLU` on every `get`, so two layers never
share an activation's weights by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

ActivationLike = str | dict[str, Any] | Callable[..., Any] | None


@keras.saving.register_keras_serializable(package="keras_mtl")
def sigmoid2(x: Any) -> Any:
    """`2 * sigmoid(x)`, with range (0, 2); the LHUC gate activation."""
    return 2.0 * ops.sigmoid(x)


@keras.saving.register_keras_serializable(package="keras_mtl")
def gelu(x: Any) -> Any:
    """Exact GELU, `x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))`."""
    return keras.activations.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="keras_mtl")
def hard_sigmoid(x: Any) -> Any:
    """Keras 3 hard sigmoid, `clip(x / 6 + 0.5, 0, 1)`.

    The reference library (TF 2.4) used a slope of 0.2; Keras 3 and PyTorch
    use 1/6. This follows Keras 3 (a recorded deviation).
    """
    return keras.activations.hard_sigmoid(x)


@keras.saving.register_keras_serializable(package="keras_mtl")
def leakyrelu(x: Any) -> Any:
    """Leaky ReLU with the reference slope 0.3 for negative inputs."""
    return keras.activations.leaky_relu(x, negative_slope=0.3)


@keras.saving.register_keras_serializable(package="keras_mtl")
def thresholdedrelu(x: Any) -> Any:
    """`x` where `x > 1`, else 0 (Keras 2's ThresholdedReLU with theta=1)."""
    return ops.where(x > 1.0, x, ops.zeros_like(x))


def _layer_factories() -> dict[str, Callable[[], keras.layers.Layer]]:
    # Only activations with weights are layers; the rest are functions, which
    # follow the caller's dtype policy without extra plumbing.
    return {"prelu": lambda: keras.layers.PReLU(alpha_initializer="zeros")}


def _functions() -> dict[str, Callable[[Any], Any]]:
    acts = keras.activations
    return {
        "exponential": acts.exponential,
        "gelu": gelu,
        "hard_sigmoid": hard_sigmoid,
        "hardsigmoid": hard_sigmoid,
        "linear": acts.linear,
        "selu": acts.selu,
        "sigmoid": acts.sigmoid,
        "sigmoid2": sigmoid2,
        "softplus": acts.softplus,
        "softsign": acts.softsign,
        "swish": acts.silu,
        "tanh": acts.tanh,
        "leakyrelu": leakyrelu,
        "relu": acts.relu,
        "elu": acts.elu,
        "softmax": acts.softmax,
        "thresholdedrelu": thresholdedrelu,
    }


# Names that resolve to a stateless function unless the caller asks for a layer.
FUNCTION_NAMES = frozenset(_functions())
# Names that resolve to a fresh layer instance.
LAYER_NAMES = frozenset(_layer_factories())
ALL_ACTIVATION_NAMES = FUNCTION_NAMES | LAYER_NAMES


def get(identifier: ActivationLike) -> Callable[..., Any] | None:
    """Resolves an activation identifier.

    Args:
        identifier: `None`, a registry name (case-insensitive), a serialized
            dict produced by `serialize`, a Keras layer instance or a callable.

    Returns:
        `None` for `None`; otherwise a callable (a function or a new layer).

    Raises:
        ValueError: for unknown names or unsupported identifiers.
    """
    if identifier is None:
        return None
    if isinstance(identifier, str):
        key = identifier.lower()
        functions = _functions()
        if key in functions:
            return functions[key]
        factories = _layer_factories()
        if key in factories:
            return factories[key]()
        raise ValueError(
            "Unknown activation. Expected one of "
            f"{sorted(ALL_ACTIVATION_NAMES)} (case-insensitive), None, a dict "
            f"from `serialize` or a callable. Received: activation={identifier!r}"
        )
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(
        "Expected an activation name, dict, callable or None. "
        f"Received: activation={identifier!r} of type {type(identifier).__name__}"
    )


def get_named(name: str, identifier: ActivationLike) -> Callable[..., Any] | None:
    """`get` for the constructor argument `name`: its errors name it."""
    try:
        return get(identifier)
    except (ValueError, TypeError) as error:
        raise ValueError(f"`{name}`: {error} Received: {name}={identifier!r}") from None


def get_function(name: str, identifier: ActivationLike) -> Callable[..., Any] | None:
    """`get`, restricted to activations without weights.

    Layers whose experts are stacked into one tensor cannot hold a separate
    activation layer (e.g. PReLU) per expert.

    Raises:
        ValueError: naming `name` for activations that are layers.
    """
    activation = get_named(name, identifier)
    if isinstance(activation, keras.layers.Layer):
        raise ValueError(
            f"`{name}` must be an activation without weights (stacked experts "
            f"cannot share one activation layer). Received: {name}={identifier!r}"
        )
    return activation


def serialize(activation: Callable[..., Any] | None) -> str | dict[str, Any] | None:
    """Serializes an activation for `get_config`.

    Registry functions serialize to their registry name; layers and other
    registered callables to a Keras serialization dict. `deserialize` and
    `get` accept either form.

    Raises:
        ValueError: for callables that cannot be serialized (e.g. lambdas).
    """
    if activation is None:
        return None
    for name, fn in _functions().items():
        if activation is fn and name != "hardsigmoid":
            return name
    if isinstance(activation, keras.layers.Layer):
        return keras.saving.serialize_keras_object(activation)
    if getattr(activation, "__name__", "") == "<lambda>":
        raise ValueError(
            "Cannot serialize a lambda activation; pass a registry name or a "
            "function registered with `keras.saving.register_keras_serializable`. "
            f"Received: activation={activation!r}"
        )
    return keras.saving.serialize_keras_object(activation)


def deserialize(config: str | dict[str, Any] | None) -> Callable[..., Any] | None:
    """Inverse of `serialize`."""
    if config is None:
        return None
    if isinstance(config, str):
        if config.lower() in ALL_ACTIVATION_NAMES:
            return get(config)
        return keras.activations.get(config)
    if isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    raise ValueError(
        "Expected a serialized activation (str, dict or None). "
        f"Received: config={config!r}"
    )


def clone(
    activation: Callable[..., Any] | None,
    name: str | None = None,
    dtype: Any = None,
) -> Callable[..., Any] | None:
    """An unshared copy of a layer activation, optionally renamed and re-typed.

    Functions are returned as they are.
    """
    if isinstance(activation, keras.layers.Layer):
        config = activation.get_config()
        if name is not None:
            config["name"] = name
        if dtype is not None:
            config["dtype"] = keras.dtype_policies.serialize(
                keras.dtype_policies.get(dtype)
            )
        return activation.__class__.from_config(config)
    return activation


def name_of(activation: Callable[..., Any] | None) -> str | None:
    """The registry name of a function activation or Keras builtin, else `None`."""
    if activation is None:
        return None
    for name, fn in _functions().items():
        if activation is fn:
            return name
    if isinstance(activation, keras.layers.ReLU):
        cfg = activation.get_config()
        plain = (
            cfg.get("max_value") is None
            and not cfg.get("negative_slope")
            and not cfg.get("threshold")
        )
        return "relu" if plain else None
    return None


__all__ = [
    "ALL_ACTIVATION_NAMES",
    "deserialize",
    "gelu",
    "get",
    "hard_sigmoid",
    "leakyrelu",
    "serialize",
    "sigmoid2",
    "thresholdedrelu",
]
