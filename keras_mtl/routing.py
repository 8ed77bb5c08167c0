"""Token routing for sparse mixture-of-experts layers: capacity, top-k and top-2
gates, positions in experts, the four dispatchers (`index`, `grouped`,
`einsum`, `dense`) and the router losses.

Everything uses `keras.ops` only and runs under `jax.jit`,
`tf.function(jit_compile=True)` and `torch.compile`. Capacities and slot
counts are Python ints so every shape is static; the only data-dependent
quantity is how the `T * k` assignments split over the experts, which the
grouped dispatcher carries as a tensor of group sizes. Routing math runs in
float32.

No Python number reaches a `keras.ops` function here (constants come from
`numerics.fill_like`, comparisons with numbers use operators): on torch such
a number is copied to the device, which on a GPU is a host sync per call.

Cross-backend traps this module avoids:

- `ops.one_hot` of an index >= depth raises on torch; `one_hot` below
  compares with `arange(depth)` instead, so any out-of-range index (`-1`
  encodes empty or dropped slots) gives an all-zero row on every backend.
- `take` out of range returns NaN on JAX and is clamped under XLA, so no
  index is ever out of range: the dispatch reads empty slots from an
  explicit zero row at index 0, and the combine reads not-kept choices from
  row 0 with weight 0.
- `ops.scatter` on torch is a Python loop per index; the inverse slot map is
  built with one `scatter_update` instead.
- `ops.top_k` breaks ties differently per backend; `gating.top_k` (lower
  index first) is used for every choice of experts.
- `ops.repeat` without an axis hands torch a tensor of repeats, whose output
  size torch reads back from the device; every repeat here names its axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

from keras import ops

from keras_mtl import gating
from keras_mtl.backend import gather
from keras_mtl.numerics import fill_like
from keras_mtl.numerics import one_hot

# `experts(h, rows)`: the experts of a layer on gathered rows (see below).
ExpertFn = Callable[[Any, Any], Any]

# --- sizes ----------------------------------------------------------------------


def expert_capacity(
    group_size: int, num_experts: int, top_k: int, capacity_factor: float, minimum: int
) -> int:
    """`min(S, max(minimum, ceil(k * S * cf / E)))` slots per expert and group.

    The factor `k` makes `capacity_factor=1` mean "room for every assignment
    at perfectly balanced routing" for any `k` (DeepSpeed/Tutel convention).
    """
    raw = math.ceil(top_k * group_size * capacity_factor / num_experts)
    return int(min(group_size, max(minimum, raw)))


def mtf_capacity(
    group_size: int, num_experts: int, capacity_factor: float, minimum: int
) -> int:
    """Mesh-TensorFlow's capacity `max(min(S, int(S * cf / E)), minimum)`."""
    return int(
        max(min(group_size, int(group_size * capacity_factor / num_experts)), minimum)
    )


