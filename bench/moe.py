"""Sparse MoE dispatch against the dense path, the one-hot einsum and a matmul.

Layer: `SparseMoE`, T = 4096 tokens, E = 64 experts, k = 2, d = 256, expert
hidden 512 (relu, then linear back to 256), capacity factor 1.25 (C = 160),
one group of 4096 tokens. Timed forward and forward+backward (gradients of
`sum(y^2)` plus the balance loss with respect to every weight), compiled
where the backend compiles (`jax.jit`, `tf.function(jit_compile=True)`; torch
runs eagerly), median wall time.

Variants, all the same layer and weights, measured in the same run:

- `index` (the CPU default, except on torch where `auto` picks `grouped`
  for these widths),
- `grouped`: kept assignments sorted by expert into `T * k` rows, experts as
  grouped matmuls (`torch._grouped_mm` on torch; the `keras.ops` blocked
  fallback on JAX and TensorFlow, see `keras_mtl.backend.grouped`),
- `dropless grouped`: the same without a capacity (`capacity_factor=None`),
- `einsum`: the single-group one-hot GShard dispatch (`dispatcher="einsum"`),
- `dense`: every expert on every token (`dispatcher="dense"`),
- the compute limit: one `[2048, 2048] @ [2048, 2048]` float32 matmul,
  timed in alternation with the index dispatcher's forward and
  forward+backward (15 rounds after 3 warm-ups), gives the machine's matmul
  throughput at the moment the layer is timed; the layer's
  efficiency is `active FLOPs / time / that throughput`, active FLOPs being
  `T * k * 4 * d * h` forward and three times that forward+backward;
- `experts alone`: the layer's expert MLPs on a ready `[E, C, d]` buffer
  (same weights, no routing, no gather or scatter), timed in the same rounds:
  the least a capacity-padded dispatcher computes, so about the highest
  "% of matmul" one can read on this machine (below 80% at C = 160, where a
  fifth of the slots are empty on average, and lower still because batched
  `[160, 256] x [256, 512]` products run below the large matmul's
  throughput).

`HierarchicalMoE` at 8 x 8 experts and 8192 tokens (groups of 1024,
capacities 160 / 160) is timed with the index, grouped and einsum dispatchers
(on TensorFlow its forward+backward runs without XLA, see `_compiled`).
"""

from __future__ import annotations

import keras
import numpy as np

from bench.timing import median_seconds
from bench.timing import paired_median_seconds
from bench.timing import result_row
from keras_mtl import layers

TOKENS, EXPERTS, TOP_K, DIM, HIDDEN, CF = 4096, 64, 2, 256, 512, 1.25
MATMUL = 2048


