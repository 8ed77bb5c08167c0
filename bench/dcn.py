"""DCN cross layers (matrix and low rank) against keras-rs `FeatureCross`.

Forward + backward (one jit-compiled training step) of `layer_num` stacked
cross layers followed by a linear head, measured in the same process for
keras_mtl's `DCN` and for keras-rs `FeatureCross` stacked the same way
(`x_{l+1} = FeatureCross_l(x0, x_l)`). The low-rank comparison uses
keras_mtl's `mixed` type with one expert and a linear low-rank activation,
which computes `x0 * (U C V x + b) + x`: one extra `r x r` matrix `C`
compared with keras-rs's `x0 * (U V x + b) + x`. DCN computes that one-expert
case with plain matmuls and, for a linear activation, as `x @ (V C)`, so `C`
costs a `(d, r) x (r, r)` product per layer rather than one per row.
"""

from __future__ import annotations

import keras
import numpy as np

from bench.timing import paired_median_seconds
from keras_mtl import layers

SIZES = [(1024, 128, 3, 32), (4096, 256, 3, 64)]
# The two models are timed in alternation (`paired_median_seconds`); the
# machine is shared, so more repeats than the default.
REPEATS = 40


def _keras_rs_model(dim: int, layer_num: int, rank: int | None) -> keras.Model:
    import keras_rs

    x0 = keras.Input((dim,))
    x = x0
    for _ in range(layer_num):
        x = keras_rs.layers.FeatureCross(projection_dim=rank)(x0, x)
    return keras.Model(x0, keras.layers.Dense(1)(x))


def _keras_mtl_model(dim: int, layer_num: int, rank: int | None) -> keras.Model:
    x0 = keras.Input((dim,))
    if rank is None:
        cross = layers.DCN(layer_num=layer_num, dcn_type="matrix")
    else:
        cross = layers.DCN(
            layer_num=layer_num,
            dcn_type="mixed",
            num_experts=1,
            low_rank=rank,
            low_rank_activation="linear",
        )
    return keras.Model(x0, keras.layers.Dense(1)(cross(x0)))


def run() -> list[dict[str, object]]:
    rows = []
    rng = np.random.RandomState(0)
    for batch, dim, layer_num, rank in SIZES:
        x = rng.standard_normal((batch, dim)).astype("float32")
        y = rng.standard_normal((batch, 1)).astype("float32")
        for label, r in (("matrix", None), (f"low rank {rank}", rank)):
            steps = {}
            for name, build in (
                ("keras_rs", _keras_rs_model),
                ("keras_mtl", _keras_mtl_model),
            ):
                model = build(dim, layer_num, r)
                model.compile(optimizer="sgd", loss="mse", jit_compile=True)
                steps[name] = lambda m=model, x=x, y=y: m.train_on_batch(x, y)
            times = paired_median_seconds(
                steps, repeats=REPEATS, interleave=keras.backend.backend() != "torch"
            )
            rows.append(
                {
                    "benchmark": f"DCN {label} fwd+bwd B={batch} D={dim} L={layer_num}",
                    "baseline": "keras-rs FeatureCross",
                    "baseline_ms": times["keras_rs"] * 1e3,
                    "ours_ms": times["keras_mtl"] * 1e3,
                    "ratio": times["keras_mtl"] / times["keras_rs"],
                }
            )
    return rows
