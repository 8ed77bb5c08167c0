"""Float64 references for the behaviour-sequence layers (DIN, DIEN, AGRU).

Written from the manual (sections feature_seq and agru) and the DIN / DIEN
papers. Masks arrive as keyword arguments; a padded step keeps the recurrent
state and gets no attention.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conformance.reference import common

Result = dict[str, Any]


def _bool_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    return mask.astype(np.float64) >= 1.0


def _mlp(
    x: np.ndarray,
    weights: dict[str, np.ndarray],
    prefix: str,
    n: int,
    hidden: str | None,
) -> np.ndarray:
    """Weight-normalized MLP; `hidden` on all but the last layer (linear)."""
    for i in range(n):
        w = common.weight_norm(
            weights[f"{prefix}/dense_{i}/kernel"],
            weights[f"{prefix}/dense_{i}/kernel_norm"],
        )
        x = x @ w + weights[f"{prefix}/dense_{i}/bias"]
        if i < n - 1:
            x = common.activation(hidden, x)
    return x


def din(inputs, weights, config, training, mask=None, **_) -> Result:
    q, k = inputs
    b, t, h = k.shape
    m = _bool_mask(mask, (b, t))
    qt = np.repeat(q[:, None, :], t, axis=1)
    z = np.concatenate([qt, k, qt - k, qt * k], axis=-1)
    hidden = config.get("activation") or "linear"
    w = _mlp(z, weights, "compress_tower", len(config["hidden_units"]), hidden)
    if config.get("decay", False):
        w = w / np.sqrt(h)
    w = np.where(m[..., None], w, 0.0)
    if config.get("mode", "sum") == "sum":
        return {"outputs": [np.sum(w * k, axis=1)]}
    return {"outputs": [k * w]}