def _compiled(layer, x, xla_backward=True):
    """`(forward, forward_backward, sync)` closures compiled for the backend.

    `xla_backward=False` runs TensorFlow's forward+backward as a graph without
    XLA: XLA's CPU compiler needs minutes for the two-level index dispatch's
    backward pass (220 s at 2048 tokens), against well under a second without.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def fwd(tv, ntv, x):
            return layer.stateless_call(tv, ntv, x, training=True)[0]

        def loss(tv, ntv, x):
            y, _, losses = layer.stateless_call(
                tv, ntv, x, training=True, return_losses=True
            )
            return keras.ops.sum(y * y) + sum(losses)

        jf, jg = jax.jit(fwd), jax.jit(jax.grad(loss))
        return (
            lambda: jf(tv, ntv, x),
            lambda: jg(tv, ntv, x),
            jax.block_until_ready,
        )
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)

        @tf.function(jit_compile=True)
        def tf_fwd(x):
            return layer(x, training=True)

        @tf.function(jit_compile=xla_backward)
        def tf_grad(x):
            with tf.GradientTape() as tape:
                y = layer(x, training=True)
                value = tf.reduce_sum(y * y) + sum(layer.losses)
            grads = tape.gradient(value, layer.trainable_variables)
            # `None` for weights off the path (the router, experts alone).
            # A gather's gradient is `tf.IndexedSlices`, densified here as an
            # optimizer would (returned from an XLA function as slices, its
            # values keep a padded static shape that no longer matches).
            return [tf.convert_to_tensor(g) for g in grads if g is not None]

        return (
            lambda: tf_fwd(xt),
            lambda: tf_grad(xt),
            lambda out: tf.nest.map_structure(lambda t: t.numpy(), out),
        )
    import torch

    xt = torch.tensor(x)

    def torch_fwd():
        with torch.no_grad():
            return layer(xt, training=True)

    def torch_grad():
        for v in layer.trainable_variables:
            v.value.grad = None
        y = layer(xt, training=True)
        value = (y * y).sum() + sum(layer.losses)
        value.backward()
        return value

    return torch_fwd, torch_grad, None


def _matmul_call():
    """One float32 `[n, n] @ [n, n]` matmul (compiled), finished on return."""
    rng = np.random.RandomState(0)
    a = rng.standard_normal((MATMUL, MATMUL)).astype("float32")
    b = rng.standard_normal((MATMUL, MATMUL)).astype("float32")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        f = jax.jit(lambda a, b: a @ b)
        return lambda: jax.block_until_ready(f(a, b))
    if backend == "tensorflow":
        import tensorflow as tf

        at, bt = tf.constant(a), tf.constant(b)
        f = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)
        return lambda: f(at, bt).numpy()
    import torch

    at, bt = torch.tensor(a), torch.tensor(b)
    return lambda: at @ bt


def _layer(cls, x, **kwargs):
    layer = cls(**kwargs)
    layer.build(x.shape)
    rng = np.random.RandomState(1)
    for v in layer.trainable_variables:  # identical weights for every variant
        v.assign(
            (rng.standard_normal(v.shape) / np.sqrt(v.shape[-2])).astype("float32")
        )
    return layer


def _time(layer, x, repeats=(5, 3), xla_backward=True, warmup=3):
    # Several warm-up calls: with one, TensorFlow's compiled step read up to
    # 40% slower than in longer runs (bench/moe_results.md as of commit 228ee82).
    fwd, grad, sync = _compiled(layer, x, xla_backward)
    t_fwd = median_seconds(fwd, warmup, repeats[0], sync)
    t_grad = median_seconds(grad, warmup, repeats[1], sync)
    return t_fwd, t_grad


class _ExpertsAlone(keras.layers.Layer):
    """A `SparseMoE`'s expert MLPs on a ready `[E, C, d]` buffer, no routing.

    What any capacity-padded dispatcher must compute at the least: the same
    weights and the same batched matmuls over all `E * C` slots, filled or
    empty. Its time bounds the layer's "% of matmul" from above.
    """

    def __init__(self, moe):
        super().__init__(name="experts_alone")
        self.moe = moe
        self.built = True

    def call(self, buffer, training=None):
        return self.moe.run_experts(buffer)


def _time_with_matmul(layer, x, repeats=15, warmup=3):
    """Seconds of the layer and of its experts alone (fwd, fwd+bwd each) and
    of the reference matmul, all timed in alternation.

    This machine's speed drifts by up to ±30% over minutes; timing the
    reference matmul in the same rounds as the layer keeps their ratio (the
    "% of matmul") from depending on when each was measured.
    """
    steps = {}
    capacity = layer.capacity(TOKENS, training=True)
    buffer = np.random.RandomState(2).standard_normal((EXPERTS, capacity, DIM))
    for name, model, inputs in (
        ("", layer, x),
        ("experts ", _ExpertsAlone(layer), buffer.astype("float32")),
    ):
        fwd, grad, sync = _compiled(model, inputs)
        sync = sync or (lambda out: None)
        steps[f"{name}fwd"] = lambda fwd=fwd, sync=sync: sync(fwd())
        steps[f"{name}grad"] = lambda grad=grad, sync=sync: sync(grad())
    steps["matmul"] = _matmul_call()
    return paired_median_seconds(steps, warmup=warmup, repeats=repeats)


def run() -> list[dict]:
    rng = np.random.RandomState(0)
    x = rng.standard_normal((TOKENS, DIM)).astype("float32")
    active = TOKENS * TOP_K * 4.0 * DIM * HIDDEN  # forward FLOPs
    times = {}
    dropped = None
    for dispatcher in ("index", "grouped", "dropless grouped", "einsum", "dense"):
        cf = None if dispatcher.startswith("dropless") else CF
        layer = _layer(
            layers.SparseMoE,
            x,
            num_experts=EXPERTS,
            expert_hidden_units=[HIDDEN],
            top_k=TOP_K,
            capacity_factor=cf,
            eval_capacity_factor=cf,
            dispatcher=dispatcher.split()[-1],
        )
        if dispatcher == "index":
            t = _time_with_matmul(layer, x)
            times[dispatcher] = t["fwd"], t["grad"]
            times["experts alone"] = t["experts fwd"], t["experts grad"]
            peak = 2.0 * MATMUL**3 / t["matmul"]  # FLOP/s
        else:
            times[dispatcher] = _time(layer, x, (5, 3), warmup=2)
        if dropped is None:
            layer(x, training=True)
            dropped = float(keras.ops.convert_to_numpy(layer.dropped_fraction))
            capacity = layer.capacity(TOKENS, training=True)
    rows = []
    lines = [
        f"matmul {MATMUL}^3 float32: {peak / 1e9:.1f} GFLOP/s; "
        f"SparseMoE T={TOKENS} E={EXPERTS} k={TOP_K} d={DIM} h={HIDDEN} "
        f"cf={CF} (C={capacity}), dropped assignments {dropped:.1%}",
        "",
        "| SparseMoE | fwd ms | fwd+bwd ms | fwd % of matmul | fwd+bwd % of matmul |",
        "|---|---|---|---|---|",
    ]
    for name, (t_fwd, t_grad) in times.items():
        lines.append(
            f"| {name} | {t_fwd * 1e3:.1f} | {t_grad * 1e3:.1f} | "
            f"{active / t_fwd / peak:.0%} | {3 * active / t_grad / peak:.0%} |"
        )
    for base, label in (
        ("dense", "dense dispatcher"),
        ("einsum", "einsum dispatcher"),
        ("experts alone", "experts alone"),
        ("grouped", "grouped dispatcher"),
        ("dropless grouped", "dropless grouped"),
    ):
        for i, mode in enumerate(("fwd", "fwd+bwd")):
            rows.append(
                result_row(
                    f"SparseMoE index {mode}", label, times[base][i], times["index"][i]
                )
            )
    for i, mode in enumerate(("fwd", "fwd+bwd")):
        rows.append(
            result_row(
                f"SparseMoE index {mode}",
                "matmul at active FLOPs",
                (1 + 2 * i) * active / peak,
                times["index"][i],
            )
        )

    xh = rng.standard_normal((2 * TOKENS, DIM)).astype("float32")
    htimes = {}
    for dispatcher in ("index", "grouped", "einsum"):
        layer = _layer(
            layers.HierarchicalMoE,
            xh,
            num_experts=(8, 8),
            expert_hidden_units=HIDDEN,
            group_size=1024,
            second_policy_train="all",
            dispatcher=dispatcher,
        )
        htimes[dispatcher] = _time(layer, xh, (3, 2), xla_backward=False)
    sizes = layer.layout(2 * TOKENS, training=True)
    lines += [
        "",
        f"HierarchicalMoE 8x8 experts, {2 * TOKENS} tokens, d={DIM} h={HIDDEN}, "
        f"layout {sizes}",
        "",
        "| HierarchicalMoE | fwd ms | fwd+bwd ms |",
        "|---|---|---|",
    ]
    for name, (t_fwd, t_grad) in htimes.items():
        lines.append(f"| {name} | {t_fwd * 1e3:.1f} | {t_grad * 1e3:.1f} |")
    for base in ("einsum", "grouped"):
        for i, mode in enumerate(("fwd", "fwd+bwd")):
            rows.append(
                result_row(
                    f"HierarchicalMoE 8x8 index {mode}",
                    f"{base} dispatcher",
                    htimes[base][i],
                    htimes["index"][i],
                )
            )
    print("\n".join(lines) + "\n")
    return rows
