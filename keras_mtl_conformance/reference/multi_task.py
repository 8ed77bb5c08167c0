"""References for the multi-task layers: MMoE, CGC, PLE, SNR, GradNorm and
UncertaintyWeighting.

Semantics: Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts" (KDD 2018); Shazeer et al., "Outrageously Large
Neural Networks" (2017) for top-k gating and the CV² importance loss; Ma et
al., "SNR: Sub-Network Routing for Flexible Parameter Sharing in Multi-Task
Learning" (AAAI 2019) and Louizos et al., "Learning Sparse Neural Networks
through L0 Regularization" (2018) for hard-concrete gates. Layer-specific
conventions (weight layout, expert MLP rules) are the reference library's for
these layers; where this package deviates from it, the decision is recorded in
the spec's `deviations` list.
Stochastic paths (gate noise, hard-concrete sampling) are not referenced here.

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

import json
import math
from typing import Any

import numpy as np

from keras_mtl_conformance.reference import common

Result = dict[str, Any]


CV_EPSILON = 1e-10


# --- MMoE ---------------------------------------------------------------------


def _per_expert(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _mmoe_experts(config: dict[str, Any]) -> tuple[int, list[list[int]], list[Any]]:
    dims = config["expert_output_dims"]
    per_expert = all(isinstance(d, (list, tuple)) for d in dims)
    acts = config["expert_activations"]
    inits = config.get("expert_initializers", "glorot_uniform")
    n = config.get("num_experts")
    if n is None:
        if per_expert:
            n = len(dims)
        elif isinstance(acts, (list, tuple)):
            n = len(acts)
        else:
            n = len(inits)
    all_dims = [list(d) for d in dims] if per_expert else [list(dims)] * n
    return n, all_dims, _per_expert(acts, n)


def _expert_mlp(
    x: np.ndarray,
    dims: list[int],
    act: str | None,
    params: dict[str, np.ndarray],
    config: dict[str, Any],
    training: bool,
    updates: dict[str, np.ndarray],
) -> np.ndarray:
    """One expert MLP: [BN_in] -> (Dense -> [BN] -> act)* -> Dense (linear).

    Hidden layers use `act`; `params` holds this expert's weights by path
    relative to the expert (`dense_{i}/kernel`, `batch_norm_in/gamma`, ...).
    """
    bn = config.get("enable_batch_normalization", False)
    momentum = config.get("batch_normalization_momentum", 0.99)
    if bn:
        x = common.batch_norm(
            x, params, "batch_norm_in", training, momentum, updates=updates
        )
    for i in range(len(dims)):
        w = params[f"dense_{i}/kernel"]
        if config.get("use_weight_norm", True):
            w = common.weight_norm(w, params[f"dense_{i}/kernel_norm"])
        x = x @ w
        if config.get("use_bias", True):
            x = x + params[f"dense_{i}/bias"]
        if i < len(dims) - 1:
            if bn:
                x = common.batch_norm(
                    x, params, f"batch_norm_{i}", training, momentum, updates=updates
                )
            x = common.activation(act, x)
    return x


def _top_k_renormalize(p: np.ndarray, k: int) -> np.ndarray:
    """Keeps the k largest entries per row (ties: lower index), renormalizes."""
    order = np.argsort(-p, axis=-1, kind="stable")
    mask = np.zeros_like(p)
    np.put_along_axis(mask, order[..., :k], 1.0, axis=-1)
    kept = p * mask
    return kept / kept.sum(axis=-1, keepdims=True)


def _cv_squared(v: np.ndarray) -> np.ndarray:
    return v.var(axis=-1) / (v.mean(axis=-1) ** 2 + CV_EPSILON)


def mmoe(inputs, weights, config, training, **_) -> Result:
    """MMoE with softmax / top-k gates (noise-free path)."""
    x = inputs[0]
    z = inputs[1] if len(inputs) > 1 else inputs[0]
    num_tasks = config["num_tasks"]
    n, dims, acts = _mmoe_experts(config)
    stacked = len({json.dumps(d) for d in dims}) == 1 and (
        len({json.dumps(a, sort_keys=True) for a in acts}) == 1
    )
    outs = []
    per_expert_updates = []
    for e in range(n):
        if stacked:
            # Stacked experts: slice e of [E, ...] weights; batch norm weights
            # are [E * d] (per expert and unit).
            params = {
                key[len("experts/") :]: (
                    value.reshape(n, -1)[e] if "batch_norm" in key else value[e]
                )
                for key, value in weights.items()
                if key.startswith("experts/")
            }
        else:
            prefix = f"expert_{e}/"
            params = {
                key[len(prefix) :]: value
                for key, value in weights.items()
                if key.startswith(prefix)
            }
        upd: dict[str, np.ndarray] = {}
        outs.append(_expert_mlp(x, dims[e], acts[e], params, config, training, upd))
        per_expert_updates.append(upd)
    updates: dict[str, np.ndarray] = {}
    for key in per_expert_updates[0]:
        if stacked:
            updates[f"experts/{key}"] = np.concatenate(
                [u[key] for u in per_expert_updates]
            )
        else:
            for e, u in enumerate(per_expert_updates):
                updates[f"expert_{e}/{key}"] = u[key]
    experts = np.stack(outs, axis=1)  # [B, E, D]
    logits = (z @ weights["gate_weight"]).reshape(-1, num_tasks, n)
    logits = logits / config.get("temperature", 1.0)
    gates = common.softmax(logits, axis=-1)  # [B, T, E]
    gate_type = config.get("gate_type", "softmax")
    losses = []
    if gate_type != "softmax":
        gates = _top_k_renormalize(gates, config.get("top_k", 1))
        importance = gates.sum(axis=0)  # [T, E]
        coef = config.get("balance_loss_weight", 1.0)
        losses.append(coef * float(np.sum(_cv_squared(importance))))
    mixed = np.einsum("bte,bed->btd", gates, experts)
    outputs = [mixed[:, t, :] for t in range(num_tasks)]
    if config.get("return_gates", False):
        outputs.append(gates)
    return {"outputs": outputs, "losses": losses, "updates": updates}


# --- SNR ----------------------------------------------------------------------


def snr(inputs, weights, config, training, **_) -> Result:
    """Sub-network routing with deterministic (inference) hard-concrete gates.

    `z_r = clip(sigmoid(log_alpha_r) * (zeta - gamma) + gamma, 0, 1)`,
    `y_j = sum_i z_ij * x_i @ W_ij` (route `r = i * num_out + j`), and the
    expected L0 penalty `l0_weight * sum_r sigmoid(log_alpha_r - beta *
    log(-gamma / zeta))`.
    """
    if training:
        raise ValueError("the SNR reference covers the deterministic path only")
    num_out = config["num_out_subnet"]
    d_out = config["out_subnet_dim"]
    zeta = config.get("zeta", 1.1)
    gamma = config.get("gamma", -0.1)
    beta = config.get("beta", 0.5)
    num_in = len(inputs)
    d_in = inputs[0].shape[-1]
    log_alpha = weights["log_alpha"].reshape(num_in, num_out)
    z = np.clip(common.sigmoid(log_alpha) * (zeta - gamma) + gamma, 0.0, 1.0)
    if config.get("snr_type", "trans") == "trans":
        w = weights["weight"].reshape(num_in, num_out, d_in, d_out)
    else:
        w = np.broadcast_to(np.eye(d_in), (num_in, num_out, d_in, d_out))
    outputs = []
    for j in range(num_out):
        y = sum(z[i, j] * (inputs[i] @ w[i, j]) for i in range(num_in))
        outputs.append(y)
    factor = beta * math.log(-gamma / zeta)
    l0 = float(np.sum(common.sigmoid(weights["log_alpha"] - factor)))
    return {"outputs": outputs, "losses": [config.get("l0_weight", 1.0) * l0]}


# --- CGC / PLE ----------------------------------------------------------------


def _layer_activations(spec: Any, n: int) -> list[Any]:
    """MLP rules: a list is per layer; a single value (None: relu) is used on
    the hidden layers and the last layer is linear."""
    if isinstance(spec, (list, tuple)):
        return list(spec)
    return ["relu" if spec is None else spec] * (n - 1) + [None]


def _cgc_level(
    groups: list[np.ndarray],
    weights: dict[str, np.ndarray],
    config: dict[str, Any],
    dims: list[int],
    shared_output: bool,
    prefix: str,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One extraction level (Tang et al., 2020, Sec. 4.2): task t mixes its own
    experts and the shared experts with g_t = softmax(x_t W_t / temperature);
    the optional shared gate mixes all experts from the shared input."""
    num_tasks = config["num_tasks"]
    m_task = config.get("num_task_experts", 1)
    m_task = list(m_task) if isinstance(m_task, list) else [m_task] * num_tasks
    m_shared = config.get("num_shared_experts", 1)
    acts = _layer_activations(config.get("expert_activations", "relu"), len(dims))
    temperature = config.get("temperature", 1.0)
    counts = m_task + [m_shared]
    owner = [g for g, n in enumerate(counts) for _ in range(n)]
    outs = []
    for e, g in enumerate(owner):
        x = groups[g]
        for i in range(len(dims)):
            base = f"{prefix}experts/dense_{i}/"
            w = weights[base + "kernel"][e]
            if config.get("use_weight_norm", True):
                w = common.weight_norm(w, weights[base + "kernel_norm"][e])
            x = x @ w
            if config.get("use_bias", True):
                x = x + weights[base + "bias"][e]
            x = common.activation(acts[i], x)
        outs.append(x)
    experts = np.stack(outs, axis=1)  # [B, E, D]
    num_experts = experts.shape[1]
    shared_start = sum(m_task)
    outputs, gates = [], []
    for t in range(num_tasks):
        start = sum(m_task[:t])
        index = list(range(start, start + m_task[t])) + list(
            range(shared_start, num_experts)
        )
        g = common.softmax(groups[t] @ weights[f"{prefix}task_gate_{t}"] / temperature)
        outputs.append(np.einsum("be,bed->bd", g, experts[:, index, :]))
        full = np.zeros((g.shape[0], num_experts))
        full[:, index] = g
        gates.append(full)
    if shared_output:
        g = common.softmax(groups[-1] @ weights[f"{prefix}shared_gate"] / temperature)
        outputs.append(np.einsum("be,bed->bd", g, experts))
        gates.append(g)
    return outputs, gates


