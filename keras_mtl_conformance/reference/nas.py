"""References for the sparse-NAS layers (float64, NumPy only).

Semantics: the reference library's manual for these layers (section
sparse_nas, whose mask tables are normative); the decisions where this package
deviates from the reference library are recorded in each spec's `description`
and `deviations` list. Written from those, not from the layer code.

Every layer maps x `(B, total_width)` (features concatenated in order) to
`x * mask`, with `mask` `(total_width,)` built from the weights.
Stochastic paths (sampled choices, Gumbel noise) have no reference: they are
covered by property checks; calling the reference on them raises.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_mtl_conformance.reference import common

Result = dict[str, Any]


def choice_masks(sizes: list[int], mode: str, seed: Any, zero_choice: bool):
    """Binary masks (C, W) of one feature's size choices.

    left: ones on [0, s_c); diff: ones on [s_{c-1}, s_c); none: the choices
    side by side, W = sum; random: W = max, last row all ones, row c has ones
    at s_c positions drawn with replacement by RandomState(seed).randint(0, W)
    (row after row). zero_choice prepends an all-zero row unless sizes[0] == 0.
    """
    s = [int(v) for v in sizes if int(v) != 0]
    total = sum(s) if mode == "none" else max(s)
    table = []
    if mode == "random":
        rng = np.random.RandomState(seed)
        for size in s[:-1]:
            row = np.zeros(total)
            picks = rng.randint(0, total, size=size)
            row[picks] = 1.0
            table.append(row)
        table.append(np.ones(total))
    else:
        offset = 0
        previous = 0
        for size in s:
            row = np.zeros(total)
            if mode == "left":
                row[:size] = 1.0
            elif mode == "diff":
                row[previous:size] = 1.0
            elif mode == "none":
                row[offset : offset + size] = 1.0
            else:
                raise ValueError(mode)
            table.append(row)
            offset += size
            previous = size
    if zero_choice:
        table.insert(0, np.zeros(total))
    return np.stack(table)


def _selection(inputs, weights, config, training, zero_choice) -> Result:
    (x,) = inputs
    mode = config.get("embedding_share_mode", "none")
    grad_mode = config.get("weight_grad_mode", "discrete")
    temperature = float(config.get("temperature", 1.0))
    given = config.get("masks")
    pieces = []
    for f, sizes in enumerate(config["segment_sizes"]):
        if given is not None:
            table = np.asarray(given[f], dtype=np.float64)
        else:
            table = choice_masks(sizes, mode, config.get("seed"), zero_choice)
        logits = np.asarray(weights[f"arch_logits_{f}"], dtype=np.float64)
        count = table.shape[0]
        if count == 1:
            w = np.ones(1)
        else:
            p = common.softmax(logits / temperature)
            if grad_mode == "none":
                w = p
            elif training:
                raise NotImplementedError(
                    "sampled choices in training have no deterministic reference"
                )
            else:
                w = np.zeros(count)
                w[int(np.argmax(p))] = 1.0  # first index on ties
        pieces.append(w @ table)
    mask = np.concatenate(pieces)
    return {"outputs": [x * mask[None, :]]}


def nas_selection(inputs, weights, config, training, **_) -> Result:
    return _selection(inputs, weights, config, training, zero_choice=False)


def mixed_nas(inputs, weights, config, training, **_) -> Result:
    return _selection(inputs, weights, config, training, zero_choice=True)


def nas_gating(inputs, weights, config, training, anchor=None, **_) -> Result:
    """Gate per segment: sigmoid, or step forward with a clip/softplus STE.

    g = step(a) + s(a) - stop_gradient(s(a)); stop_gradient(e) is e at the
    anchor (the unperturbed weights) so that central differences see ds/da.
    """
    (x,) = inputs
    a = np.asarray(weights["gate_logits"], dtype=np.float64)
    ste = config.get("ste_type", "none")
    if ste == "none":
        g = common.sigmoid(a)
    else:
        a0 = a if anchor is None else np.asarray(anchor[1]["gate_logits"], np.float64)
        surrogate = (
            (lambda z: np.clip(z, -1.0, 1.0)) if ste == "clip" else common.softplus
        )
        g = (a > 0).astype(np.float64) + surrogate(a) - surrogate(a0)
    mask = np.repeat(g, config["segment_sizes"])
    return {"outputs": [x * mask[None, :]]}


def simple_nas(inputs, weights, config, training, **_) -> Result:
    """Truncation length per feature: soft keep-probabilities or the knee."""
    (x,) = inputs
    threshold = float(config.get("threshold", 0.9))
    temperature = float(config.get("temperature", 1.5))
    use_gumbel = config.get("use_gumbel", True)
    pieces = []
    for f, d in enumerate(config["segment_sizes"]):
        p = common.softmax(
            np.asarray(weights[f"length_logits_{f}"], np.float64) / temperature
        )
        if training:
            if use_gumbel:
                raise NotImplementedError("Gumbel noise has no deterministic reference")
            # Dimension j (0-based) survives every length L >= j + 1.
            keep = np.array([p[j:].sum() for j in range(d)])
        else:
            cumulative = np.cumsum(p)
            length = d
            for n in range(d):
                if cumulative[n] >= threshold:
                    length = n + 1
                    break
            keep = (np.arange(d) < length).astype(np.float64)
        pieces.append(keep)
    mask = np.concatenate(pieces)
    return {"outputs": [x * mask[None, :]]}
