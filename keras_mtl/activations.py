"""Activation registry: `get`, `serialize` and `deserialize` by case-insensitive name.

The registry mirrors the reference library's table of activation names (see
`specs/activation/spec.yaml`): look-ups are case-insensitive, `sigmoid2`
(`2 * sigmoid(x)`) is available and survives serialization, and unknown names
raise `ValueError` instead of being evaluated as Python code.

Stateless activations resolve to functions; activations that carry weights or
constructor arguments (`prelu`, `leakyrelu`, `elu`, `relu`, `softmax`,
`thresholdedrelu`) resolve to a new Keras layer instance on every `get`, so two
layers never share an activation's weights by accident.
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
class ThresholdedReLU(keras.layers.Layer):
    """`x` where `x > theta`, else 0 (removed from Keras 3, kept for the registry).

    Args:
        theta: float. Threshold location. Defaults to `1.0`.
        **kwargs: Args to pass to the base class.
    """

    def __init__(self, theta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if theta < 0:
            raise ValueError(f"`theta` must be non-negative. Received: theta={theta}")
        self.theta = float(theta)
        self.built = True

    def call(self, inputs: Any) -> Any:
        return ops.where(inputs > self.theta, inputs, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"theta": self.theta})
        return config


def _layer_factories() -> dict[str, Callable[[], keras.layers.Layer]]:
    layers = keras.layers
    return {
        "leakyrelu": lambda: layers.LeakyReLU(negative_slope=0.3),
        "relu": lambda: layers.ReLU(),
        "elu": lambda: layers.ELU(alpha=1.0),
        "softmax": lambda: layers.Softmax(axis=-1),
        "thresholdedrelu": lambda: ThresholdedReLU(theta=1.0),
        "prelu": lambda: layers.PReLU(alpha_initializer="zeros"),
    }


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
    activation: Callable[..., Any] | None, name: str | None = None
) -> Callable[..., Any] | None:
    """An unshared copy of a layer activation (renamed to `name` if given).

    Functions are returned as they are.
    """
    if isinstance(activation, keras.layers.Layer):
        config = activation.get_config()
        if name is not None:
            config["name"] = name
        return activation.__class__.from_config(config)
    return activation


def name_of(activation: Callable[..., Any] | None) -> str | None:
    """The registry name of a function activation or Keras builtin, else `None`."""
    if activation is None:
        return None
    for name, fn in _functions().items():
        if activation is fn:
            return name
    if activation is keras.activations.relu:
        return "relu"
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
    "ThresholdedReLU",
    "deserialize",
    "gelu",
    "get",
    "hard_sigmoid",
    "serialize",
    "sigmoid2",
]
