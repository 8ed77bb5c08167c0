"""References for the feature-transform layers: AutoInt and SeNet.

Semantics: the reference library's manual for these layers (section
feature_trans) and the papers (AutoInt, SENet); where this package deviates
from the reference library, the decision is recorded in each spec's
`deviations` list. Row-vector convention.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conformance.reference import common

Result = dict[str, Any]


def _merge(x: Any, out_type: str | None, keep_list: bool) -> list[np.ndarray]:
    """Flattened outputs of merging fields (a (B, F, D) array or a list)."""
    if isinstance(x, list):
        if out_type == "concat":
            return [np.concatenate(x, axis=1)]
        if out_type == "stack":
            return [np.stack(x, axis=1)]
        return list(x)
    if out_type == "concat":
        return [x.reshape(x.shape[0], -1)]
    if out_type == "stack":
        return [x]
    return [x[:, i] for i in range(x.shape[1])]


def autoint(inputs, weights, config, training, **_) -> Result:
    """coeff = softmax(X Xᵀ); O = coeff X (manual), or the paper's heads."""
    (x,) = inputs  # (B, F, D)
    units = config.get("attention_units")
    heads = config.get("head_num", 1)
    residual = config.get("use_residual", False)
    relu = config.get("use_relu", False)
    scaling = config.get("scaling", False)
    for i in range(config.get("layer_num", 1)):
        if units is None:
            logits = np.einsum("bfd,bgd->bfg", x, x)
            if scaling:
                logits = logits / np.sqrt(x.shape[-1])
            out = common.softmax(logits, axis=-1) @ x
            if residual:
                out = out + x
        else:
            q = x @ weights[f"query_kernel_{i}"]
            k = x @ weights[f"key_kernel_{i}"]
            v = x @ weights[f"value_kernel_{i}"]
            parts = []
            for h in range(heads):
                cols = slice(h * units, (h + 1) * units)
                logits = np.einsum("bfa,bga->bfg", q[..., cols], k[..., cols])
                if scaling:
                    logits = logits / np.sqrt(units)
                parts.append(common.softmax(logits, axis=-1) @ v[..., cols])
            out = np.concatenate(parts, axis=-1)
            if residual:
                out = out + x @ weights[f"residual_kernel_{i}"]
        if relu:
            out = np.maximum(out, 0.0)
        x = out
    return {
        "outputs": _merge(
            x, config.get("out_type", "concat"), config.get("keep_list", False)
        )
    }


def se_net(inputs, weights, config, training, **_) -> Result:
    """w = sigmoid(relu(mean(X) W0 + b0) W1 + b1) (weight-normalized), Y = X * w."""
    stacked = len(inputs) == 1 and inputs[0].ndim == 3
    if stacked:
        squeezed = inputs[0].mean(axis=-1)  # (B, F)
    else:
        squeezed = np.concatenate([x.mean(axis=-1, keepdims=True) for x in inputs], 1)
    if config.get("cmp_dim") is None:
        w = squeezed
    else:
        h = squeezed
        for j, act in enumerate(("relu", "sigmoid")):
            p = f"cmp_tower/dense_{j}"
            k = common.weight_norm(weights[f"{p}/kernel"], weights[f"{p}/kernel_norm"])
            h = common.activation(act, h @ k + weights[f"{p}/bias"])
        w = h
    if stacked:
        y: Any = inputs[0] * w[:, :, None]
    else:
        y = [x * w[:, i : i + 1] for i, x in enumerate(inputs)]
    return {
        "outputs": _merge(
            y, config.get("out_type", "concat"), config.get("keep_list", False)
        )
    }
