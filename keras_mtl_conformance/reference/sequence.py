"""Float64 references for the behaviour-sequence layers (DIN, DIEN, AGRU).

Written from the manual (sections feature_seq and agru) and the DIN / DIEN
papers. Masks arrive as keyword arguments; a padded step keeps the recurrent
state and gets no attention.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_mtl_conformance.reference import common

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


def _gru_extractor(k, m, weights, prefix, act):
    """Keras GRU (reset_after=True, gate order z, r, h); padded steps carry h."""
    b, t, _ = k.shape
    kernel = weights[f"{prefix}/kernel"]
    rec = weights[f"{prefix}/recurrent_kernel"]
    bias = weights[f"{prefix}/bias"]
    u = rec.shape[0]
    h = np.zeros((b, u))
    out = []
    for step in range(t):
        xw = k[:, step] @ kernel + bias[0]
        hw = h @ rec + bias[1]
        z = common.sigmoid(xw[:, :u] + hw[:, :u])
        r = common.sigmoid(xw[:, u : 2 * u] + hw[:, u : 2 * u])
        cand = common.activation(act, xw[:, 2 * u :] + r * hw[:, 2 * u :])
        new = z * h + (1.0 - z) * cand
        h = np.where(m[:, step : step + 1], new, h)
        out.append(h)
    return np.stack(out, axis=1)


def _agru_step(x, h, a, weights, prefix, att_type, act):
    """AGRU / AUGRU step (DIEN paper): [r, u] = sigmoid([x, h] W_g + b_g)."""
    u_dim = h.shape[-1]
    gates = common.sigmoid(
        np.concatenate([x, h], -1) @ weights[f"{prefix}/gates_kernel"]
        + weights[f"{prefix}/gates_bias"]
    )
    r, u = gates[:, :u_dim], gates[:, u_dim:]
    c = common.activation(
        act,
        np.concatenate([x, r * h], -1) @ weights[f"{prefix}/candidate_kernel"]
        + weights[f"{prefix}/candidate_bias"],
    )
    a = a[:, None]
    if att_type == "AGRU":
        return (1.0 - a) * h + a * c
    ua = a * u
    return (1.0 - ua) * h + ua * c


def dien(inputs, weights, config, training, mask=None, **_) -> Result:
    q, k = inputs[0], inputs[1]
    b, t, _ = k.shape
    m = _bool_mask(mask, (b, t))
    act = config.get("activation", "relu")
    states = _gru_extractor(k, m, weights, "gru/gru_cell", act)
    target = q @ weights["attention_weight"].T
    logits = np.einsum("btu,bu->bt", states, target)
    logits = np.where(m, logits, -np.inf)
    att = np.zeros_like(logits)
    for i in range(b):
        if m[i].any():
            att[i] = np.where(m[i], common.softmax(logits[i]), 0.0)
    att_type = config.get("att_type", "AGRU").upper()
    h = np.zeros((b, states.shape[-1]))
    for step in range(t):
        new = _agru_step(
            states[:, step], h, att[:, step], weights, "augru_cell", att_type, act
        )
        h = np.where(m[:, step : step + 1], new, h)
    outputs = [h]
    if config.get("return_extractor_states", False):
        outputs.append(states)
    return {"outputs": outputs}


def dmr_u2i(inputs, weights, config, training, mask=None, **_) -> Result:
    """DMR user-to-item: positional attention pooling, element-wise output."""
    items, seq = inputs
    b, t, _ = seq.shape
    m = _bool_mask(mask, (b, t))
    c = seq @ weights["emb_weight"] + weights["pos_emb"][None] + weights["bias"]
    if config.get("use_tanh", False):
        c = np.tanh(c)
    logits = (c @ weights["z_weight"])[..., 0]
    alpha = np.zeros_like(logits)
    for i in range(b):
        if m[i].any():
            alpha[i, m[i]] = common.softmax(logits[i, m[i]])
    pooled = np.einsum("bt,btd->bd", alpha, seq)
    u = pooled @ weights["dense/kernel"] + weights["dense/bias"]
    u = common.activation(
        config.get("activation", "PReLU"), u, weights, prefix="dense_activation"
    )
    return {"outputs": [u * items]}
