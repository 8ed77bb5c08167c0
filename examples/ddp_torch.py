"""Data-parallel training of keras_mtl layers with PyTorch DDP (gloo, CPU).

A `torch.nn.Module` holding `MMoE`, `SparseMoE` (with a padding mask) and
`DIEN` (padded behaviour sequences), a ReLU-monitored `Dense` query and two
`Dense` heads is trained with `torch.nn.parallel.DistributedDataParallel` on
2 processes, each on its half of every global batch:

    KERAS_BACKEND=torch torchrun --standalone --nproc-per-node=2 \\
        examples/ddp_torch.py
    python examples/ddp_torch.py      # spawns the 2 processes itself

Two configurations are trained, one after the other, in the same processes:

- `exact`: every layer computes each example independently of the rest of
  its batch (softmax MMoE gates without batch norm; `SparseMoE` with a
  `group_size` that divides each rank's token count, and only its z-loss, a
  mean over real tokens, with every rank holding as many real tokens). The
  weights after each step equal one process training on the whole global
  batch, and so do the routing statistics and the ReLU monitor once
  averaged over the ranks.
- `batch_stats`: batch norm in the MMoE experts, MMoE top-k gates with their
  CV² balance loss, `SparseMoE`'s Switch loss, and more real tokens on rank
  1 than on rank 0. These depend on the whole batch of a call, so DDP trains
  on 2 local batches: the weights equal one process running the 2 halves as
  separate calls and averaging their losses (keeping a copy of the
  statistics per half), not one process on the global batch.

After training the layers' statistics, which DDP leaves per rank, are
averaged over the ranks (`keras_mtl.backend.ddp_torch.average_across_ranks`,
weighted by rows or real tokens), and rank 0 saves a functional
`keras.Model` of the trained `batch_stats` layers as a `.keras` file, which
loads on any backend:

    python examples/ddp_torch.py --out DIR
    KERAS_BACKEND=jax python examples/ddp_torch.py --predict DIR

Then the launching process (rank 0 under torchrun) repeats the training in
one process, prints the largest relative differences and exits non-zero if
one that must stay within 1e-5 does not (or one expected to be larger is
not).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import socket
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtl  # noqa: E402

WORLD = 2
STEPS = 4
BATCH = 16  # Global batch; each rank gets BATCH // WORLD consecutive rows.
LENGTH, KEY_DIM, FEATURES, UNITS = 5, 4, 6, 8
# Tokens per rank: 8 rows x 5 steps = 40, so groups of 20 never straddle two
# ranks and every group is routed as in the global batch.
GROUP_SIZE = 20
# Real steps of the 8 rows of each local batch, shuffled per rank and step:
# 25 real tokens, one row fully padded. In `batch_stats` the second half of
# each global batch has LONGER's 32 instead, so the routing statistics must
# be averaged weighted by real tokens.
LENGTHS = (0, 2, 3, 3, 4, 5, 3, 5)
LONGER = (1, 3, 4, 4, 5, 5, 5, 5)
LEARNING_RATE = 0.1
TOLERANCE = 1e-5
CONFIGS = ("exact", "batch_stats")
SEED = 3


def build_layers(config: str) -> dict[str, keras.layers.Layer]:
    exact = config == "exact"
    layers = {
        "query": keras_mtl.layers.Dense(
            UNITS, activation="relu", inactive_relu_monitor=True, name="query"
        ),
        "mmoe": keras_mtl.layers.MMoE(
            num_tasks=2,
            expert_output_dims=[8, 4],
            expert_activations="relu",
            num_experts=3,
            gate_type="softmax" if exact else "topk",
            top_k=2,
            enable_batch_normalization=not exact,
            batch_normalization_momentum=0.9,
            balance_loss_weight=0.1,
            name="mmoe",
        ),
        "moe": keras_mtl.layers.SparseMoE(
            num_experts=4,
            expert_hidden_units=[8],
            top_k=2,
            capacity_factor=0.75,
            min_capacity=1,
            group_size=GROUP_SIZE,
            switch_loss_weight=0.0 if exact else 0.05,
            z_loss_weight=0.01,
            name="sparse_moe",
        ),
        "dien": keras_mtl.layers.DIEN(UNITS, att_type="AUGRU", name="dien"),
        "head_0": keras_mtl.layers.Dense(1, name="head_0"),
        "head_1": keras_mtl.layers.Dense(1, name="head_1"),
    }
    layers["query"].build((None, FEATURES))
    layers["mmoe"].build((None, FEATURES))
    layers["moe"].build((None, LENGTH, KEY_DIM))
    layers["dien"].build([(None, UNITS), (None, LENGTH, KEY_DIM)])
    layers["head_0"].build((None, 4 + UNITS))
    layers["head_1"].build((None, 4))
    return layers


def forward(layers: dict, x, keys, mask, **training) -> keras.KerasTensor:
    """The model, in `keras.ops`: torch tensors in, or Keras inputs."""
    query = layers["query"](x, **training)
    task_0, task_1 = layers["mmoe"](x, **training)
    tokens = keys + layers["moe"](keys, mask=mask, **training)
    interest = layers["dien"]([query, tokens, mask])
    out_0 = layers["head_0"](keras.ops.concatenate([task_0, interest], axis=-1))
    return keras.ops.concatenate([out_0, layers["head_1"](task_1)], axis=-1)


def make_net(config: str):
    import torch

    class Net(torch.nn.Module):
        """The layers as torch submodules; `forward` returns the predictions
        and the sum of the layers' auxiliary losses of this call."""

        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleDict(build_layers(config))

        def forward(self, x, keys, mask):
            out = forward(self.layers, x, keys, mask, training=True)
            aux = sum(sum(layer.losses) for layer in self.layers.values())
            return out, aux

    return Net()


