"""References for the task-loss weighting layers.

Uncertainty weighting: Kendall, Gal and Cipolla, "Multi-Task Learning Using
Uncertainty to Weigh Losses for Scene Geometry and Semantics" (CVPR 2018),
Eq. 7 in the form `sum_i exp(-s_i) * L_i + s_i` with `s_i = log(sigma_i^2)`
(twice the paper's regression objective, the same minimiser), applied
element-wise.

GradNorm: the reference library's simplified GradNorm (Chen et al., ICML
2018 without the `r_i^alpha` target), with the gradient norms given as an
input; where this package deviates from the reference library, the decision
is recorded in the spec's `deviations` list.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Result = dict[str, Any]


def uncertainty_weighting(inputs, weights, config, training, **_) -> Result:
    s = np.asarray(weights["log_variances"], dtype=np.float64)
    if len(inputs) != s.shape[0]:
        raise ValueError(f"expected {s.shape[0]} losses, got {len(inputs)}")
    total = sum(
        np.exp(-s[i]) * np.asarray(x, np.float64) + s[i] for i, x in enumerate(inputs)
    )
    return {"outputs": [np.asarray(total, np.float64)]}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def grad_norm(inputs, weights, config, training, anchor=None, **_) -> Result:
    """`[gnorm_loss, weighted_loss]` from `[losses, grad_norms]`, theta `[n]`.

    `w = softmax(theta)`; `wn_i = stop_gradient(n_i) * w_i`;
    `avg = mean(wn)` (not stopped); `diff_i = |wn_i - avg|`, divided by
    `avg + epsilon` with `relative_diff`; `gnorm_loss = scale *
    sum(diff ** loss_pow)`; `weighted_loss = sum(L_i * stop_gradient(w_i))`.
    `stop_gradient(expr)` is `expr` at the anchor (`conformance.goldens`).
    """
    n = len(config["loss_names"])
    losses = np.asarray(inputs[0], np.float64).reshape(-1)
    theta = np.asarray(weights["grad_norm_weights"], np.float64)
    if losses.shape != (n,) or theta.shape != (n,):
        raise ValueError(f"expected {n} losses and weights, got {losses.shape}")
    stopped_inputs, stopped_weights = (inputs, weights) if anchor is None else anchor
    norms = np.asarray(stopped_inputs[1], np.float64).reshape(n)
    w = _softmax(theta)
    w_stopped = _softmax(np.asarray(stopped_weights["grad_norm_weights"], np.float64))

    weighted_norms = norms * w
    avg = np.sum(weighted_norms) / n
    diff = np.abs(weighted_norms - avg)
    if config.get("relative_diff", False):
        diff = diff / (avg + config.get("epsilon", 1e-6))
    gnorm_loss = config.get("scale", 1.0) * np.sum(diff ** config.get("loss_pow", 2.0))
    weighted_loss = np.sum(losses * w_stopped)
    return {"outputs": [np.float64(gnorm_loss), np.float64(weighted_loss)]}
