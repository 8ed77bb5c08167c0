"""References for the core layers: AddBias, Dense, MLP, pooling, LayerNorm,
LogitCorrection, Activation and MergeTensorList.

Semantics: the reference library's for these layers (LayerNorm: Ba et al.,
2016); where this package deviates from the reference library, the decision is
recorded in each spec's `deviations` list.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_mtl_conformance.reference import common

Result = dict[str, Any]


def add_bias(inputs, weights, config, training, **_) -> Result:
    (x,) = inputs
    b = weights["bias"]
    if config.get("data_format", "channels_last") == "channels_first" and x.ndim > 2:
        b = b.reshape((1, -1) + (1,) * (x.ndim - 2))
    return {"outputs": [x + b]}


def dense(inputs, weights, config, training, **_) -> Result:
    (x,) = inputs
    w = weights["kernel"]
    if config.get("allow_kernel_norm", False):
        w = common.weight_norm(w, weights["kernel_norm"])
    y = x @ w
    if config.get("use_bias", True):
        y = y + weights["bias"]
    y = common.activation(config.get("activation"), y, weights)
    result: Result = {"outputs": [y]}
    if config.get("inactive_relu_monitor", False) and training:
        decay = config.get("inactive_relu_monitor_decay", 0.1)
        axes = tuple(range(y.ndim - 1))
        inactive = (y <= 0).mean(axis=axes)
        old = weights["inactive_relu_moving_avg"]
        result["updates"] = {
            "inactive_relu_moving_avg": (1 - decay) * old + decay * inactive
        }
    return result


def _mlp_activations(spec: Any, n: int) -> list[Any]:
    if isinstance(spec, list):
        return spec
    hidden = "relu" if spec is None else spec
    return [hidden] * (n - 1) + [None]


def mlp(inputs, weights, config, training, **_) -> Result:
    (x,) = inputs
    dims = config["output_dims"]
    n = len(dims)
    acts = _mlp_activations(config.get("activations"), n)
    weight_norm = config.get("use_weight_norm", True)
    use_bias = config.get("use_bias", True)
    bn = config.get("enable_batch_normalization", False)
    momentum = config.get("batch_normalization_momentum", 0.99)
    updates: dict[str, np.ndarray] = {}
    if bn:
        x = common.batch_norm(
            x, weights, "batch_norm_in", training, momentum, updates=updates
        )
    for i in range(n):
        w = weights[f"dense_{i}/kernel"]
        if weight_norm:
            w = common.weight_norm(w, weights[f"dense_{i}/kernel_norm"])
        x = x @ w
        if use_bias:
            x = x + weights[f"dense_{i}/bias"]
        if bn and i < n - 1:
            x = common.batch_norm(
                x, weights, f"batch_norm_{i}", training, momentum, updates=updates
            )
        x = common.activation(acts[i], x, weights, prefix=f"activation_{i}")
    result: Result = {"outputs": [x]}
    if updates:
        result["updates"] = updates
    return result


def sum_pooling(inputs, weights, config, training, **_) -> Result:
    return {"outputs": [np.sum(np.stack(inputs), axis=0)]}


def avg_pooling(inputs, weights, config, training, **_) -> Result:
    return {"outputs": [np.mean(np.stack(inputs), axis=0)]}


def max_pooling(inputs, weights, config, training, **_) -> Result:
    return {"outputs": [np.max(np.stack(inputs), axis=0)]}


def layer_norm(inputs, weights, config, training, **_) -> Result:
    (x,) = inputs
    eps = config.get("epsilon", 1e-6)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * weights["gamma"] + weights["beta"]
    return {"outputs": [y]}


def logit_correction(inputs, weights, config, training, **_) -> Result:
    logits = inputs[0]
    rate = inputs[1] if len(inputs) > 1 else None
    z = common.log_sigmoid(logits) if config.get("sample_bias", False) else logits
    if rate is not None:
        z = z - np.log(rate)
    return {"outputs": [common.activation(config.get("activation"), z, weights)]}


def activation(inputs, weights, config, training, **_) -> Result:
    (x,) = inputs
    return {"outputs": [common.activation(config["activation"], x, weights)]}


def merge_tensor_list(inputs, weights, config, training, **_) -> Result:
    merge_type = config.get("merge_type", "concat")
    num_feature = config.get("num_feature")
    axis = config.get("axis", 1)
    # keep_list only wraps a tensor in a list: the flattened outputs are equal.
    if len(inputs) > 1:
        if merge_type == "stack":
            return {"outputs": [np.stack(inputs, axis=axis)]}
        if merge_type == "concat":
            return {"outputs": [np.concatenate(inputs, axis=axis)]}
        return {"outputs": list(inputs)}
    (x,) = inputs
    if x.ndim == 3:
        if merge_type == "stack":
            return {"outputs": [x]}
        if merge_type == "concat":
            return {"outputs": [x.reshape(x.shape[0], -1)]}
        return {"outputs": [np.take(x, i, axis=axis) for i in range(x.shape[axis])]}
    if num_feature and num_feature > 1:
        if merge_type == "concat":
            return {"outputs": [x]}
        stacked = x.reshape(x.shape[0], num_feature, -1)
        if merge_type == "stack":
            return {"outputs": [stacked]}
        return {
            "outputs": [
                np.take(stacked, i, axis=axis) for i in range(stacked.shape[axis])
            ]
        }
    return {"outputs": [x]}
