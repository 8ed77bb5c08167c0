"""Shared-bottom vs MMoE vs PLE on the synthetic two-task data of the MMoE paper.

Ma et al., KDD 2018, §4.2: two regression tasks whose label correlation is set
by the cosine `p` between their weight vectors:

    u_1, u_2 orthogonal unit vectors in R^d
    w_1 = c u_1,  w_2 = c (p u_1 + sqrt(1 - p^2) u_2)
    x ~ N(0, I_d)
    y_i = w_i^T x + sum_{j=1..m} sin(alpha_j w_i^T x + beta_j) + eps_i,
    eps_i ~ N(0, 0.01)

with d = 100, c = 1, m = 10 as in the paper; alpha_j, beta_j ~ N(0, 1) (the
paper only calls them given parameters). For each correlation and seed the
three models are trained with Adam on the sum of the two MSEs; the script
prints the mean (± std over seeds) of the final test loss (sum of the two
task MSEs) per model and correlation as a Markdown table.

    KERAS_BACKEND=jax python examples/mmoe_synthetic.py [--quick]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import keras
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from keras_mtl import layers  # noqa: E402

CORRELATIONS = (1.0, 0.5, 0.0)
MODELS = ("shared_bottom", "mmoe", "ple")
DIM, SCALE, NUM_SINES = 100, 1.0, 10


def make_data(correlation: float, n: int, seed: int) -> tuple:
    rng = np.random.RandomState(seed)
    u, _ = np.linalg.qr(rng.standard_normal((DIM, 2)))
    u1, u2 = u[:, 0], u[:, 1]
    w1 = SCALE * u1
    w2 = SCALE * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    alpha, beta = rng.standard_normal(NUM_SINES), rng.standard_normal(NUM_SINES)
    x = rng.standard_normal((n, DIM))
    ys = []
    for w in (w1, w2):
        z = x @ w
        y = z + np.sin(np.outer(z, alpha) + beta).sum(axis=1)
        ys.append((y + rng.normal(0.0, 0.1, n))[:, None].astype("float32"))
    return x.astype("float32"), ys


def _towers(outputs: list) -> list:
    return [
        keras.layers.Dense(1, name=f"y{t}")(keras.layers.Dense(8, "relu")(h))
        for t, h in enumerate(outputs)
    ]


def build_model(kind: str, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((DIM,))
    if kind == "shared_bottom":
        h = keras.layers.Dense(128, "relu")(x)
        h = keras.layers.Dense(16)(h)
        outputs = [h, h]
    elif kind == "mmoe":
        outputs = layers.MMoE(
            num_tasks=2,
            expert_output_dims=[16, 16],
            expert_activations="relu",
            num_experts=8,
        )(x)
    elif kind == "ple":
        outputs = layers.PLE(
            num_tasks=2,
            expert_output_dims=[16, 16],
            num_levels=2,
            num_task_experts=2,
            num_shared_experts=4,
        )(x)
    else:
        raise ValueError(f"Unknown model {kind!r}")
    model = keras.Model(x, _towers(outputs), name=kind)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=["mse", "mse"])
    return model


class EpochLog(keras.callbacks.Callback):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        print(
            f"  {self.tag} epoch {epoch + 1:2d}: train {logs.get('loss', 0):.4f} "
            f"test {logs.get('val_loss', 0):.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=8000)
    args = parser.parse_args()
    seeds, epochs, n_train, n_test = args.seeds, args.epochs, args.train, 2000
    if args.quick:
        seeds, epochs, n_train, n_test = 1, 1, 256, 128
    start = time.time()
    results: dict = {(m, c): [] for m in MODELS for c in CORRELATIONS}
    for corr in CORRELATIONS:
        for seed in range(seeds):
            x, ys = make_data(corr, n_train + n_test, seed)
            train = (x[:n_train], [y[:n_train] for y in ys])
            test = (x[n_train:], [y[n_train:] for y in ys])
            for kind in MODELS:
                model = build_model(kind, seed)
                model.fit(
                    *train,
                    validation_data=test,
                    epochs=epochs,
                    batch_size=128,
                    verbose=0,
                    callbacks=[EpochLog(f"{kind} p={corr} seed={seed}")],
                )
                loss = model.evaluate(*test, verbose=0)
                results[(kind, corr)].append(
                    loss[0] if isinstance(loss, list) else loss
                )
    print(
        f"\nbackend {keras.backend.backend()}, {seeds} seed(s), {epochs} epochs, "
        f"{n_train} train / {n_test} test, {time.time() - start:.0f} s\n"
    )
    print("Final test loss (MSE task 1 + MSE task 2), mean ± std over seeds:\n")
    print("| model | " + " | ".join(f"p = {c}" for c in CORRELATIONS) + " |")
    print("|---|" + "---|" * len(CORRELATIONS))
    for kind in MODELS:
        cells = [
            f"{np.mean(results[(kind, c)]):.4f} ± {np.std(results[(kind, c)]):.4f}"
            for c in CORRELATIONS
        ]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