def split_into_groups(n: int, max_group_size: int) -> tuple[int, int]:
    """Mesh-TF `_split_into_groups` on one device: the fewest groups of at
    most about `max_group_size` tokens that divide `n` exactly.

    Returns `(num_groups, group_size)`.
    """
    num_groups = max(1, n // max_group_size)
    while n % num_groups:
        num_groups += 1
    return num_groups, n // num_groups


# --- gates ----------------------------------------------------------------------


def top_k_gates(probs: Any, k: int, normalize: bool) -> tuple[Any, Any]:
    """The `k` largest router probabilities per token, in descending order.

    Returns `(gates, experts)`, both `[..., k]`. With `normalize` the gates
    are divided by their sum (the softmax over the chosen logits).
    """
    gates, experts = gating.top_k(probs, k)
    if normalize:
        gates = gates / ops.sum(gates, axis=-1, keepdims=True)
    return gates, experts


def choice_major_positions(
    experts: Any, valid: Any, num_experts: int, with_totals: bool = False
) -> Any:
    """Position of each assignment in its expert's queue, per group.

    `experts` is `[G, S, k]` int, `valid` `[G, S]` (bool or 0/1; padding is
    false or 0). All
    first choices of a group are queued before any second choice (GShard /
    Mesh-TF priority), tokens in order within a choice; padded tokens take no
    place and get position `-1`. Returns `[G, S, k]` int32, and with
    `with_totals` also the queue length of every expert in every group,
    `[G, E]` int32.

    Running counts per expert over the queue, `[G, E, kS]` (the cumulative
    sum runs along the contiguous last axis), from which each assignment
    reads its own expert's count with one gather. Against a `[G, kS, E]`
    cumulative sum masked by the one-hot and summed over `E`, at S = 4096,
    k = 2, E = 64: torch 4.3 -> 2.9 ms, JAX (jit) 5.2 -> 3.4 ms, TensorFlow
    (XLA) 7.0 -> 5.0 ms. `S` may be unknown only with one group (`G = 1`).
    """
    g, s, k = experts.shape[0], experts.shape[1], experts.shape[2]
    queue = (-1, k * s) if s is not None else (g, -1)
    order = ops.reshape(ops.transpose(experts, (0, 2, 1)), queue)  # [G, kS]
    queued = ops.tile(ops.cast(valid, "bool"), (1, k))
    none = fill_like(order, -1)
    order = ops.where(queued, order, none)  # a padded token counts for no expert
    # [G, E, kS]: the cumulative sum runs along the contiguous last axis.
    counts = ops.cumsum(one_hot(order, num_experts, "int32", axis=1), axis=-1)
    # A padded token's own expert is taken as 0, in range for the gather.
    own = ops.expand_dims(ops.where(queued, order, ops.zeros_like(order)), 1)
    position = ops.squeeze(gather.take_along_axis(counts, own, axis=1), 1) - 1
    position = ops.where(queued, position, none)
    position = ops.reshape(
        position, (-1 if g is None else g, k, -1 if s is None else s)
    )
    position = ops.transpose(position, (0, 2, 1))
    if with_totals:
        return position, counts[:, :, -1]
    return position


def exclusive_cumsum(x: Any, axis: int) -> Any:
    return ops.cumsum(x, axis=axis) - x


def top2_gating(
    logits: Any,
    capacity: int,
    importance: Any,
    policy: str,
    threshold: float,
    uniforms: Any | None,
) -> dict[str, Any]:
    """Mesh-TensorFlow `_top_2_gating` on float32 router logits `[N, S, E]`.

    Its steps: softmax; the best expert `i1` (lowest index on
    ties); masking by `importance == 1` for the first choice and
    `importance > 0` for the second; `g1, g2` normalized by their sum; the
    balance loss `E^2 mean(mean_S(m1) * mean_S(p))`; the second-expert
    policy; capacity in priority order (all first choices, then second
    choices); no renormalization after drops.

    Returns a dict with `experts`, `positions`, `keep`, `gates` (each
    `[N, S, 2]`; `gates` is zero where not kept) and the scalar `loss`.
    """
    num_experts = logits.shape[-1]
    raw = ops.softmax(logits, axis=-1)
    first = gating.top_k(raw, 1)[1][..., 0]
    m1 = one_hot(first, num_experts, "float32")
    g1 = ops.sum(raw * m1, axis=-1)
    proxy = raw
    is_first = ops.cast(importance == 1.0, "float32")
    m1 = m1 * is_first[..., None]
    g1 = g1 * is_first
    proxy = proxy * is_first[..., None]
    rest = raw * (1.0 - m1)
    second = gating.top_k(rest, 1)[1][..., 0]
    m2 = one_hot(second, num_experts, "float32")
    g2 = ops.sum(rest * m2, axis=-1)
    m2 = m2 * ops.cast(importance > 0.0, "float32")[..., None]
    denom = g1 + g2 + 1e-9
    g1 = g1 / denom
    g2 = g2 / denom
    loss = ops.mean(ops.mean(m1, axis=-2) * ops.mean(proxy, axis=-2)) * float(
        num_experts**2
    )
    if policy == "none":
        m2 = m2 * 0.0
    elif policy == "threshold":
        m2 = m2 * ops.cast(g2 > threshold, "float32")[..., None]
    elif policy == "random":
        keep_second = uniforms < g2 / max(threshold, 1e-9)
        m2 = m2 * ops.cast(keep_second, "float32")[..., None]
    pos1 = ops.sum(exclusive_cumsum(m1, axis=-2) * m1, axis=-1)
    keep1 = ops.logical_and(pos1 < capacity, ops.sum(m1, axis=-1) > 0)
    m1 = m1 * ops.cast(keep1, "float32")[..., None]
    count1 = ops.sum(m1, axis=-2, keepdims=True)
    pos2 = ops.sum((exclusive_cumsum(m2, axis=-2) + count1) * m2, axis=-1)
    keep2 = ops.logical_and(pos2 < capacity, ops.sum(m2, axis=-1) > 0)
    keep = ops.stack([keep1, keep2], axis=-1)
    gates = ops.stack([g1, g2], axis=-1) * ops.cast(keep, "float32")
    return {
        "experts": ops.stack([first, second], axis=-1),
        "positions": ops.cast(ops.stack([pos1, pos2], axis=-1), "int32"),
        "keep": keep,
        "gates": gates,
        "loss": loss,
    }


# --- dispatch -------------------------------------------------------------------


class Route(NamedTuple):
    """Where the `T = G * S` tokens of one call go: the input of a dispatcher.

    `experts`, `positions` and `keep` are `[G, S, k]` (`choice_major_positions`
    gives the positions; `keep` is false for padded tokens and for assignments
    past the capacity); `weights` `[T, k]` are the combine weights in the
    compute dtype, zero where not kept. `totals` `[G, E]` counts the queued
    (non-padded) assignments of each expert per group. `groups` is a Python
    int, or a scalar tensor when the token count is unknown (a TensorFlow
    graph); `capacity` is `None` only for one group of unknown size without
    a capacity (the grouped dispatcher's dropless routing).
    """

    experts: Any
    positions: Any
    keep: Any
    weights: Any
    totals: Any
    num_experts: int
    capacity: int
    groups: Any


class GroupedRows(NamedTuple):
    """Rows sorted by expert: `sizes` `[E]` int32 (summing to at most the row
    count `M`; later rows belong to no expert) and each row's expert
    `row_expert` `[M]` int32, `E` for the rows of no expert."""

    sizes: Any
    row_expert: Any


def slot_ids(
    experts: Any, positions: Any, keep: Any, groups: Any, capacity: int
) -> Any:
    """Flat buffer slot of each assignment, `-1` where it is not kept.

    `experts`, `positions`, `keep` are `[G, S, k]`. Slots are laid out
    expert-major, `slot = (e * G + g) * C + position`, so the dispatch buffer
    reshapes to `[E, G * C, d]` with no transpose.
    """
    group = ops.reshape(ops.arange(0, groups, dtype="int32"), (-1, 1, 1))
    slot = (experts * groups + group) * capacity + positions
    return ops.where(keep, slot, fill_like(slot, -1))


def packed_slot_ids(
    experts: Any, positions: Any, keep: Any, kept: Any, groups: Any
) -> tuple[Any, Any]:
    """Rows of the expert-sorted buffer of the grouped dispatcher.

    As `slot_ids`, expert-major then group-major, but every (expert, group)
    block is exactly as long as the assignments it keeps, `kept` `[G, E]`:
    `slot = start[e, g] + position` with `start` the exclusive cumulative
    sum of `kept` in that order, so the kept assignments fill rows
    `0 .. sum(kept) - 1` with no holes. Returns `(slots, sizes)`: `[G, S, k]`
    (`-1` where not kept) and the rows per expert, `[E]` int32.
    """
    by_expert = ops.reshape(ops.transpose(kept, (1, 0)), (-1,))  # [E * G]
    start = ops.cumsum(by_expert) - by_expert
    group = ops.reshape(ops.arange(0, groups, dtype="int32"), (-1, 1, 1))
    index = ops.where(keep, experts * groups + group, ops.zeros_like(experts))
    slot = ops.take(start, index, axis=0) + positions
    return ops.where(keep, slot, fill_like(slot, -1)), ops.sum(kept, axis=0)


def grouped_rows(sizes: Any, num_rows: Any) -> GroupedRows:
    """`GroupedRows` for a buffer of `num_rows` rows whose first `sum(sizes)`
    hold the kept assignments, sorted by expert.

    The rows after them (assignments not kept, all reading the zero row) are
    not computed by a native grouped matmul (torch leaves them unwritten),
    except the first, which joins the last expert: a not-kept assignment
    reads row 0 with weight 0, and row 0 must be finite even when nothing is
    kept. `row_expert` is `E` (no expert) for the rows not computed, so a
    per-expert bias gathered with it reads a zero row there and its gradient
    never sees those rows.
    """
    sizes = ops.cast(sizes, "int32")
    rest = num_rows - ops.sum(sizes)
    first_of_rest = ops.minimum(rest, ops.ones_like(rest))
    sizes = ops.concatenate([sizes[:-1], sizes[-1:] + first_of_rest], axis=0)
    ends = ops.cumsum(sizes)
    rows = ops.arange(0, num_rows, dtype="int32")
    row_expert = ops.cast(ops.searchsorted(ends, rows, side="right"), "int32")
    return GroupedRows(sizes, row_expert)


def scatter_to_slots(values: Any, slots: Any, num_slots: Any) -> Any:
    """`out[slots[t, j]] = values[t, j]` for kept slots, 0 for empty ones.

    `slots` is `[T, k]` from `slot_ids` (`-1` = not kept); kept slots are
    unique, so one `scatter_update` suffices (not-kept entries write to a
    spare last entry that is cut off). Returns `[num_slots]`.
    """
    flat = ops.reshape(slots, (-1,))
    target = ops.where(flat >= 0, flat, fill_like(flat, 0) + num_slots)
    return ops.scatter_update(
        ops.zeros((num_slots + 1,), dtype=values.dtype),
        ops.expand_dims(target, -1),
        ops.reshape(values, (-1,)),
    )[:num_slots]


def index_dispatch(tokens: Any, slots: Any, num_slots: Any) -> Any:
    """Gathers token rows into expert slots: `[T, d]` -> `[num_slots, d]`.

    `slots` is `[T, k]` (from `slot_ids`, flattened over groups). The inverse
    map slot -> token + 1 comes from `scatter_to_slots`, then `take` reads
    the rows; empty slots read the zero row 0. The gradient of `take` is a
    scatter-add, so the backward pass is sparse too.
    """
    t, k = ops.shape(slots)[0], slots.shape[-1]
    token = ops.repeat(ops.arange(1, t + 1, dtype="int32"), k, axis=0)
    inverse = scatter_to_slots(token, slots, num_slots)
    padded = ops.concatenate([ops.zeros_like(tokens[:1]), tokens], axis=0)
    return ops.take(padded, inverse, axis=0)


def index_combine(expert_out: Any, slots: Any, weights: Any) -> Any:
    """`y[t] = sum_j weights[t, j] * expert_out[slots[t, j]]` over kept `j`.

    `expert_out` is `[num_slots, n]`, `slots` `[T, k]` (`-1` = not kept),
    `weights` `[T, k]` in `expert_out`'s dtype. A not-kept assignment reads
    row 0 with weight 0 (so a non-finite row 0 would reach it as NaN).
    One gather and multiply-add per choice `j`, with no zero row prepended
    to `expert_out` (a copy of all of it): forward+backward at T=4096, k=2,
    n=256 took JAX 15.0 -> 9.1 ms, TensorFlow 15.6 -> 13.6, torch
    16.3 -> 15.5 against one gather of `[T * k]` rows and a sum over `k`.
    """
    kept = slots >= 0
    index = ops.where(kept, slots, ops.zeros_like(slots))
    weights = ops.where(kept, weights, ops.zeros_like(weights))
    y = None
    for j in range(slots.shape[-1]):
        term = ops.take(expert_out, index[:, j], axis=0) * weights[:, j : j + 1]
        y = term if y is None else y + term
    return y


def one_hot_dispatch_combine(
    experts: Any, positions: Any, keep: Any, gates: Any, num_experts: int, capacity: int
) -> tuple[Any, Any]:
    """The GShard/Mesh-TF dispatch and combine tensors, both `[G, S, E, C]`.

    `dispatch` is 1 at each kept assignment's (expert, position), `combine`
    holds its gate there. Not-kept assignments map to index `-1`, which
    `one_hot` turns into a zero row.
    """
    none = fill_like(experts, -1)
    e = one_hot(ops.where(keep, experts, none), num_experts, "float32")
    c = one_hot(ops.where(keep, positions, none), capacity, "float32")
    dispatch = ops.einsum("gske,gskc->gsec", e, c)
    combine = ops.einsum("gsk,gske,gskc->gsec", gates, e, c)
    return dispatch, combine


# Every dispatcher maps tokens `x` `[T, d]` (compute dtype) and a `Route` to
# the combined expert outputs `[T, n]`, calling `experts(h, rows)` once on
# the rows it gathered: `[E, M, d]` expert-major (`rows=None`), or `[M, d]`
# sorted by expert with `rows` a `GroupedRows`. All give the same results.


def index_moe(x: Any, route: Route, experts: ExpertFn) -> Any:
    """Capacity buffer `[E, G * C, d]` filled by a gather through an inverse
    slot map; combine by one gather per choice. Cost `O(T * k * d)` plus the
    experts on `E * G * C ≈ k * cf * T` rows."""
    k, d = route.weights.shape[-1], x.shape[-1]
    slots = slot_ids(
        route.experts, route.positions, route.keep, route.groups, route.capacity
    )
    slots = ops.reshape(slots, (-1, k))
    num_slots = route.num_experts * route.groups * route.capacity
    buffer = index_dispatch(x, slots, num_slots)
    out = experts(ops.reshape(buffer, (route.num_experts, -1, d)), None)
    out = ops.reshape(out, (-1, out.shape[-1]))
    return index_combine(out, slots, route.weights)


def grouped_moe(x: Any, route: Route, experts: ExpertFn) -> Any:
    """Kept assignments sorted by expert into the first rows of a `T * k`-row
    buffer with no capacity padding, the experts as grouped matmuls over them
    (native where the backend has one, see `keras_mtl.backend.grouped`);
    dispatch and combine as in `index_moe`. Cost `O(T * k * d)` plus the
    experts on the kept rows only (and one more, see `grouped_rows`)."""
    k = route.weights.shape[-1]
    kept = route.totals
    if route.capacity is not None:
        kept = ops.minimum(kept, fill_like(kept, route.capacity))
    slots, sizes = packed_slot_ids(
        route.experts, route.positions, route.keep, kept, route.groups
    )
    slots = ops.reshape(slots, (-1, k))
    num_rows = ops.shape(slots)[0] * k
    buffer = index_dispatch(x, slots, num_rows)
    out = experts(buffer, grouped_rows(sizes, num_rows))
    return index_combine(out, slots, route.weights)


def einsum_moe(x: Any, route: Route, experts: ExpertFn) -> Any:
    """The GShard one-hot dispatch and combine tensors `[G, S, E, C]` (cost
    grows with the group size; the pattern SPMD partitioners like)."""
    k, d = route.weights.shape[-1], x.shape[-1]
    c, e = route.capacity, route.num_experts
    s = route.experts.shape[1]
    dispatch, combine = one_hot_dispatch_combine(
        route.experts,
        route.positions,
        route.keep,
        ops.cast(ops.reshape(route.weights, (-1, s, k)), "float32"),
        e,
        c,
    )
    buffer = ops.einsum(
        "gsec,gsd->egcd",
        ops.cast(dispatch, x.dtype),
        ops.reshape(x, (-1, s, d)),
    )
    out = experts(ops.reshape(buffer, (e, -1, d)), None)
    out = ops.reshape(out, (e, -1, c, out.shape[-1]))
    y = ops.einsum("gsec,egcn->gsn", ops.cast(combine, x.dtype), out)
    return ops.reshape(y, (-1, out.shape[-1]))


def dense_moe(x: Any, route: Route, experts: ExpertFn) -> Any:
    """Every expert on every token, mixed by the same (dropped) combine
    weights; for tiny `E` or for checking."""
    k, e = route.weights.shape[-1], route.num_experts
    chosen = one_hot(ops.reshape(route.experts, (-1, k)), e, x.dtype)
    combine = ops.einsum("tk,tke->te", route.weights, chosen)
    everything = ops.broadcast_to(ops.expand_dims(x, 0), (e, *ops.shape(x)))
    return ops.einsum("te,etn->tn", combine, experts(everything, None))


DISPATCHERS: dict[str, Callable[[Any, Route, ExpertFn], Any]] = {
    "index": index_moe,
    "grouped": grouped_moe,
    "einsum": einsum_moe,
    "dense": dense_moe,
}


# --- losses ---------------------------------------------------------------------


def switch_balance_loss(probs: Any, chosen: Any, valid: Any) -> Any:
    """`E * sum_e f_e * P_e` over valid tokens (minimum 1 at uniform routing).

    `f_e`: fraction of the `k * N` assignments (before capacity) made to `e`;
    `P_e`: mean router probability of `e`. `probs` `[T, E]`, `chosen` `[T, E]`
    (how many of a token's `k` choices went to each expert: the `one_hot`
    of its experts summed over `k`), `valid` `[T]` float.
    """
    num_experts = probs.shape[-1]
    assignments = ops.sum(chosen * valid[:, None], axis=0)
    fraction = assignments / at_least_one(ops.sum(assignments))
    mean_prob = ops.sum(probs * valid[:, None], axis=0) / at_least_one(ops.sum(valid))
    return float(num_experts) * ops.sum(fraction * mean_prob)


def normal_cdf(x: Any) -> Any:
    return 0.5 * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def prob_in_top_k(clean: Any, noisy: Any, stddev: Any, k: int) -> Any:
    """Shazeer et al. (2017) smooth load: the probability, under fresh noise,
    that each expert stays in the top k given the other logits (T2T
    `_prob_in_top_k`). All `[T, E]`; needs `k < E`."""
    top, _ = ops.top_k(noisy, k + 1)
    threshold_in = top[:, k : k + 1]
    threshold_out = top[:, k - 1 : k]
    is_in = noisy > threshold_in
    prob_in = normal_cdf((clean - threshold_in) / stddev)
    prob_out = normal_cdf((clean - threshold_out) / stddev)
    return ops.where(is_in, prob_in, prob_out)


def z_loss(logits: Any, valid: Any) -> Any:
    """ST-MoE router z-loss: mean over valid tokens of `logsumexp(logits)^2`."""
    lse = ops.logsumexp(logits, axis=-1)
    return ops.sum(ops.square(lse) * valid) / at_least_one(ops.sum(valid))


def at_least_one(count: Any) -> Any:
    """`max(count, 1)`: the denominator of a mean over possibly no tokens."""
    return ops.maximum(count, ops.ones_like(count))
