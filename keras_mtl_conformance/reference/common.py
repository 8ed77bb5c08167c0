"""Shared float64 helpers for the references: activations, weight norm, BN."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def sigmoid(x: np.ndarray) -> np.ndarray:
    return special.expit(x)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -softplus(-x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


# name -> function(x, weights) ; weights holds e.g. PReLU's alpha
_FUNCTIONS = {
    "exponential": lambda x: np.exp(x),
    "gelu": lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "linear": lambda x: x,
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "sigmoid": sigmoid,
    "sigmoid2": lambda x: 2.0 * sigmoid(x),
    "softplus": softplus,
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "swish": lambda x: x * sigmoid(x),
    "tanh": np.tanh,
    "leakyrelu": lambda x: np.where(x > 0, x, 0.3 * x),
    "relu": lambda x: np.maximum(x, 0.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "softmax": lambda x: softmax(x, -1),
    "thresholdedrelu": lambda x: np.where(x > 1.0, x, 0.0),
}
_FUNCTIONS["hardsigmoid"] = _FUNCTIONS["hard_sigmoid"]


def activation(
    name: str | None,
    x: np.ndarray,
    weights: dict[str, np.ndarray] | None = None,
    prefix: str = "activation",
) -> np.ndarray:
    """Applies a registry activation by (case-insensitive) name."""
    if name is None:
        return x
    key = name.lower()
    if key == "prelu":
        alpha = (weights or {})[f"{prefix}/alpha"]
        return np.where(x > 0, x, alpha * x)
    return _FUNCTIONS[key](x)


def weight_norm(
    w: np.ndarray, g: np.ndarray | None, epsilon: float = 1e-6
) -> np.ndarray:
    """`w[:, j] / sqrt(max(sum_i w[i, j]^2, eps)) * g[j]` (Salimans & Kingma)."""
    sq = np.sum(w * w, axis=0, keepdims=True)
    k = w / np.sqrt(np.maximum(sq, epsilon))
    return k if g is None else k * g[None, :]


def batch_norm(
    x: np.ndarray,
    weights: dict[str, np.ndarray],
    prefix: str,
    training: bool,
    momentum: float,
    epsilon: float = 1e-3,
    updates: dict[str, Any] | None = None,
) -> np.ndarray:
    """Keras BatchNormalization over the last axis (biased batch variance)."""
    gamma = weights[f"{prefix}/gamma"]
    beta = weights[f"{prefix}/beta"]
    moving_mean = weights[f"{prefix}/moving_mean"]
    moving_var = weights[f"{prefix}/moving_variance"]
    if training:
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axis=axes)
        var = ((x - mean) ** 2).mean(axis=axes)
        if updates is not None:
            updates[f"{prefix}/moving_mean"] = moving_mean * momentum + mean * (
                1.0 - momentum
            )
            updates[f"{prefix}/moving_variance"] = moving_var * momentum + var * (
                1.0 - momentum
            )
    else:
        mean, var = moving_mean, moving_var
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta
