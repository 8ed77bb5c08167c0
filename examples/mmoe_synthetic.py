"""Shared-bottom vs MMoE vs PLE on the synthetic two-task data of the MMoE paper.

Ma et al., KDD 2018: two regression tasks whose label correlation is set
by the cosine `p` between their weight vectors:

    u_1, u_2 orthogonal unit vectors in R^d
    w_1 = c u_1,  w_2 = c (p u_1 + sqrt(1 - p^2) u_2)
    x ~ N(0, I_d)
    y_i = w_i^T x + sum_{j=1..m} sin(alpha_j w_i^T x + beta_j) + eps_i,
    eps_i ~ N(0, 0.01)

with d = 100, c = 1, m = 10 as in the paper; alpha_j, beta_j ~ N(0, 1) (the
paper only calls them given parameters); N(0, 0.01) read as variance 0.01, so
the noise floor of the summed test loss is 0.02. For each seed one data set is
drawn per correlation (only `w_2` differs between correlations) and all three
models are trained on it from the same initialisation seed with Adam
(constant learning rate) on the sum of the two MSEs. Defaults: 100k training
and 10k test examples, batch 256, learning rate 5e-4, 5 epochs (about 2000
steps), 10 seeds: a fixed, modest training budget, because the paper's
comparison is about trainability (loss curves over training steps); with a
longer, faster run all three models get close to the noise floor and the
correlation trend fades (see `examples/README.md`). The script prints

1. the mean (± std over seeds) of the final test loss (sum of the two task
   MSEs) per model and correlation,
2. paired per-seed differences between models (mean ± standard error),
3. paired per-seed degradation of each model from p = 1.0 to lower p,
4. the mean test loss over the end-of-epoch evaluations (learning-curve area),
5. the paper's claim as one paired statistic per seed, the growth of MMoE's
   advantage over shared-bottom from p = 1.0 to lower p, with its median and
   the number of seeds on which it is positive (robust to the occasional
   stalled run),

as Markdown tables, and a per-epoch log while it runs. `--json PATH` writes
the per-seed results, so runs (other seeds, other backends) can be pooled.

    KERAS_BACKEND=jax python examples/mmoe_synthetic.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import keras
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from keras_mtl import layers  # noqa: E402

CORRELATIONS = (1.0, 0.5, 0.0)
MODELS = ("shared_bottom", "mmoe", "ple")
DIM, SCALE, NUM_SINES, NOISE_STD = 100, 1.0, 10, 0.1


def make_task(correlation: float, seed: int) -> tuple:
    """`(w_1, w_2, alpha, beta, rng)`: one seed's two tasks at correlation `p`.

    For one seed everything but `w_2` is the same for all p. `rng` is the
    seed's generator after these draws; `make_data` draws the examples from it.
    """
    rng = np.random.RandomState(seed)
    u, _ = np.linalg.qr(rng.standard_normal((DIM, 2)))
    u1, u2 = u[:, 0], u[:, 1]
    w1 = SCALE * u1
    w2 = SCALE * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    alpha, beta = rng.standard_normal(NUM_SINES), rng.standard_normal(NUM_SINES)
    return w1, w2, alpha, beta, rng


def make_data(correlation: float, n: int, seed: int) -> tuple:
    """`n` examples of one seed's two tasks at correlation `p`."""
    w1, w2, alpha, beta, rng = make_task(correlation, seed)
    x = rng.standard_normal((n, DIM))
    ys = []
    for w in (w1, w2):
        z = x @ w
        y = z + np.sin(np.outer(z, alpha) + beta).sum(axis=1)
        ys.append((y + rng.normal(0.0, NOISE_STD, n))[:, None].astype("float32"))
    return x.astype("float32"), ys


def _towers(outputs: list) -> list:
    return [
        keras.layers.Dense(1, name=f"y{t}")(keras.layers.Dense(8, "relu")(h))
        for t, h in enumerate(outputs)
    ]


def build_model(kind: str, seed: int, learning_rate: float) -> keras.Model:
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
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=["mse", "mse"])
    return model


class EpochLog(keras.callbacks.Callback):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        print(
            f"  {self.tag} epoch {epoch + 1:2d}: train {logs.get('loss', 0):.4f} "
            f"test {logs.get('val_loss', 0):.4f} ({time.time() - self.start:.0f} s)",
            flush=True,
        )


def _mean_std(values: list) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def _sign_test(positive: int, n: int) -> float:
    """Two-sided exact sign test: P(a count this far from n / 2 | no effect)."""
    tail = sum(math.comb(n, i) for i in range(min(positive, n - positive) + 1))
    return min(1.0, 2.0 * tail / 2.0**n)


def _median_count(values: list) -> str:
    values = np.asarray(values)
    positive = int((values > 0).sum())
    return (
        f"{np.median(values):+.4f} ({positive}/{len(values)} > 0, "
        f"sign test p = {_sign_test(positive, len(values)):.2g})"
    )


def _mean_se(values: list) -> str:
    values = np.asarray(values)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
    return f"{values.mean():+.4f} ± {se:.4f}"


def _table(rows: dict) -> None:
    print("| model | " + " | ".join(f"p = {c}" for c in CORRELATIONS) + " |")
    print("|---|" + "---|" * len(CORRELATIONS))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def _cells() -> dict:
    """An empty per-seed list for each (model, p)."""
    return {(m, c): [] for m in MODELS for c in CORRELATIONS}


def _json_key(cell: tuple) -> str:
    return f"{cell[0]}|{cell[1]}"


def train_all(args: argparse.Namespace, seeds: list, epochs: int, n: tuple) -> tuple:
    """Per-seed final test losses and learning-curve areas, keyed (model, p)."""
    n_train, n_test = n
    results, curves = _cells(), _cells()
    params: dict = {}
    for seed in seeds:
        for corr in CORRELATIONS:
            x, ys = make_data(corr, n_train + n_test, seed)
            train = (x[:n_train], [y[:n_train] for y in ys])
            test = (x[n_train:], [y[n_train:] for y in ys])
            for kind in MODELS:
                model = build_model(kind, seed, args.lr)
                params[kind] = model.count_params()
                history = model.fit(
                    *train,
                    validation_data=test,
                    epochs=epochs,
                    batch_size=args.batch,
                    verbose=0,
                    callbacks=[EpochLog(f"{kind} p={corr} seed={seed}")],
                )
                loss = model.evaluate(*test, batch_size=4096, verbose=0)
                results[(kind, corr)].append(
                    loss[0] if isinstance(loss, list) else loss
                )
                curves[(kind, corr)].append(np.mean(history.history["val_loss"]))
    return results, curves, params


def report(
    results: dict,
    curves: dict,
    epochs: int,
    evaluations: str = "end-of-epoch evaluations",
    models: tuple = MODELS,
) -> None:
    """The Markdown tables; each list in `results` / `curves` is per seed."""
    print("Final test loss (MSE task 1 + MSE task 2), mean ± std over seeds:\n")
    _table({k: [_mean_std(results[(k, c)]) for c in CORRELATIONS] for k in models})
    print("\nPaired difference of final test loss, mean ± standard error over seeds:\n")
    pairs = [
        (a, b)
        for a, b in (
            ("shared_bottom", "mmoe"),
            ("shared_bottom", "ple"),
            ("mmoe", "ple"),
        )
        if a in models and b in models
    ]
    _table(
        {
            f"{a} − {b}": [
                _mean_se(np.subtract(results[(a, c)], results[(b, c)]))
                for c in CORRELATIONS
            ]
            for a, b in pairs
        }
    )
    print(
        "\nDegradation from p = 1.0 (loss(p) − loss(p = 1.0), same seed), "
        "mean ± standard error over seeds:\n"
    )
    base = CORRELATIONS[0]
    _table(
        {
            k: [
                _mean_se(np.subtract(results[(k, c)], results[(k, base)]))
                for c in CORRELATIONS
            ]
            for k in models
        }
    )
    print(
        f"\nMean test loss over the {epochs} {evaluations} (area under "
        "the test-loss curve per evaluation), mean ± std over seeds:\n"
    )
    _table({k: [_mean_std(curves[(k, c)]) for c in CORRELATIONS] for k in models})
    print(
        "\nGrowth of the paired advantage from p = 1.0, "
        "(a − b)(p) − (a − b)(p = 1.0) per seed: median (seeds > 0), "
        "and mean ± standard error:\n"
    )
    rows = {}
    for a, b in pairs:
        gaps = {c: np.subtract(results[(a, c)], results[(b, c)]) for c in CORRELATIONS}
        growth = [gaps[c] - gaps[base] for c in CORRELATIONS[1:]]
        rows[f"{a} − {b}, median"] = ["—"] + [_median_count(g) for g in growth]
        rows[f"{a} − {b}, mean"] = ["—"] + [_mean_se(g) for g in growth]
    _table(rows)


def _to_json(results: dict, curves: dict, meta: dict) -> str:
    return json.dumps(
        {
            **meta,
            "final": {_json_key(cell): v for cell, v in results.items()},
            "curve": {_json_key(cell): v for cell, v in curves.items()},
        },
        indent=1,
    )


def pool(paths: list) -> None:
    """Report runs written with `--json` as one (seeds and backends pooled)."""
    runs = [json.loads(pathlib.Path(path).read_text()) for path in paths]
    if len({run["epochs"] for run in runs}) != 1:
        raise ValueError("--pool: the runs were trained for different epochs")
    results, curves = _cells(), _cells()
    for run in runs:
        for cell in results:
            results[cell] += run["final"][_json_key(cell)]
            curves[cell] += run["curve"][_json_key(cell)]
        print(f"{run['backend']}: seeds {run['seeds'][0]}..{run['seeds'][-1]}")
    print(f"\npooled: {len(results[(MODELS[0], CORRELATIONS[0])])} runs per cell\n")
    report(results, curves, runs[0]["epochs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--json", type=pathlib.Path, help="write per-seed results")
    parser.add_argument(
        "--pool", nargs="+", metavar="JSON", help="report saved runs, no training"
    )
    args = parser.parse_args()
    if args.pool:
        pool(args.pool)
        return
    seeds, epochs, n_train, n_test = args.seeds, args.epochs, args.train, args.test
    if args.quick:
        seeds, epochs, n_train, n_test = 2, 1, 1024, 256
    seed_list = list(range(args.first_seed, args.first_seed + seeds))
    start = time.time()
    results, curves, params = train_all(args, seed_list, epochs, (n_train, n_test))
    print(
        f"\nbackend {keras.backend.backend()}, {seeds} seed(s), {epochs} epochs, "
        f"batch {args.batch}, {n_train} train / {n_test} test, "
        f"{time.time() - start:.0f} s; parameters: "
        + ", ".join(f"{k} {v}" for k, v in params.items())
        + "\n"
    )
    report(results, curves, epochs)
    if args.json:
        meta = {
            "backend": keras.backend.backend(),
            "seeds": seed_list,
            "epochs": epochs,
        }
        args.json.write_text(_to_json(results, curves, meta))


if __name__ == "__main__":
    main()