def variables(net) -> list[keras.Variable]:
    """All the layers' weights, in a fixed order (paths may differ between
    processes where Keras numbers unnamed sub-layers)."""
    return [w for layer in net.layers.values() for w in layer.weights]


def trainable(net) -> list[keras.Variable]:
    return [w for w in variables(net) if w.trainable]


def statistics(net) -> list[keras.Variable]:
    return [w for w in variables(net) if not w.trainable]


def snapshot(vs) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v.value).copy() for v in vs]


def data(config: str) -> dict[str, np.ndarray]:
    """`STEPS` global batches."""
    rng = np.random.RandomState(SEED)
    x = rng.standard_normal((STEPS, BATCH, FEATURES)).astype("float32")
    keys = rng.standard_normal((STEPS, BATCH, LENGTH, KEY_DIM)).astype("float32")
    lengths = np.stack(
        [
            rng.permutation(LONGER if i % 2 and config != "exact" else LENGTHS)
            for i in range(STEPS * WORLD)
        ]
    ).reshape(STEPS, BATCH)
    mask = np.arange(LENGTH) < lengths[..., None]
    keys = np.where(mask[..., None], keys, 0.0).astype("float32")
    w = rng.standard_normal((FEATURES + LENGTH * KEY_DIM, 2)).astype("float32")
    flat = np.concatenate([x, keys.reshape(STEPS, BATCH, -1)], axis=-1)
    y = np.tanh(flat @ w).astype("float32")
    return {"x": x, "keys": keys, "mask": mask, "y": y}


def shard(batches: dict, step: int, rank: int, world: int) -> dict:
    """Rank `rank`'s consecutive rows of global batch `step`, as tensors."""
    import torch

    size = BATCH // world
    rows = slice(rank * size, (rank + 1) * size)
    return {k: torch.from_numpy(v[step, rows]) for k, v in batches.items()}


def local_loss(net, batch: dict):
    """Mean squared error over the local rows plus the auxiliary losses.

    DDP sums the gradients over the ranks and divides by their number, so
    a step follows the mean over ranks of this loss: the local means of the
    task loss average to the global mean, and the auxiliary losses are added
    unscaled (divided by the number of ranks they would weigh that many
    times less than in one process).
    """
    out, aux = net(batch["x"], batch["keys"], batch["mask"])
    return keras.ops.mean((out - batch["y"]) ** 2) + aux