def cgc(inputs, weights, config, training, **_) -> Result:
    """Customized Gate Control; one input, or [task_0..task_{T-1}, shared]."""
    groups = (
        list(inputs) if len(inputs) > 1 else [inputs[0]] * (config["num_tasks"] + 1)
    )
    outputs, gates = _cgc_level(
        groups,
        weights,
        config,
        config["expert_output_dims"],
        config.get("shared_output", False),
        "",
    )
    if config.get("return_gates", False):
        outputs.append(np.stack(gates, axis=1))
    return {"outputs": outputs, "losses": []}


def ple(inputs, weights, config, training, **_) -> Result:
    """Progressive Layered Extraction: CGC levels; level j > 0 reads the task
    and shared outputs of level j - 1; the last level has no shared output."""
    num_tasks = config["num_tasks"]
    levels = config.get("num_levels", 2)
    dims = config["expert_output_dims"]
    if not all(isinstance(d, list) for d in dims):
        dims = [dims] * levels
    groups = list(inputs) if len(inputs) > 1 else [inputs[0]] * (num_tasks + 1)
    level_gates = []
    for j in range(levels):
        groups, gates = _cgc_level(
            groups, weights, config, dims[j], j < levels - 1, f"level_{j}/"
        )
        level_gates.append(np.stack(gates, axis=1))  # [B, T (+1 shared), E_j]
    if config.get("return_gates", False):
        groups += level_gates
    return {"outputs": groups, "losses": []}


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
    `stop_gradient(expr)` is `expr` at the anchor (`keras_mtl_conformance.goldens`).
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
