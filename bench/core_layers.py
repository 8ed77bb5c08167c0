"""A training step of keras_mtl's weight-normalized MLP against `keras.layers.Dense`.

The baseline is a stack of stock Keras Dense layers of the same sizes, trained
in the same process with the same optimizer and compile settings; the ratio
shows the cost of weight normalization and the extra layer plumbing.
"""

from __future__ import annotations

import keras
import numpy as np

from bench.timing import median_seconds
from bench.timing import result_row
from keras_mtl import layers

SIZES = [(512, 128, [256, 128, 1]), (2048, 512, [1024, 512, 1])]


def _model(kind: str, dim: int, dims: list[int]) -> keras.Model:
    inputs = keras.Input((dim,))
    if kind == "keras_mtl":
        x = layers.MLP(dims, activations="relu")(inputs)
    else:
        x = inputs
        for i, units in enumerate(dims):
            last = i == len(dims) - 1
            x = keras.layers.Dense(units, activation=None if last else "relu")(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    return model


def run() -> list[dict[str, object]]:
    rows = []
    rng = np.random.RandomState(0)
    for batch, dim, dims in SIZES:
        x = rng.standard_normal((batch, dim)).astype("float32")
        y = rng.standard_normal((batch, 1)).astype("float32")
        times = {}
        for kind in ("keras", "keras_mtl"):
            model = _model(kind, dim, dims)
            times[kind] = median_seconds(
                lambda m=model, x=x, y=y: m.train_on_batch(x, y)
            )
        rows.append(
            result_row(
                f"MLP train step B={batch} D={dim} {dims}",
                "keras.layers.Dense stack",
                times["keras"],
                times["keras_mtl"],
            )
        )
    return rows