def real_tokens(batch: dict) -> float:
    return float(batch["mask"].sum())


def average_statistics(net, batch: dict) -> None:
    """Each statistic averaged over the ranks, weighted by what it counts."""
    from keras_mtl.backend.ddp_torch import average_across_ranks
    from keras_mtl.backend.ddp_torch import non_trainable_weights

    moe = net.layers["moe"]
    routing = [moe.expert_load, moe.dropped_fraction]
    others = [v for v in non_trainable_weights(net) if all(v is not r for r in routing)]
    average_across_ranks(routing, weight=real_tokens(batch))
    average_across_ranks(others, weight=len(batch["x"]))


def functional_model(layers: dict) -> keras.Model:
    x = keras.Input((FEATURES,), name="x")
    keys = keras.Input((LENGTH, KEY_DIM), name="keys")
    mask = keras.Input((LENGTH,), dtype="bool", name="mask")
    return keras.Model([x, keys, mask], forward(layers, x, keys, mask))


def train_ddp(out_dir: pathlib.Path) -> None:
    """One rank's run; the process group comes from the environment
    (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, as torchrun sets)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != WORLD:
        raise SystemExit(f"needs {WORLD} processes, got {world}")
    # Every rank writes into rank 0's folder, which rank 0 then compares
    # (without --out each rank made its own temporary one). One machine, or
    # a folder every machine sees.
    shared = [str(out_dir)]
    dist.broadcast_object_list(shared, src=0)
    out_dir = pathlib.Path(shared[0])
    record = {}
    for config in CONFIGS:
        batches = data(config)
        keras.utils.clear_session()
        # Same seed on every rank; DDP also broadcasts rank 0's weights.
        keras.utils.set_random_seed(SEED)
        net = make_net(config)
        ddp = DistributedDataParallel(net)
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=0.9)
        record[f"{config}/paths"] = np.array([v.path for v in variables(net)])
        record[f"{config}/trainable"] = np.array([v.trainable for v in variables(net)])
        record[f"{config}/initial"] = snapshot(variables(net))
        for step in range(STEPS):
            batch = shard(batches, step, rank, world)
            optimizer.zero_grad()
            loss = local_loss(ddp, batch)
            loss.backward()
            optimizer.step()
            record[f"{config}/step{step + 1}"] = snapshot(trainable(net))
            print(f"rank {rank} {config} step {step + 1} local loss {loss.item():.6f}")
        record[f"{config}/local_statistics"] = snapshot(statistics(net))
        average_statistics(net, batch)
        record[f"{config}/averaged_statistics"] = snapshot(statistics(net))
        if rank == 0 and config == "batch_stats":
            save_for_loading(net, batches, out_dir)
    arrays = {
        f"{key}/{i}" if isinstance(value, list) else key: v
        for key, value in record.items()
        for i, v in (enumerate(value) if isinstance(value, list) else [(0, value)])
    }
    np.savez(out_dir / f"rank{rank}.npz", **arrays)
    # Every rank's file is written before rank 0 goes on to compare them.
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} done")


def save_for_loading(net, batches: dict, out_dir: pathlib.Path) -> None:
    model = functional_model(dict(net.layers.items()))
    model.save(out_dir / "model.keras")
    inputs = {k: batches[k][0] for k in ("x", "keys", "mask")}
    np.savez(out_dir / "inputs.npz", **inputs)
    out = model.predict_on_batch(inputs)
    np.save(out_dir / "outputs_rank0.npy", np.asarray(out))


def load_rank(out_dir: pathlib.Path, rank: int, config: str) -> dict:
    """What rank `rank` recorded for `config`: `initial` (all weights),
    `steps` (trainable weights after steps 1..STEPS), `local_statistics`,
    `averaged_statistics`, and the paths of the trainable and the
    non-trainable weights."""
    with np.load(out_dir / f"rank{rank}.npz") as f:
        files = dict(f)

    def arrays(key):
        n = sum(1 for k in files if k.startswith(f"{config}/{key}/"))
        return [files[f"{config}/{key}/{i}"] for i in range(n)]

    paths = [str(p) for p in files[f"{config}/paths"]]
    flags = files[f"{config}/trainable"]
    return {
        "trainable_paths": [p for p, t in zip(paths, flags, strict=True) if t],
        "statistic_paths": [p for p, t in zip(paths, flags, strict=True) if not t],
        "initial": arrays("initial"),
        "steps": [arrays(f"step{s}") for s in range(1, STEPS + 1)],
        "local_statistics": arrays("local_statistics"),
        "averaged_statistics": arrays("averaged_statistics"),
    }


def train_single(config: str, initial: list[np.ndarray], shards: int) -> dict:
    """One process on the same global batches from the same weights.

    Each global batch runs as `shards` separate calls (1: the whole batch),
    their losses averaged into one step. Every shard keeps its own copy of
    the statistics, as a rank does. Returns the trainable weights after
    each step (`steps`), the statistics per shard (`statistics`) and the
    real tokens of each shard's last batch (`tokens`).
    """
    import torch

    keras.utils.clear_session()
    net = make_net(config)
    for v, value in zip(variables(net), initial, strict=True):
        v.assign(value)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=0.9)
    batches = data(config)
    copies = [snapshot(statistics(net)) for _ in range(shards)]
    steps = []
    tokens = [0.0] * shards
    for step in range(STEPS):
        optimizer.zero_grad()
        for r in range(shards):
            for v, value in zip(statistics(net), copies[r], strict=True):
                v.assign(value)
            batch = shard(batches, step, r, shards)
            (local_loss(net, batch) / shards).backward()
            copies[r] = snapshot(statistics(net))
            tokens[r] = real_tokens(batch)
        optimizer.step()
        steps.append(snapshot(trainable(net)))
    return {"steps": steps, "statistics": copies, "tokens": tokens}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over max |b| (the tensor's scale), 0 for two zero tensors."""
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    return diff / scale if scale > 0 else diff


