"""DCN cross layers (matrix and low rank) against keras-rs `FeatureCross`.

Forward + backward (one jit-compiled training step) of `layer_num` stacked
cross layers followed by a linear head, measured in the same process for
keras_mtl's `DCN` and for keras-rs `FeatureCross` stacked the same way
(`x_{l+1} = FeatureCross_l(x0, x_l)`). Low rank is `DCN(dcn_type="matrix",
low_rank=r)`, `x0 * ((x @ D) @ P + b) + x`: the same maths as keras-rs
`FeatureCross(projection_dim=r)`. Before timing, the keras-rs stack is given
keras_mtl's weights through the docstring's mapping and must produce the
same outputs, so both sides are known to compute the same thing.
"""

from __future__ import annotations

import keras
import numpy as np

from bench.timing import paired_median_seconds
from bench.timing import result_row
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
    cross = layers.DCN(layer_num=layer_num, dcn_type="matrix", low_rank=rank)
    return keras.Model(x0, keras.layers.Dense(1)(cross(x0)))


def _copy_weights(ours: keras.Model, theirs: keras.Model, layer_num: int) -> None:
    """keras-rs FeatureCross weights from keras_mtl's DCN (docstring mapping).

    The biases start at zero on both sides, so they are first set to non-zero
    values, to check their mapping too.
    """
    dcn = next(lay for lay in ours.layers if isinstance(lay, layers.DCN))
    ours_vars = {v.path.split("/")[-1]: v for v in dcn.weights}

    def value(name: str) -> np.ndarray:  # a copy: JAX donates the buffers later
        return keras.ops.convert_to_numpy(ours_vars[name].value)

    crosses = [lay for lay in theirs.layers if type(lay).__name__ == "FeatureCross"]
    assert len(crosses) == layer_num
    for i, cross in enumerate(crosses):
        ours_vars[f"bias_{i}"].assign(np.full(cross.dense.bias.shape, 0.01 * (i + 1)))
        if cross.projection_dim is None:
            cross.dense.kernel.assign(value(f"kernel_{i}"))
        else:
            cross.down_proj_dense.kernel.assign(value(f"down_kernel_{i}"))
            cross.dense.kernel.assign(value(f"up_kernel_{i}"))
        cross.dense.bias.assign(value(f"bias_{i}"))
    theirs.layers[-1].set_weights(ours.layers[-1].get_weights())


def run() -> list[dict[str, object]]:
    rows = []
    rng = np.random.RandomState(0)
    for batch, dim, layer_num, rank in SIZES:
        x = rng.standard_normal((batch, dim)).astype("float32")
        y = rng.standard_normal((batch, 1)).astype("float32")
        for label, r in (("matrix", None), (f"low rank {rank}", rank)):
            models = {
                "keras_rs": _keras_rs_model(dim, layer_num, r),
                "keras_mtl": _keras_mtl_model(dim, layer_num, r),
            }
            _copy_weights(models["keras_mtl"], models["keras_rs"], layer_num)
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(models["keras_rs"](x[:64])),
                keras.ops.convert_to_numpy(models["keras_mtl"](x[:64])),
                rtol=1e-4,
                atol=1e-4,
            )
            steps = {}
            for name, model in models.items():
                model.compile(optimizer="sgd", loss="mse", jit_compile=True)
                steps[name] = lambda m=model, x=x, y=y: m.train_on_batch(x, y)
            times = paired_median_seconds(
                steps, repeats=REPEATS, interleave=keras.backend.backend() != "torch"
            )
            rows.append(
                result_row(
                    f"DCN {label} fwd+bwd B={batch} D={dim} L={layer_num}",
                    "keras-rs FeatureCross",
                    times["keras_rs"],
                    times["keras_mtl"],
                )
            )
    return rows
