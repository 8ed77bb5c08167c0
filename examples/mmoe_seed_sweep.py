"""The synthetic comparison of `mmoe_synthetic.py` over hundreds of seeds at once.

The MMoE paper (Ma et al., KDD 2018) averages each setting over many
repeated runs; the effect it reports (shared-bottom degrades as the task
correlation `p` falls, MMoE much less) is small next to the spread between
initialisations, so ten or thirty runs cannot settle it (see
`examples/README.md`). Each of these models is tiny (15k–22k parameters), so a
step of one model is all overhead on a CPU; this script trains `--seeds` copies
of each model in one step instead, with `jax.vmap` over Keras's
`stateless_call` and the optimizer's `stateless_apply`: the native-JAX use of
the layers, unchanged.

Per seed, the tasks (`w_1`, `w_2`, α, β) and the initial weights are those of
`mmoe_synthetic.py` for the same seed (JAX backend). The data differ: each
step draws a fresh batch (`x ~ N(0, I)`, label noise) from the seed's own JAX
key, so there is no fixed training set and no overfitting, and every seed
gets `--steps * --batch` examples; the test set is `--test` fresh examples
per seed, the same for all models. Models, loss (sum of the two MSEs) and
Adam at a constant learning rate are as in `mmoe_synthetic.py`. Printed: the
same tables as there, plus the mean test loss along training (every
`--eval-every` steps), the closest analogue of the paper's loss curves.

    KERAS_BACKEND=jax python examples/mmoe_seed_sweep.py --seeds 200
    KERAS_BACKEND=jax python examples/mmoe_seed_sweep.py --quick
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import keras
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mmoe_synthetic as ex  # noqa: E402


def _stack(trees: list) -> list:
    return [np.stack(leaves) for leaves in zip(*trees, strict=True)]


def tasks(correlation: float, seeds: list) -> dict:
    """The seeds' task parameters, stacked: `w` `[S, 2, d]`, α and β `[S, m]`."""
    drawn = [ex.make_task(correlation, seed)[:4] for seed in seeds]
    return {
        "w": np.stack([np.stack([w1, w2]) for w1, w2, _, _ in drawn]),
        "alpha": np.stack([a for _, _, a, _ in drawn]),
        "beta": np.stack([b for _, _, _, b in drawn]),
    }


def sample(task: dict, key, n: int) -> tuple:
    """`n` fresh examples of one seed's two tasks (the formula of `make_data`)."""
    import jax
    import jax.numpy as jnp

    kx, kn = jax.random.split(key)
    x = jax.random.normal(kx, (n, ex.DIM))
    z = x @ task["w"].T  # [n, 2]
    sines = jnp.sin(z[..., None] * task["alpha"] + task["beta"]).sum(-1)
    y = z + sines + ex.NOISE_STD * jax.random.normal(kn, (n, 2))
    return x, [y[:, :1], y[:, 1:]]


class Sweep:
    """`len(seeds)` copies of one model, trained together by `jax.vmap`.

    The model, its initial weights per seed and its optimizer come from
    `mmoe_synthetic.build_model`; the step is the model's `stateless_call`
    and the optimizer's `stateless_apply`, vmapped over the seed axis of
    every variable, task parameter and random key.
    """

    def __init__(self, kind: str, seeds: list, learning_rate: float) -> None:
        import jax

        inits = []
        for seed in seeds:
            model = ex.build_model(kind, seed, learning_rate)
            inits.append(
                (
                    [v.numpy() for v in model.trainable_variables],
                    [v.numpy() for v in model.non_trainable_variables],
                )
            )
        self.model = model
        self.num_params = model.count_params()
        self.optimizer = model.optimizer
        self.optimizer.build(model.trainable_variables)
        opt_vars = [
            np.broadcast_to(v.numpy(), (len(seeds), *v.shape)).copy()
            for v in self.optimizer.variables
        ]
        self.initial = (_stack([t for t, _ in inits]), _stack([n for _, n in inits]))
        self.initial += (opt_vars,)
        self.state = self.initial
        self._train = jax.jit(self._steps, static_argnums=(4, 5))
        self._test = jax.jit(self._test_losses, static_argnums=(3,))

    def reset(self) -> None:
        """Back to the initial weights and a fresh optimizer."""
        self.state = self.initial

    def _loss(self, trainable, non_trainable, x, ys, training):
        import jax.numpy as jnp

        preds, non_trainable, losses = self.model.stateless_call(
            trainable, non_trainable, x, training=training, return_losses=True
        )
        loss = sum(jnp.mean((p - y) ** 2) for p, y in zip(preds, ys, strict=True))
        return loss + sum(losses), non_trainable

    def _step_one(self, state, task, key, batch):
        import jax

        trainable, non_trainable, opt_vars = state
        x, ys = sample(task, key, batch)
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, ys, True)
        trainable, opt_vars = self.optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), loss

    def _steps(self, state, task, keys, start, steps, batch):
        """Steps `start .. start + steps` of every seed, `keys` one per seed."""
        import jax
        import jax.numpy as jnp

        step = jax.vmap(self._step_one, in_axes=(0, 0, 0, None))

        def body(state, i):
            step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
            return step(state, task, step_keys, batch)

        state, losses = jax.lax.scan(body, state, start + jnp.arange(steps))
        return state, losses.mean(axis=0)

    def train(self, task: dict, keys, start: int, steps: int, batch: int):
        """Trains every seed `steps` more steps; their mean training loss `[S]`."""
        self.state, losses = self._train(self.state, task, keys, start, steps, batch)
        return np.asarray(losses)

    def _test_losses(self, state, task, keys, n):
        import jax

        def one(args):
            trainable, non_trainable, task, key = args
            x, ys = sample(task, key, n)
            return self._loss(trainable, non_trainable, x, ys, False)[0]

        return jax.lax.map(one, (state[0], state[1], task, keys))

    def test_loss(self, task: dict, keys, n: int) -> np.ndarray:
        """Each seed's loss on its own `n` test examples, `[S]`."""
        return np.asarray(self._test(self.state, task, keys, n))


