"""Same weights, same batches: the same training run on TensorFlow, JAX and torch.

Builds each model of `mmoe_synthetic.py` on the first backend, saves its
initial weights, then trains it with `train_on_batch` (Adam, batches in order) from
those weights on every backend, one subprocess per backend, and compares the
per-step training losses. The conformance suite pins each layer's forward
pass and gradients; this checks a whole training run (optimizer, the
trainer's step, many updates) end to end.

    python examples/cross_backend_training.py [--epochs 3] [--train 20000]

Prints, per model, the largest relative difference of the per-step loss from
the first backend's over all steps. Each backend draws its own random
numbers, so runs that start from `keras.utils.set_random_seed(s)` alone are
different runs on different backends; starting from saved weights, they are
the same run.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
BACKENDS = ("jax", "tensorflow", "torch")


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    import mmoe_synthetic as ex

    x, ys = ex.make_data(args.correlation, args.train, args.seed)
    model = ex.build_model(args.model, args.seed, args.lr)
    weights = pathlib.Path(args.weights)
    if args.save:
        np.savez(weights, *model.get_weights())
    else:
        saved = np.load(weights)
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    # `train_on_batch` returns each step's own loss (`fit` logs running means).
    losses = []
    for _ in range(args.epochs):
        for start in range(0, len(x), 256):
            batch = slice(start, start + 256)
            losses.append(model.train_on_batch(x[batch], [y[batch] for y in ys])[0])
    np.save(args.out, np.asarray(losses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["shared_bottom", "mmoe", "ple"])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--correlation", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    # Worker mode (one backend per process; set by `main`).
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        worker(args)
        return
    common = [
        f"--epochs={args.epochs}",
        f"--train={args.train}",
        f"--seed={args.seed}",
        f"--correlation={args.correlation}",
        f"--lr={args.lr}",
    ]
    print(
        "| model | steps | first loss | last loss | "
        + " | ".join(
            f"max rel. diff {b} vs {args.backends[0]}" for b in args.backends[1:]
        )
        + " |"
    )
    print("|---" * (3 + len(args.backends)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            weights = pathlib.Path(tmp, f"{model}.npz")
            runs = {}
            for i, backend in enumerate(args.backends):
                out = pathlib.Path(tmp, f"{model}-{backend}.npy")
                cmd = [
                    sys.executable,
                    __file__,
                    f"--model={model}",
                    f"--weights={weights}",
                    f"--out={out}",
                    *common,
                ]
                if i == 0:
                    cmd.append("--save")
                env = {**os.environ, "KERAS_BACKEND": backend}
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{model} on {backend} failed:\n{done.stderr[-4000:]}")
                runs[backend] = np.load(out)
            first = runs[args.backends[0]]
            diffs = [
                np.max(np.abs(runs[b] - first) / np.abs(first))
                for b in args.backends[1:]
            ]
            print(
                f"| {model} | {len(first)} | {first[0]:.4f} | {first[-1]:.4f} | "
                + " | ".join(f"{d:.1e}" for d in diffs)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