@dataclasses.dataclass
class Check:
    """One comparison: the largest `relative` difference over the tensors
    and the weight it is at; `equal` says whether it must be <= TOLERANCE
    (else it is expected to be larger: the batch dependence shows)."""

    config: str
    what: str
    rank: int
    step: int | None
    against: str
    diff: float
    where: str
    equal: bool = True

    def __str__(self) -> str:
        step = "" if self.step is None else f" step {self.step}"
        return (
            f"{self.config}: rank {self.rank}{step} {self.what} vs {self.against}: "
            f"{self.diff:.2e} at {self.where}"
        )

    @property
    def ok(self) -> bool:
        return self.diff <= TOLERANCE if self.equal else self.diff > TOLERANCE


def largest(got: list, expected: list, paths: list[str]) -> tuple[float, str]:
    """The largest `relative` over paired tensors, and the path it is at."""
    best = (0.0, "-")
    for path, a, b in zip(paths, got, expected, strict=True):
        best = max(best, (relative(a, b), path))
    return best


def compare(out_dir: pathlib.Path) -> list[Check]:
    """Repeats the training in this process and compares.

    Per configuration, rank and step: the rank's trainable weights against
    one process running the 2 halves as separate calls, and against one
    process on the whole global batch (equal for `exact` only). Per rank:
    its own statistics against its half's copy, the averaged ones against
    the whole batch's (`exact`) or the weighted mean of the halves' copies.
    """
    checks = []
    for config in CONFIGS:
        ranks = [load_rank(out_dir, r, config) for r in range(WORLD)]
        paths, stat_paths = ranks[0]["trainable_paths"], ranks[0]["statistic_paths"]
        halves = train_single(config, ranks[0]["initial"], WORLD)
        whole = train_single(config, ranks[0]["initial"], 1)
        exact = config == "exact"
        for r, got in enumerate(ranks):
            for step in range(STEPS):
                for against, ref, equal in (
                    ("halves", halves, True),
                    ("whole batch", whole, exact),
                ):
                    diff, where = largest(got["steps"][step], ref["steps"][step], paths)
                    checks.append(
                        Check(
                            config, "weights", r, step + 1, against, diff, where, equal
                        )
                    )
            diff, where = largest(
                got["local_statistics"], halves["statistics"][r], stat_paths
            )
            checks.append(
                Check(config, "own statistics", r, None, f"half {r}", diff, where)
            )
            if exact:
                against, expected = "whole batch", whole["statistics"][0]
            else:
                against, expected = "mean of halves", weighted_mean(halves, stat_paths)
            diff, where = largest(got["averaged_statistics"], expected, stat_paths)
            checks.append(
                Check(config, "averaged statistics", r, None, against, diff, where)
            )
    return checks


