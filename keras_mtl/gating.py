"""Routing helpers shared by the mixture-of-experts and routing layers.

Everything here uses `keras.ops` only and behaves identically on TensorFlow,
JAX and PyTorch.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_mtl import numerics
from keras_mtl.backend import top_k as backend_top_k


def top_k(scores: Any, k: int) -> tuple[Any, Any]:
    """The `k` largest entries along the last axis, in descending order.

    Ties go to the lower index, on every backend (`keras.ops.top_k` leaves
    the order of tied values to the backend: PyTorch's `topk` prefers higher
    indices on the CPU), so the experts chosen at a tie, e.g. at a
    zero-initialized gate where all logits are equal, are the same
    everywhere. Backend adapter: `keras_mtl.backend.top_k`.

    Args:
        scores: `[..., n]` float tensor.
        k: int in `[1, n]`.

    Returns:
        `(values, indices)`, both `[..., k]`; indices are int32.
    """
    return backend_top_k.top_k(scores, k)


def top_k_mask(scores: Any, k: int) -> Any:
    """A 0/1 mask of the `k` largest entries along the last axis.

    Exactly `k` entries per row are kept, chosen by `top_k` (ties go to the
    lower index on every backend).

    Args:
        scores: `[..., n]` tensor.
        k: int in `[1, n]`.

    Returns:
        A tensor like `scores` with ones at the kept positions, zeros elsewhere.
    """
    _, indices = top_k(scores, k)
    return ops.sum(numerics.one_hot(indices, scores.shape[-1], scores.dtype), axis=-2)


def top_k_renormalize(probs: Any, k: int) -> Any:
    """Keeps the `k` largest probabilities per row and renormalizes them.

    `g_e = p_e * m_e / sum_e' p_e' * m_e'` with `m = top_k_mask(p, k)`. For a
    softmax `p` this equals the softmax over the kept logits only.
    """
    kept = probs * top_k_mask(probs, k)
    return kept / ops.sum(kept, axis=-1, keepdims=True)


def hard_concrete(
    log_alpha: Any,
    zeta: float = 1.1,
    gamma: float = -0.1,
    beta: float = 0.5,
    training: bool = False,
    straight_through: bool = False,
    seed: Any = None,
    epsilon: float = 1e-6,
) -> Any:
    """Hard-concrete gates (Louizos et al., 2018), one per entry of `log_alpha`.

    Training: `u ~ U(epsilon, 1 - epsilon)`,
    `s = sigmoid((log u - log(1 - u) + log_alpha) / beta)`; otherwise the
    deterministic `s = sigmoid(log_alpha)`. Then
    `z = clip(s * (zeta - gamma) + gamma, 0, 1)`. With `straight_through`
    the clip's gradient is the identity:
    `z = s_bar + stop_gradient(clip(s_bar) - s_bar)`.

    Args:
        log_alpha: float tensor of gate log-odds.
        zeta, gamma: stretch interval `(gamma, zeta)`, `gamma < 0 < 1 < zeta`.
        beta: concrete temperature.
        training: sample (True) or use the deterministic gate (False).
        straight_through: identity gradient through the clip.
        seed: a `keras.random.SeedGenerator` or int for the sampling.
        epsilon: keeps `u` away from 0 and 1 so the logs stay finite.
    """
    if training:
        u = keras.random.uniform(
            ops.shape(log_alpha),
            minval=epsilon,
            maxval=1.0 - epsilon,
            dtype=log_alpha.dtype,
            seed=seed,
        )
        s = ops.sigmoid((ops.log(u) - ops.log1p(-u) + log_alpha) / beta)
    else:
        s = ops.sigmoid(log_alpha)
    stretched = s * (zeta - gamma) + gamma
    hard = ops.clip(stretched, 0.0, 1.0)
    if straight_through:
        return stretched + ops.stop_gradient(hard - stretched)
    return hard


def straight_through(hard: Any, soft: Any) -> Any:
    """`hard` in the forward pass with the gradient of `soft`.

    Written `hard + (soft - stop_gradient(soft))` so the forward value is
    exactly `hard` (a one-hot or a 0/1 step), with no rounding from adding and
    subtracting `soft`.
    """
    return hard + (soft - ops.stop_gradient(soft))
