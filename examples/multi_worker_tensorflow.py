"""Data-parallel `model.fit` on two workers with
`tf.distribute.MultiWorkerMirroredStrategy`, checked against one worker.

A functional model with `SparseMoE` (Switch, importance and z losses),
`MMoE` (top-k gates with the CV² balance loss) and `SNR` (L0 penalty) is
trained by `model.fit` for a few steps. Each worker is one process; start one
per worker with the same cluster and its own index (loopback ports):

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:PORT0", "127.0.0.1:PORT1"]},
                "task": {"type": "worker", "index": 0}}' \\
        KERAS_BACKEND=tensorflow python examples/multi_worker_tensorflow.py \\
        --out worker0.npz
    # the same with "index": 1 and --out worker1.npz, in a second shell

Without `TF_CONFIG` the script trains the same model on one worker with the
same global batches; `--compare worker0.npz` then prints the largest
differences and exits non-zero if one exceeds the tolerance.
`tests/test_distributed_tensorflow.py` does all of this.

What makes the runs comparable:

- `SparseMoE(group_size=TOKENS)`: one routing group per example, so the
  capacity (`C` slots per expert and group) and the drops do not depend on
  how many examples a call gets (a replica gets half of the global batch);
- the dataset is batched with the global batch size and distributed with
  `AutoShardPolicy.DATA`: `experimental_distribute_dataset` cuts every
  global batch into one contiguous half per worker, in order (checked below
  before training, on the distributed dataset `fit` then uses);
- the auxiliary losses that are batch statistics (the Switch and importance
  losses, the MMoE CV² loss) are computed per replica on its local batch,
  like any statistic of a data-parallel model; the second half of every
  global batch here holds the first half's rows in another order, so that
  the statistics of a half equal those of the whole batch and the one-worker
  run computes the same objective (README, "Scaling out").

Keras 3.15's `fit` fails with more than one worker; the
`MultiWorkerMirroredStrategy` subclass below works around it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mtl  # noqa: E402

WORKERS = 2
GLOBAL_BATCH = 16
LOCAL_BATCH = GLOBAL_BATCH // WORKERS
TOKENS, WIDTH = 4, 8
STEPS_PER_EPOCH, EPOCHS = 3, 2
SEED = 0
RTOL, ATOL = 1e-5, 1e-6


def build_model() -> keras.Model:
    tokens = keras.Input((TOKENS, WIDTH), name="tokens")
    moe = keras_mtl.layers.SparseMoE(
        num_experts=4,
        expert_hidden_units=[16],
        top_k=2,
        # One group per example: C = ceil(2 * 4 * 1.0 / 4) = 2 slots per
        # expert, whatever the number of examples in a call.
        group_size=TOKENS,
        capacity_factor=1.0,
        min_capacity=1,
        switch_loss_weight=1e-2,
        importance_loss_weight=1e-2,
        z_loss_weight=1e-3,
        name="sparse_moe",
    )(tokens)
    h = keras.layers.Flatten()(keras.layers.Add()([tokens, moe]))
    towers = keras_mtl.layers.MMoE(
        num_tasks=2,
        expert_output_dims=[16],
        expert_activations="relu",
        num_experts=3,
        gate_type="topk",
        top_k=2,
        balance_loss_weight=1e-2,
        name="mmoe",
    )(h)
    # One gate sample per call, drawn from the layer's seed generator, whose
    # state is the same on every replica.
    routed = keras_mtl.layers.SNR(
        num_out_subnet=2, out_subnet_dim=8, l0_weight=1e-3, seed=1, name="snr"
    )(towers)
    outputs = {
        f"task_{t}": keras.layers.Dense(1, name=f"task_{t}")(routed[t])
        for t in range(2)
    }
    return keras.Model(tokens, outputs)


def data() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Global batches whose second half holds the first half's rows, permuted."""
    rng = np.random.RandomState(SEED)
    steps = STEPS_PER_EPOCH
    half = rng.standard_normal((steps, LOCAL_BATCH, TOKENS, WIDTH)).astype("float32")
    perm = np.stack([rng.permutation(LOCAL_BATCH) for _ in range(steps)])
    other = np.take_along_axis(half, perm[:, :, None, None], axis=1)
    x = np.concatenate([half, other], axis=1).reshape(-1, TOKENS, WIDTH)
    w = rng.standard_normal((TOKENS * WIDTH, 2)).astype("float32")
    z = np.tanh(x.reshape(len(x), -1) @ w)
    return x, {"task_0": z[:, :1], "task_1": z[:, 1:] ** 2}


def dataset() -> tf.data.Dataset:
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options)


class Progress(keras.callbacks.Callback):
    """Prints and keeps the running loss after every step, so that a failure
    names the process and the step."""

    def __init__(self, who: str) -> None:
        super().__init__()
        self.who = who
        self.epoch = 0
        self.losses: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.epoch * STEPS_PER_EPOCH + batch
        self.losses.append(float(logs["loss"]))
        print(f"{self.who} step {step} loss {self.losses[-1]:.7f}", flush=True)