def weighted_mean(reference: dict, stat_paths: list[str]) -> list[np.ndarray]:
    """The halves' statistics averaged as `average_statistics` does."""
    copies, tokens = reference["statistics"], np.array(reference["tokens"])
    rows = np.full(len(copies), BATCH // len(copies), dtype="float64")
    result = []
    for i, path in enumerate(stat_paths):
        routing = path.split("/")[-1] in ("expert_load", "dropped_fraction")
        w = tokens if routing else rows
        stacked = np.stack([c[i].astype("float64") for c in copies])
        mean = np.tensordot(w, stacked, axes=1) / w.sum()
        result.append(mean.astype(copies[0][i].dtype))
    return result


def predict(out_dir: pathlib.Path) -> None:
    """Loads `model.keras` on this process's backend; writes its statistics
    as loaded and its outputs on the saved inputs."""
    model = keras.saving.load_model(out_dir / "model.keras")
    backend = keras.backend.backend()
    # Before the call: SparseMoE rewrites its routing statistics on every
    # call, inference included.
    stats = {
        w.path: keras.ops.convert_to_numpy(w.value) for w in model.non_trainable_weights
    }
    np.savez(out_dir / f"statistics_{backend}.npz", **stats)
    with np.load(out_dir / "inputs.npz") as f:
        inputs = dict(f)
    out = np.asarray(model.predict_on_batch(inputs))
    np.save(out_dir / f"outputs_{backend}.npy", out)
    print(f"{backend}: loaded {out_dir / 'model.keras'}, outputs {out.shape}")


def _free_port() -> int:
    """A loopback port the OS had free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    train_ddp(pathlib.Path(out_dir))


def report(out_dir: pathlib.Path) -> int:
    checks = compare(out_dir)
    worst: dict[tuple, Check] = {}
    for check in checks:
        key = (check.config, check.what, check.against)
        if key not in worst or check.diff > worst[key].diff:
            worst[key] = check
    for check in worst.values():
        expected = "" if check.equal else " (expected to differ)"
        print(f"largest relative difference{expected}: {check}")
    failed = [c for c in checks if not c.ok]
    for check in failed:
        print(f"MISMATCH {check}")
    print("OK" if not failed else "MISMATCH")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="keep the results here")
    parser.add_argument("--predict", type=pathlib.Path, metavar="DIR")
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="only train (and save); skip the single-process comparison",
    )
    args = parser.parse_args()
    if args.predict:
        predict(args.predict)
        return 0
    if keras.backend.backend() != "torch":
        raise SystemExit("training needs KERAS_BACKEND=torch")
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or pathlib.Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        if "RANK" in os.environ:  # torchrun, or a test starting each rank.
            train_ddp(out_dir)
            if os.environ["RANK"] != "0" or args.no_compare:
                return 0
        else:
            import torch.multiprocessing as mp

            mp.spawn(_spawned, args=(_free_port(), str(out_dir)), nprocs=WORLD)
        if args.no_compare:
            return 0
        return report(out_dir)


if __name__ == "__main__":
    sys.exit(main())
