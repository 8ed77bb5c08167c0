"""References for the token-routed MoE layers: SparseMoE and HierarchicalMoE.

Semantics: Shazeer et al., "Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer" (2017) for noisy top-k gating, the
CV² importance/load losses and the normal-CDF load estimator (T2T
`expert_utils.noisy_top_k_gating` / `_prob_in_top_k`); Lepikhin et al.,
"GShard" (2020) and Mesh-TensorFlow `moe.py` for capacity, groups and
choice-major position-in-expert priority; Fedus et al., "Switch Transformers"
(2021) for the E·Σ f·P balance loss; Zoph et al., "ST-MoE" (2022) for the
router z-loss; Mesh-TF `transformer_moe_layer_v2` and `_top_2_gating` for the
2-level hierarchical MoE. The exact formulas are stated in each spec's
description; everything is recomputed here in float64 from them.
Random paths (jitter, sampled router noise, sampled second-expert uniforms)
are referenced only when the random numbers are passed in as call arguments.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from keras_mtl_conformance.reference import common

Result = dict[str, Any]
CV_EPSILON = 1e-10
NOISE_EPSILON = 1e-2


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF."""
    return 0.5 * (1.0 + special.erf(x / math.sqrt(2.0)))


def _cv_squared(v: np.ndarray) -> float:
    return float(v.var() / (v.mean() ** 2 + CV_EPSILON))


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def _nonpad(mask: Any, lead: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(int(np.prod(lead)), dtype=bool)
    m = np.asarray(mask)
    if m.shape != lead:
        raise ValueError(f"mask shape {m.shape} != inputs.shape[:-1] {lead}")
    return m.reshape(-1) != 0


# --- SparseMoE ------------------------------------------------------------------


def _hidden_units(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def sparse_route(x, weights, config, training, mask=None, router_noise=None):
    """Routing of SparseMoE for tokens `x [T, d]` (all float64).

    Returns a dict with `probs`, `route`, `logits`, `std` (or None), `idx`
    [T, k], `gates` [T, k], `keep` [T, k], `nonpad` [T], `capacity`,
    `group_size`, `num_groups`.
    """
    num_tokens = x.shape[0]
    num_experts = int(config["num_experts"])
    k = int(config.get("top_k", 2))
    gate_type = config.get("gate_type", "softmax")
    noisy = gate_type == "noise_topk"
    nonpad = np.ones(num_tokens, bool) if mask is None else np.asarray(mask, bool)

    # 1. groups (contiguous; padding tokens to G*S are masked and never route)
    group_size = config.get("group_size")
    if group_size is None:
        s, g = num_tokens, 1
    else:
        s = int(group_size)
        g = -(-num_tokens // s)
        if num_tokens % s and not config.get("pad_to_group", True):
            raise ValueError(f"group_size={s} does not divide {num_tokens} tokens")

    # 2. capacity per group and expert; a factor of None is dropless (every
    # assignment kept, whatever the grouping)
    if training:
        cf = config.get("capacity_factor", 1.25)
    else:
        cf = config.get("eval_capacity_factor", 2.0)
    min_capacity = int(config.get("min_capacity", 4))
    if cf is None:
        capacity = num_tokens
    else:
        capacity = min(s, max(min_capacity, math.ceil(k * s * cf / num_experts)))

    # 3. router logits (the layer runs this in float32)
    if training and config.get("jitter_eps", 0.0) > 0:
        raise ValueError("jitter is random: the reference covers jitter_eps=0 only")
    logits = x @ weights["router_kernel"]
    std = None
    if noisy and training:
        if router_noise is None:
            raise ValueError("noise_topk in training needs an injected router_noise")
        std = common.softplus(x @ weights["noise_kernel"]) + NOISE_EPSILON
        route = logits + np.asarray(router_noise, np.float64) * std
    else:
        route = logits

    # 4. top-k of the softmax, descending (ties: lower index; specs avoid them)
    probs = common.softmax(route, axis=-1)
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(probs, idx, axis=-1)
    gates = top / top.sum(axis=-1, keepdims=True)
    if not config.get("normalize_gates", True):
        gates = top

    # 5. positions, per group, choice-major; padded tokens take no slot
    keep = np.zeros((num_tokens, k), bool)
    for group in range(g):
        count = np.zeros(num_experts, np.int64)
        for j in range(k):
            for t in range(group * s, min((group + 1) * s, num_tokens)):
                if not nonpad[t]:
                    continue
                e = idx[t, j]
                keep[t, j] = count[e] < capacity
                count[e] += 1
    return {
        "logits": logits,
        "route": route,
        "std": std,
        "probs": probs,
        "idx": idx,
        "gates": gates,
        "keep": keep,
        "nonpad": nonpad,
        "capacity": capacity,
        "group_size": s,
        "num_groups": g,
    }


def _expert_mlp(x, weights, e, depth, activation, use_bias):
    h = x
    for i in range(depth):
        h = h @ weights[f"expert_kernel_{i}"][e]
        if use_bias:
            h = h + weights[f"expert_bias_{i}"][e]
        if i < depth - 1:
            h = common.activation(activation, h)
    return h


def _prob_in_top_k(logits, route, std, k):
    """Shazeer/T2T `_prob_in_top_k`: P(expert stays in the top k) under noise."""
    ordered = -np.sort(-route, axis=-1)
    thr_in = ordered[:, k : k + 1]  # the (k+1)-th largest
    thr_out = ordered[:, k - 1 : k]  # the k-th largest
    prob_in = _phi((logits - thr_in) / std)
    prob_out = _phi((logits - thr_out) / std)
    return np.where(route > thr_in, prob_in, prob_out)


def sparse_moe(inputs, weights, config, training, **kwargs) -> Result:
    """SparseMoE: top-k token routing with per-group capacity (contract §SparseMoE)."""
    x = np.asarray(inputs[0], np.float64)
    lead, d = x.shape[:-1], x.shape[-1]
    tokens = x.reshape(-1, d)
    num_tokens = tokens.shape[0]
    num_experts = int(config["num_experts"])
    k = int(config.get("top_k", 2))
    nonpad = _nonpad(kwargs.get("mask"), lead)
    noise = kwargs.get("router_noise")
    if noise is not None:
        noise = np.asarray(noise, np.float64).reshape(num_tokens, num_experts)
    r = sparse_route(tokens, weights, config, training, nonpad, noise)
    idx, gates, keep = r["idx"], r["gates"], r["keep"]

    # 6. experts on their kept tokens, combined with the (un-renormalised) gates
    hidden = _hidden_units(config.get("expert_hidden_units"))
    depth = len(hidden) + 1
    out_dim = config.get("output_dim") or d
    activation = config.get("activation", "relu")
    use_bias = config.get("use_bias", True)
    y = np.zeros((num_tokens, out_dim))
    for t in range(num_tokens):
        for j in range(k):
            if keep[t, j]:
                e = idx[t, j]
                out = _expert_mlp(tokens[t], weights, e, depth, activation, use_bias)
                y[t] += gates[t, j] * out

    # statistics over the non-padded tokens
    n = int(nonpad.sum())
    denom = max(k * n, 1)
    kept = np.zeros(num_experts)
    for e in range(num_experts):
        kept[e] = np.sum(keep & (idx == e))
    updates = {
        "expert_load": kept / denom,
        "dropped_fraction": np.asarray((k * n - kept.sum()) / denom),
    }

    # losses
    weight_bal = config.get("switch_loss_weight", 1e-2)
    weight_imp = config.get("importance_loss_weight", 0.0)
    weight_z = config.get("z_loss_weight", 0.0)
    losses = []
    if weight_bal > 0 or weight_imp > 0 or weight_z > 0:
        nmax = max(n, 1)
        w = nonpad.astype(np.float64)
        assigned = np.zeros((num_tokens, num_experts))
        gate_sum = np.zeros((num_tokens, num_experts))
        for j in range(k):
            assigned[np.arange(num_tokens), idx[:, j]] += 1.0
            gate_sum[np.arange(num_tokens), idx[:, j]] += gates[:, j]
        f = (w @ assigned) / max(k * n, 1)
        p = (w @ r["probs"]) / nmax
        l_bal = num_experts * float(np.sum(f * p))
        importance = w @ gate_sum
        if r["std"] is not None:
            load = w @ _prob_in_top_k(r["logits"], r["route"], r["std"], k)
        else:
            load = w @ assigned
        l_imp = _cv_squared(importance) + _cv_squared(load)
        l_z = float(np.sum(w * _logsumexp(r["route"]) ** 2)) / nmax
        losses.append(weight_bal * l_bal + weight_imp * l_imp + weight_z * l_z)

    return {
        "outputs": [y.reshape(*lead, out_dim)],
        "losses": losses,
        "updates": updates,
    }


# --- HierarchicalMoE --------------------------------------------------------------


def split_into_groups(n: int, max_group_size: int) -> tuple[int, int]:
    """Mesh-TF `_split_into_groups` (mesh dimension 1): (num_groups, size)."""
    g = max(1, n // max_group_size)
    while n % g:
        g += 1
    return g, n // g


def top2_gating(
    x, kernel, num_experts, capacity, importance, policy, threshold, uniforms
):
    """Mesh-TF `_top_2_gating` over `x [B, S, M]` (contract steps 1-9).

    Returns `combine [B, S, E, C]` and the (uncoefficiented) balance loss.
    """
    raw = common.softmax(x @ kernel, axis=-1)  # [B, S, E]
    i1 = np.argmax(raw, axis=-1)
    g1 = np.max(raw, axis=-1)
    m1 = np.eye(num_experts)[i1]
    proxy = raw
    if importance is not None:
        first = (importance == 1.0).astype(np.float64)
        m1 = m1 * first[..., None]
        g1 = g1 * first
        proxy = proxy * first[..., None]
    rest = raw * (1.0 - m1)
    i2 = np.argmax(rest, axis=-1)
    g2 = np.max(rest, axis=-1)
    m2 = np.eye(num_experts)[i2]
    if importance is not None:
        m2 = m2 * (importance > 0.0).astype(np.float64)[..., None]
    denom = g1 + g2 + 1e-9
    g1 = g1 / denom
    g2 = g2 / denom

    density = m1.mean(axis=-2)  # [B, E]
    density_proxy = proxy.mean(axis=-2)
    loss = num_experts**2 * float(np.mean(density * density_proxy))

    if policy == "all":
        pass
    elif policy == "none":
        m2 = np.zeros_like(m2)
    elif policy == "threshold":
        m2 = m2 * (g2 > threshold).astype(np.float64)[..., None]
    elif policy == "random":
        if uniforms is None:
            raise ValueError("the random policy needs injected uniforms")
        keep = uniforms < g2 / max(threshold, 1e-9)
        m2 = m2 * keep.astype(np.float64)[..., None]
    else:
        raise ValueError(f"unknown second-expert policy {policy!r}")

    def exclusive_cumsum(m):
        return np.cumsum(m, axis=-2) - m

    pos1 = exclusive_cumsum(m1) * m1
    m1 = m1 * (pos1 < capacity)
    n1 = m1.sum(axis=-2, keepdims=True)  # [B, 1, E]
    m1_flat = m1.sum(axis=-1)
    pos1 = pos1.sum(axis=-1)
    g1 = g1 * m1_flat
    pos2 = (exclusive_cumsum(m2) + n1) * m2
    m2 = m2 * (pos2 < capacity)
    m2_flat = m2.sum(axis=-1)
    pos2 = pos2.sum(axis=-1)
    g2 = g2 * m2_flat

    slots = np.eye(capacity)
    c1 = slots[np.minimum(pos1.astype(np.int64), capacity - 1)] * m1_flat[..., None]
    c2 = slots[np.minimum(pos2.astype(np.int64), capacity - 1)] * m2_flat[..., None]
    onehot1 = np.eye(num_experts)[i1]
    onehot2 = np.eye(num_experts)[i2]
    combine = (g1[..., None, None] * onehot1[..., :, None] * c1[..., None, :]) + (
        g2[..., None, None] * onehot2[..., :, None] * c2[..., None, :]
    )
    return combine, loss


def hierarchical_capacities(config, num_tokens, training) -> dict[str, int]:
    num_x, num_y = (int(v) for v in config["num_experts"])
    group_size = int(config.get("group_size", 1024))
    min_capacity = int(config.get("min_capacity", 4))
    if training:
        cf = config.get("capacity_factor", 1.25)
    else:
        cf = config.get("eval_capacity_factor", 2.0)
    g1, s = split_into_groups(num_tokens, group_size)
    c = max(min(s, int(s * cf / num_x)), min_capacity)
    g2, t = split_into_groups(g1 * c, group_size)
    cf2 = config.get("second_level_capacity_factor", 1.0)
    d = max(min(t, int(t * cf2 / num_y)), min_capacity)
    return {"G1": g1, "S": s, "C": c, "G2": g2, "t": t, "D": d}


def hierarchical_moe(inputs, weights, config, training, **kwargs) -> Result:
    """HierarchicalMoE: Mesh-TF transformer_moe_layer_v2 (contract §HierarchicalMoE)."""
    x = np.asarray(inputs[0], np.float64)
    lead, dim = x.shape[:-1], x.shape[-1]
    tokens = x.reshape(-1, dim)
    num_tokens = tokens.shape[0]
    num_x, num_y = (int(v) for v in config["num_experts"])
    out_dim = config.get("output_dim") or dim
    activation = config.get("activation", "relu")
    use_bias = config.get("use_bias", False)
    phase = "train" if training else "eval"
    policy = config.get(f"second_policy_{phase}", "random")
    threshold = config.get(f"second_threshold_{phase}", 0.2)
    cap = hierarchical_capacities(config, num_tokens, training)
    g1, s, c, g2, t, d = (cap[k] for k in ("G1", "S", "C", "G2", "t", "D"))

    nonpad = _nonpad(kwargs.get("mask"), lead).astype(np.float64)
    outer_u = kwargs.get("outer_uniforms")
    inner_u = kwargs.get("inner_uniforms")
    if outer_u is not None:
        outer_u = np.asarray(outer_u, np.float64).reshape(g1, s)
    if inner_u is not None:
        inner_u = np.asarray(inner_u, np.float64).reshape(num_x, g2, t)

    # level 1
    xs = tokens.reshape(g1, s, dim)
    combine_x, loss_outer = top2_gating(
        xs,
        weights["outer_gate_kernel"],
        num_x,
        c,
        nonpad.reshape(g1, s),
        policy,
        threshold,
        outer_u,
    )  # [G1, S, X, C]
    dispatch_x = (combine_x != 0.0).astype(np.float64)
    expert_in_x = np.einsum("gsxc,gsm->xgcm", dispatch_x, xs)  # [X, G1, C, M]
    w = combine_x.sum(axis=1)  # [G1, X, C]
    imp = 0.5 * ((w > 0.5).astype(np.float64) + (w > 0.0).astype(np.float64))
    imp = np.transpose(imp, (1, 0, 2))  # [X, G1, C]

    # level 2, per outer expert
    inputs_y = expert_in_x.reshape(num_x, g2, t, dim)
    imp_y = imp.reshape(num_x, g2, t)
    z = np.zeros((num_x, g2, t, out_dim))
    loss_inner_parts = []
    for xi in range(num_x):
        combine_y, loss_xi = top2_gating(
            inputs_y[xi],
            weights["inner_gate_kernel"][xi],
            num_y,
            d,
            imp_y[xi],
            policy,
            threshold,
            None if inner_u is None else inner_u[xi],
        )  # [G2, t, Y, D]
        loss_inner_parts.append(loss_xi)
        dispatch_y = (combine_y != 0.0).astype(np.float64)
        expert_in_y = np.einsum("htyd,htm->yhdm", dispatch_y, inputs_y[xi])
        for yi in range(num_y):
            hdn = expert_in_y[yi] @ weights["expert_kernel_in"][xi, yi]
            if use_bias:
                hdn = hdn + weights["expert_bias_in"][xi, yi]
            hdn = common.activation(activation, hdn)
            out = hdn @ weights["expert_kernel_out"][xi, yi]
            if use_bias:
                out = out + weights["expert_bias_out"][xi, yi]
            z[xi] += np.einsum("htd,hdn->htn", combine_y[:, :, yi, :], out)
    # the inner loss is a mean over X, G2 and Y: the mean of the per-x means
    loss_inner = float(np.mean(loss_inner_parts))

    z = z.reshape(num_x, g1, c, out_dim)
    y = np.einsum("gsxc,xgcn->gsn", combine_x, z)
    aux = (loss_outer + loss_inner) * config.get("loss_coef", 1e-2)
    return {"outputs": [y.reshape(*lead, out_dim)], "losses": [aux]}