def run(args: argparse.Namespace, seeds: list) -> tuple:
    """Test-loss curves `[S][checkpoints]` keyed (model, p), parameter counts, steps."""
    import jax

    base = [jax.random.PRNGKey(seed) for seed in seeds]
    train_keys = np.stack([jax.random.fold_in(k, 0) for k in base])
    test_keys = np.stack([jax.random.fold_in(k, 1) for k in base])
    curves, params = {}, {}
    checkpoints = list(range(args.eval_every, args.steps + 1, args.eval_every))
    for kind in args.models:
        start = time.time()
        sweep = Sweep(kind, seeds, args.lr)
        params[kind] = sweep.num_params
        for corr in ex.CORRELATIONS:
            task = tasks(corr, seeds)
            sweep.reset()
            losses, step = [], 0
            for stop in checkpoints:
                train = sweep.train(task, train_keys, step, stop - step, args.batch)
                losses.append(sweep.test_loss(task, test_keys, args.test))
                step = stop
                print(
                    f"  {kind} p={corr} step {step:5d}: train {train.mean():.4f} "
                    f"test {losses[-1].mean():.4f} (mean of {len(seeds)} seeds, "
                    f"{time.time() - start:.0f} s)",
                    flush=True,
                )
            curves[(kind, corr)] = np.stack(losses, axis=1).tolist()
    return curves, params, checkpoints


def report(curves: dict, checkpoints: list) -> None:
    """`mmoe_synthetic`'s tables, then the test loss and the claim along training."""
    models = [m for m in ex.MODELS if (m, ex.CORRELATIONS[0]) in curves]
    final = {cell: [c[-1] for c in curve] for cell, curve in curves.items()}
    areas = {cell: np.mean(curve, axis=1).tolist() for cell, curve in curves.items()}
    ex.report(final, areas, len(checkpoints), "evaluations along training", models)
    print("\nTest loss along training (mean over seeds), by step:\n")
    print("| model | p | " + " | ".join(str(c) for c in checkpoints) + " |")
    print("|---|---|" + "---|" * len(checkpoints))
    for kind in models:
        for corr in ex.CORRELATIONS:
            means = np.mean(curves[(kind, corr)], axis=0)
            print(
                f"| {kind} | {corr} | " + " | ".join(f"{m:.4f}" for m in means) + " |"
            )
    if not {"shared_bottom", "mmoe"} <= set(models):
        return
    base = ex.CORRELATIONS[0]
    print(
        "\nGrowth of shared_bottom − mmoe from p = 1.0, per seed, by step: "
        "median (seeds > 0, sign test), and mean ± standard error:\n"
    )
    print("| p | statistic | " + " | ".join(str(c) for c in checkpoints) + " |")
    print("|---|---|" + "---|" * len(checkpoints))
    gap = {
        c: np.subtract(curves[("shared_bottom", c)], curves[("mmoe", c)])
        for c in ex.CORRELATIONS
    }
    for corr in ex.CORRELATIONS[1:]:
        growth = (gap[corr] - gap[base]).T  # [checkpoints, S]
        cells = [ex._median_count(g) for g in growth]
        print(f"| {corr} | median | " + " | ".join(cells) + " |")
        cells = [ex._mean_se(g) for g in growth]
        print(f"| {corr} | mean | " + " | ".join(cells) + " |")


def _from_json(path: pathlib.Path) -> tuple:
    saved = json.loads(path.read_text())
    curves = {}
    for key, value in saved["test_loss"].items():
        kind, corr = key.split("|")
        if value:  # a model left out with --models
            curves[(kind, float(corr))] = value
    return curves, saved["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument(
        "--models", nargs="+", choices=ex.MODELS, default=list(ex.MODELS)
    )
    parser.add_argument("--json", type=pathlib.Path, help="write per-seed results")
    parser.add_argument(
        "--report", type=pathlib.Path, metavar="JSON", help="report a saved run"
    )
    args = parser.parse_args()
    if args.report:
        report(*_from_json(args.report))
        return
    if keras.backend.backend() != "jax":
        parser.error(
            "this example trains with jax.vmap: run it with KERAS_BACKEND=jax "
            f"(received: {keras.backend.backend()})"
        )
    if args.quick:
        args.seeds, args.steps, args.eval_every, args.test = 3, 20, 10, 256
    if args.steps < args.eval_every or args.steps % args.eval_every:
        parser.error(
            "--steps must be a positive multiple of --eval-every "
            f"(received: --steps={args.steps} --eval-every={args.eval_every})"
        )
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    start = time.time()
    curves, params, checkpoints = run(args, seeds)
    print(
        f"\n{len(seeds)} seeds, {args.steps} steps of batch {args.batch} "
        f"(fresh examples each step), {args.test} test examples per seed, "
        f"lr {args.lr}, {time.time() - start:.0f} s; parameters: "
        + ", ".join(f"{k} {v}" for k, v in params.items())
        + "\n"
    )
    report(curves, checkpoints)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seeds": seeds,
                    "steps": checkpoints,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "test_loss": {ex._json_key(c): v for c, v in curves.items()},
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
