"""Routing helpers shared by the mixture-of-experts and routing layers.

Everything here uses `keras.ops` only and behaves identically on TensorFlow,
JAX and PyTorch.
"""

from __future__ import annotations

from typing import Any

from keras import ops


def top_k_mask(scores: Any, k: int) -> Any:
    """A 0/1 mask of the `k` largest entries along the last axis.

    Exactly `k` entries per row are kept; ties are broken by index (the lower
    index wins). The rank of entry `e` is the number of entries that beat it:
    `rank_e = #{e' : s_e' > s_e} + #{e' < e : s_e' == s_e}`, and `e` is kept
    when `rank_e < k`. The rank is computed by pairwise comparison rather than
    from `keras.ops.top_k` indices because PyTorch's `topk` leaves the order
    of tied values unspecified (on CPU it prefers *higher* indices), so the
    selected experts would differ across backends at ties, e.g. at the
    zero-initialized gate where all logits are equal.

    Args:
        scores: `[..., n]` tensor.
        k: int in `[1, n]`.

    Returns:
        A tensor like `scores` with ones at the kept positions, zeros elsewhere.
    """
    n = scores.shape[-1]
    a = ops.expand_dims(scores, -1)  # [..., n (e), 1]
    b = ops.expand_dims(scores, -2)  # [..., 1, n (e')]
    index = ops.arange(n)
    lower = ops.expand_dims(index, 0) < ops.expand_dims(index, 1)  # [e, e']
    beats = ops.logical_or(ops.greater(b, a), ops.logical_and(ops.equal(b, a), lower))
    rank = ops.sum(ops.cast(beats, "int32"), axis=-1)
    return ops.cast(ops.less(rank, k), scores.dtype)


def top_k_renormalize(probs: Any, k: int) -> Any:
    """Keeps the `k` largest probabilities per row and renormalizes them.

    `g_e = p_e * m_e / sum_e' p_e' * m_e'` with `m = top_k_mask(p, k)`. For a
    softmax `p` this equals the softmax over the kept logits only.
    """
    kept = probs * top_k_mask(probs, k)
    return kept / ops.sum(kept, axis=-1, keepdims=True)