def check_shards(strategy: tf.distribute.Strategy, distributed, index: int) -> None:
    """Asserts that this worker's batch `k` is rows `[k*B + i*b, k*B + (i+1)*b)`
    of the data (`B` global, `b` local batch, `i` the worker index)."""
    x, _ = data()
    count = 0
    for k, (xb, _) in enumerate(distributed):
        local = strategy.experimental_local_results(xb)
        assert len(local) == 1, f"worker {index}: {len(local)} replicas"
        start = k * GLOBAL_BATCH + index * LOCAL_BATCH
        expected = x[start : start + LOCAL_BATCH]
        got = np.asarray(local[0])
        if got.shape != expected.shape or not np.array_equal(got, expected):
            raise AssertionError(f"worker {index} batch {k}: not rows {start}+")
        count += 1
    assert count == STEPS_PER_EPOCH, f"worker {index}: {count} batches"
    print(
        f"worker {index}: batch k holds rows k*{GLOBAL_BATCH}+{start % GLOBAL_BATCH}+"
    )


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`reduce` that takes what Keras 3.15's `fit` hands it with two workers.

    Keras' TensorFlow trainer (keras/src/backend/tensorflow/trainer.py) calls
    `reduce` (a) in `_maybe_symbolic_build` with a whole `(x, y)` batch of
    per-replica values, and `tf.distribute` reduces single values only ("Attempt
    to convert a value (PerReplica...) to a Tensor"; keras-team/keras#20585),
    and (b) in `reduce_per_replica` with `axis=0` for the scalar metric results
    of every step ("Invalid reduction dimension 0 for input with 0
    dimensions"). Here each value of a nest is reduced, a scalar across the
    replicas only (the mean of the per-replica running means, which is the
    global mean for equal local batches).
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def one(v):
            rank = self.experimental_local_results(v)[0].shape.rank
            return parent.reduce(reduce_op, v, axis=axis if rank else None)

        return tf.nest.map_structure(one, value)


def train(strategy: tf.distribute.Strategy | None, who: str) -> dict:
    keras.utils.set_random_seed(SEED)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model()
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
            loss={"task_0": "mse", "task_1": "mse"},
        )
    initial = [np.array(w) for w in model.get_weights()]
    ds = dataset()
    if strategy is not None:
        # `fit` would distribute the dataset the same way; done here to check
        # the shards of the very object `fit` iterates.
        ds = strategy.experimental_distribute_dataset(ds)
        check_shards(strategy, ds, strategy.cluster_resolver.task_id)
    progress = Progress(who)
    history = model.fit(
        ds, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[progress]
    )
    return {
        "names": [w.path for w in model.weights],
        "initial": initial,
        "trained": [np.array(w) for w in model.get_weights()],
        "loss": np.asarray(history.history["loss"], dtype="float64"),
        "steps": np.asarray(progress.losses, dtype="float64"),
    }


def save(result: dict, path: str) -> None:
    arrays = {f"initial_{i}": w for i, w in enumerate(result["initial"])}
    arrays.update({f"trained_{i}": w for i, w in enumerate(result["trained"])})
    np.savez(
        path,
        names=np.array(result["names"]),
        loss=result["loss"],
        steps=result["steps"],
        **arrays,
    )


def load(path: str) -> dict:
    with np.load(path) as f:
        n = len(f["names"])
        return {
            "names": [str(s) for s in f["names"]],
            "initial": [f[f"initial_{i}"] for i in range(n)],
            "trained": [f[f"trained_{i}"] for i in range(n)],
            "loss": f["loss"],
            "steps": f["steps"],
        }


def differences(single: dict, worker: dict) -> dict[str, tuple[float, float, bool]]:
    """Per compared quantity: max abs difference, max of
    `|a - b| / max(|b|, atol / rtol)` and whether `|a - b| <= atol + rtol |b|`
    everywhere."""
    assert single["names"] == worker["names"], "different weights"
    out = {}
    pairs = {
        "loss history": [(worker["loss"], single["loss"])],
        "step losses": [(worker["steps"], single["steps"])],
    }
    pairs["initial weights"] = list(
        zip(worker["initial"], single["initial"], strict=True)
    )
    for name, a, b in zip(
        single["names"], worker["trained"], single["trained"], strict=True
    ):
        pairs[name] = [(a, b)]
    for key, items in pairs.items():
        abs_max = rel_max = 0.0
        ok = True
        for a, b in items:
            a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
            diff = np.abs(a - b)
            abs_max = max(abs_max, float(diff.max(initial=0.0)))
            scale = np.maximum(np.abs(b), ATOL / RTOL)
            rel_max = max(rel_max, float((diff / scale).max(initial=0.0)))
            ok = ok and bool(np.all(diff <= ATOL + RTOL * np.abs(b)))
        out[key] = (abs_max, rel_max, ok)
    return out


def report(single: dict, worker: dict) -> bool:
    ok = True
    for key, (abs_max, rel_max, good) in differences(single, worker).items():
        print(f"{key}: max abs {abs_max:.2e} max rel {rel_max:.2e}")
        if not good:
            print(f"MISMATCH {key}")
            ok = False
    print("OK" if ok else "MISMATCH")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write weights and loss history (.npz)")
    parser.add_argument("--compare", help="a worker's .npz to check (one worker)")
    args = parser.parse_args()
    if "TF_CONFIG" in os.environ:
        # Created before any other TensorFlow op, as the strategy needs.
        strategy = MultiWorkerMirroredStrategy()
        index = strategy.cluster_resolver.task_id
        who = f"worker {index}"
        print(f"{who}: {strategy.num_replicas_in_sync} replicas", flush=True)
        assert strategy.num_replicas_in_sync == WORKERS
        result = train(strategy, who)
    else:
        result = train(None, "single")
    print(f"loss history {json.dumps(result['loss'].tolist())}", flush=True)
    if args.out:
        save(result, args.out)
    if args.compare:
        return 0 if report(result, load(args.compare)) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
