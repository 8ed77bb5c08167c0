"""References for the feature-interaction layers: DCN, CIN, AllInt, CDot,
CAN, GroupInt, AutoInt and SeNet.

Semantics: the reference library's manual for these layers (its sections
feature_cross and feature_trans) and the papers (DCN, DCN V2, xDeepFM,
AutoInt, SENet); where this package deviates from the reference library, the
decision is recorded in each spec's `deviations` list. Row-vector convention:
`x @ K`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_mtl_conformance.reference import common

Result = dict[str, Any]


def _normalize(w: np.ndarray, g: np.ndarray | None) -> np.ndarray:
    """Weight norm over the input axis (-2) of a `[..., in, out]` kernel."""
    if g is None:
        return w
    sq = np.sum(w * w, axis=-2, keepdims=True)
    return w / np.sqrt(np.maximum(sq, 1e-6)) * np.expand_dims(g, -2)


def _kernel(weights: dict[str, np.ndarray], name: str, norm: bool) -> np.ndarray:
    return _normalize(weights[name], weights[f"{name}_norm"] if norm else None)


# --- DCN ---------------------------------------------------------------------


def dcn(inputs, weights, config, training, **_) -> Result:
    """x_{l+1} = x0 * f_l(x_l) + x_l (DCN v1, v2 and the mixture of experts)."""
    (x,) = inputs
    dcn_type = config.get("dcn_type", "matrix")
    layers = config.get("layer_num", 1)
    norm = config.get("allow_kernel_norm", False)
    experts = config.get("num_experts", 1)
    share = config.get("share_gates", False)
    act = config.get("low_rank_activation", "tanh")
    x0 = x
    xl = x
    for i in range(layers):
        b = weights[f"bias_{i}"]
        if dcn_type == "vector":
            w = _kernel(weights, f"kernel_{i}", norm)  # (d, 1)
            xl = x0 * (xl @ w) + b + xl
        elif dcn_type == "matrix" and config.get("low_rank"):
            # DCN v2 low-rank cross: W = D P, with D (d, r) and P (r, d).
            w = _kernel(weights, f"down_kernel_{i}", norm) @ _kernel(
                weights, f"up_kernel_{i}", norm
            )
            xl = x0 * (xl @ w + b) + xl
        elif dcn_type == "matrix":
            w = _kernel(weights, f"kernel_{i}", norm)  # (d, d)
            xl = x0 * (xl @ w + b) + xl
        else:
            u = _kernel(weights, f"u_kernel_{i}", norm)  # (E, d, r)
            v = _kernel(weights, f"v_kernel_{i}", norm)  # (E, d, r)
            c = _kernel(weights, f"c_kernel_{i}", norm)  # (E, r, r)
            outs = []
            for e in range(experts):
                h = common.activation(act, xl @ v[e])
                h = common.activation(act, h @ c[e])
                outs.append(x0 * (h @ u[e].T + b))
            if experts > 1:
                gname = "gate_kernel" if share else f"gate_kernel_{i}"
                gate = common.softmax(xl @ _kernel(weights, gname, norm), axis=-1)
            else:
                gate = np.ones(xl.shape[:-1] + (1,))
            mixed = sum(gate[..., e : e + 1] * outs[e] for e in range(experts))
            xl = mixed + xl
    # Dropout is the identity outside training (specs use training=False).
    return {"outputs": [xl]}


# --- CIN ---------------------------------------------------------------------


def cin(inputs, weights, config, training, **_) -> Result:
    """xDeepFM CIN: X^k_o = act(sum_{h,m} W^k_{h,m,o} (X^{k-1}_h o X0_m)), pooled."""
    (x0,) = inputs  # (B, F, D)
    hidden = config["hidden_uints"]
    act = config.get("activation")
    split = config.get("split_half", False)
    act_last = config.get("activate_last_layer", False)
    fields = x0.shape[1]
    xk = x0
    pooled = []
    for k, h in enumerate(hidden):
        last = k == len(hidden) - 1
        w = weights[f"kernel_{k}"].reshape(xk.shape[1], fields, h)  # W[h, m, o]
        out = np.einsum("bhd,bmd,hmo->bod", xk, x0, w)
        out = out + weights[f"bias_{k}"][None, :, None]
        if not last or act_last:
            out = common.activation(act, out)
        if split and not last:
            xk, direct = out[:, : h // 2], out[:, h // 2 :]
        else:
            xk, direct = out, out
        pooled.append(direct.sum(axis=2))
    return {"outputs": [np.concatenate(pooled, axis=1)]}


# --- AllInt and CDot ---------------------------------------------------------


def _merge_fields(y: np.ndarray, out_type: str | None, keep_list: bool):
    if out_type == "concat":
        return [y.reshape(y.shape[0], -1)]
    if out_type == "stack":
        return [y]
    return [y[:, i] for i in range(y.shape[1])]


def all_int(inputs, weights, config, training, **_) -> Result:
    """O = X Xᵀ C (the manual), plus (X 1) bᵀ for the bias broadcast over D."""
    (x,) = inputs  # (B, F, D)
    gram = np.einsum("bfd,bgd->bfg", x, x)  # (B, F, F)
    y = gram @ weights["allint_kernel"]
    if config.get("use_bias", True):
        y = y + x.sum(axis=-1, keepdims=True) * weights["allint_bias"]
    return {
        "outputs": _merge_fields(
            y, config.get("out_type", "concat"), config.get("keep_list", False)
        )
    }


def c_dot(inputs, weights, config, training, **_) -> Result:
    """[X · reshape(T(flat(Xᵀ W_p)), (D, P)), T(flat(Xᵀ W_p))], T a linear-last MLP."""
    (x,) = inputs  # (B, F, D)
    b, f, d = x.shape
    p = config["project_dim"]
    n = len(config["compress_units"]) + 1
    act = config.get("activation", "relu")
    act = "relu" if act is None else act  # the MLP rule for None
    h = np.einsum("bfd,fp->bdp", x, weights["project_weight"]).reshape(b, d * p)
    for i in range(n):
        pre = f"compress_tower/dense_{i}"
        k = common.weight_norm(weights[f"{pre}/kernel"], weights[f"{pre}/kernel_norm"])
        h = h @ k + weights[f"{pre}/bias"]
        if i < n - 1:
            h = common.activation(act, h)
    crossed = np.einsum("bfd,bdp->bfp", x, h.reshape(b, d, p)).reshape(b, f * p)
    return {"outputs": [np.concatenate([crossed, h], axis=1)]}


# --- GroupInt / FFM ----------------------------------------------------------


def group_int(inputs, weights, config, training, **_) -> Result:
    """FFM op: dot out[l*R + r] = <left_l, right_r>; multiply out[(l*R + r), k]."""
    left, right = inputs  # (B, L, D), (B, R, D)
    b, n_left, d = left.shape
    n_right = right.shape[1]
    dot = config.get("interaction_type", "multiply") == "dot"
    pairs = np.zeros((b, n_left * n_right, 1 if dot else d))
    for li in range(n_left):
        for ri in range(n_right):
            prod = left[:, li] * right[:, ri]
            pairs[:, li * n_right + ri] = prod.sum(-1, keepdims=True) if dot else prod
    if config.get("use_attention", False):
        units = config["attention_units"]
        act = config.get("activation", "relu")
        act = "relu" if act is None else act  # the MLP rule for None
        h = pairs
        for i in range(len(units)):
            pre = f"groupint_attention_mlp/dense_{i}"
            k = common.weight_norm(
                weights[f"{pre}/kernel"], weights[f"{pre}/kernel_norm"]
            )
            h = h @ k + weights[f"{pre}/bias"]
            if i < len(units) - 1:
                h = common.activation(act, h)
        pairs = pairs * h
    return {
        "outputs": _merge_fields(
            pairs, config.get("out_type", "concat"), config.get("keep_list", False)
        )
    }


# --- CAN ---------------------------------------------------------------------


def can(inputs, weights, config, training, **_) -> Result:
    """Co-action: h <- act(h W_i + b_i) with W_i, b_i cut from the item embedding."""
    user, item = inputs
    layers = config.get("layer_num", 2)
    act = config.get("activation", "relu")
    seq = config.get("is_seq", False)
    stacked = config.get("is_stacked", True)
    u = user.shape[-1]
    out = np.zeros(user.shape[:-2] + (u,) if seq else user.shape)
    for b in range(user.shape[0]):
        h = user[b]  # (..., u)
        off = 0
        for _ in range(layers):
            w = item[b, off : off + u * u].reshape(u, u)
            off += u * u
            bias = item[b, off : off + u]
            off += u
            h = common.activation(act, h @ w + bias)
        out[b] = h.sum(axis=-2) if seq else h
    del stacked  # the rank of `user` already says whether features are stacked
    return {"outputs": [out]}


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


def auto_int(inputs, weights, config, training, **_) -> Result:
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
