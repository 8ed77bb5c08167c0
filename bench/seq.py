"""Behaviour-sequence layers: DIEN scan vs unrolled, DIN vs a per-step loop.

Forward + backward (one training step: layer, `Dense(1)` head, MSE, SGD) on
padded sequences (batch 256, embedding 32, lengths drawn uniformly in
`[1, T]`, mask passed as an input) for `T = 50` and `T = 200`:

- DIEN (`AUGRU`, 32 units): the default scan-based evolution
  (`unroll=False`, `keras.ops.scan`) against the same layer with
  `unroll=True` (a static Python loop over the steps). Both share the Keras
  `GRU` interest extractor, so the ratio isolates the evolution pass.
- DIN (attention MLP `[80, 40, 1]`, relu, `mode="sum"`): the layer against
  a Keras layer that runs the same attention MLP (same weights, checked to
  give the same output) on one time step at a time in a Python
  `for t in range(T)` loop and accumulates the weighted sum.

Compiled with `jit_compile=True` (XLA) on JAX, and on TensorFlow for DIN.
DIEN on TensorFlow runs as a `tf.function` graph without XLA: the training
step of the scan path does not compile with XLA there (Keras's TF `ops.scan`
builds a `tf.while_loop` without `maximum_iterations`, and its gradient then
fails with "XLA compilation requires a fixed tensor list size"). On torch the
models run eagerly: `torch.compile` of a 200-step recurrence takes minutes to
compile, and Keras's `ops.scan` on torch is a Python loop anyway. On JAX the
unrolled DIEN is not run at `T = 200` (see `MAX_XLA_UNROLL`).
"""

from __future__ import annotations

import sys
import time

import keras
import numpy as np
from keras import ops

from bench.timing import median_seconds
from bench.timing import result_row
from keras_mtl import layers

BATCH, EMB = 256, 32
STEPS = [50, 200]
DIN_UNITS = [80, 40, 1]
# (warm-up, repeats) per T: compile time grows with the unrolled loops.
REPEATS = {50: (2, 10), 200: (1, 5)}
# XLA compiles the unrolled 200-step DIEN training step for tens of minutes and
# ran a 23 GB machine out of memory (JAX, T=200: killed after 27 min); 50 steps
# compile in ~30 s. TensorFlow runs DIEN without XLA (below), so only JAX
# skips it.
MAX_XLA_UNROLL = 50


class LoopDIN(keras.layers.Layer):
    """DIN's `mode="sum"` attention, one time step at a time in Python."""

    def __init__(self, hidden_units: list[int], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.tower = layers.MLP(hidden_units, activations="relu", name="tower")

    def build(self, input_shape: object) -> None:
        q_shape = input_shape[0]
        self.tower.build((q_shape[0], 4 * q_shape[-1]))

    def call(self, inputs: object) -> object:
        q, k, mask = inputs
        mask = ops.cast(ops.greater_equal(mask, 1.0), k.dtype)
        out = ops.zeros_like(q)
        for t in range(k.shape[1]):
            k_t = k[:, t] * mask[:, t : t + 1]
            w_t = self.tower(ops.concatenate([q, k_t, q - k_t, q * k_t], -1))
            out = out + w_t * mask[:, t : t + 1] * k_t
        return out


def _jit(dien: bool = False) -> bool:
    backend = keras.backend.backend()
    return not (backend == "torch" or (dien and backend == "tensorflow"))


def _compile(inputs: list, output: object, jit: bool) -> keras.Model:
    model = keras.Model(inputs, keras.layers.Dense(1)(output))
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
    return model


def _inputs(steps: int) -> list:
    return [
        keras.Input((EMB,), batch_size=BATCH),
        keras.Input((steps, EMB), batch_size=BATCH),
        keras.Input((steps,), batch_size=BATCH),
    ]


def _dien(steps: int, unroll: bool) -> keras.Model:
    q, k, m = _inputs(steps)
    y = layers.DIEN(EMB, att_type="AUGRU", unroll=unroll)([q, k, m])
    return _compile([q, k, m], y, _jit(dien=True))


def _din(steps: int) -> tuple[keras.Model, keras.layers.Layer]:
    q, k, m = _inputs(steps)
    din = layers.DIN(DIN_UNITS, activation="relu")
    return _compile([q, k, m], din([q, k], mask=m), _jit()), din


def _loop_din(steps: int) -> tuple[keras.Model, keras.layers.Layer]:
    q, k, m = _inputs(steps)
    loop = LoopDIN(DIN_UNITS)
    return _compile([q, k, m], loop([q, k, m]), _jit()), loop


def _data(steps: int, rng: np.random.RandomState) -> tuple[list, np.ndarray]:
    q = rng.standard_normal((BATCH, EMB)).astype("float32")
    k = rng.standard_normal((BATCH, steps, EMB)).astype("float32")
    lengths = rng.randint(1, steps + 1, size=BATCH)
    m = (np.arange(steps)[None] < lengths[:, None]).astype("float32")
    y = rng.standard_normal((BATCH, 1)).astype("float32")
    return [q, k, m], y


def _time(model: keras.Model, x: list, y: np.ndarray, steps: int) -> float:
    warmup, repeats = REPEATS[steps]
    start = time.perf_counter()
    seconds = median_seconds(
        lambda: model.train_on_batch(x, y), warmup=warmup, repeats=repeats
    )
    print(
        f"  {model.name} T={steps}: {seconds * 1e3:.1f} ms "
        f"({time.perf_counter() - start:.0f} s with compilation)",
        file=sys.stderr,
        flush=True,
    )
    return seconds


def run() -> list[dict[str, object]]:
    rows = []
    rng = np.random.RandomState(0)
    for steps in STEPS:
        x, y = _data(steps, rng)
        shape = f"B={BATCH} T={steps} E={EMB}"
        baseline = "DIEN unroll=True (static Python loop)"
        if keras.backend.backend() == "jax" and steps > MAX_XLA_UNROLL:
            unrolled = float("nan")
            baseline += f" (not run: XLA, T > {MAX_XLA_UNROLL})"
        else:
            unrolled = _time(_dien(steps, unroll=True), x, y, steps)
        scan = _time(_dien(steps, unroll=False), x, y, steps)
        rows.append(
            result_row(
                f"DIEN AUGRU fwd+bwd {shape} (ours: scan, default)",
                baseline,
                unrolled,
                scan,
            )
        )
        din_model, din = _din(steps)
        loop_model, loop = _loop_din(steps)
        for src, dst in zip(
            din.compress_tower.weights, loop.tower.weights, strict=True
        ):
            dst.assign(ops.convert_to_numpy(src))
        np.testing.assert_allclose(
            ops.convert_to_numpy(loop(x)),
            ops.convert_to_numpy(din(x[:2], mask=x[2])),
            rtol=1e-4,
            atol=1e-4,
        )
        base = _time(loop_model, x, y, steps)
        ours = _time(din_model, x, y, steps)
        rows.append(
            result_row(
                f"DIN [80, 40, 1] fwd+bwd {shape}",
                "same attention, Python loop over steps",
                base,
                ours,
            )
        )
    return rows
