"""Data and expert parallelism over several JAX processes with `keras.distribution`.

Two processes with 4 CPU devices each form one 8-device JAX runtime
(`keras.distribution.initialize`, which calls `jax.distributed.initialize`;
cross-process collectives on CPU use gloo, the default of
`jax_cpu_collectives_implementation` in JAX 0.10). The model of
`expert_parallel.py` (a `SparseMoE` and a `HierarchicalMoE`) is then run
twice and checked against one device:

- `data_parallel`: `keras.distribution.DataParallel` over the 8 devices;
  each process feeds half of every global batch.
- `expert_parallel`: `keras.distribution.ModelParallel` on a
  ("batch", "expert") = (2, 4) mesh whose expert axis holds 2 devices of each
  process, with `keras_mtl.distribution.expert_parallel_layout_map`: experts
  0-3 of the `SparseMoE` (2 per device) live on process 0, 4-7 on process 1.
  Every batch row is held by devices of both processes, so each process feeds
  the whole global batch.

For each, the outputs, the loss and gradients of one batch, and all weights
(the `SparseMoE` load statistics included) after 2 epochs (8 steps) of
`model.fit` must equal those of one device within 2e-5; gradients and weight
updates also within 1e-3 of their largest entry.

Everything in one command (a reference process with one device and the two
workers, side by side, on a free loopback port):

    python examples/multi_process_jax.py --spawn

By hand, in two shells (each worker then computes the one-device reference on
its first local device; `--reference ref.npz` reads one written by
`python examples/multi_process_jax.py --write-reference ref.npz` instead):

    python examples/multi_process_jax.py --coordinator 127.0.0.1:1234 \\
        --num-processes 2 --process-id 0
    python examples/multi_process_jax.py --coordinator 127.0.0.1:1234 \\
        --num-processes 2 --process-id 1

The script sets KERAS_BACKEND=jax, JAX_PLATFORMS=cpu and
XLA_FLAGS=--xla_force_host_platform_device_count=4 when they are unset. Each
worker prints `process <i> step <config>/<stage>` as it goes, the sharding of
the data and of an expert kernel, the largest differences, and `process <i>
OK`; it exits non-zero on a mismatch.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
import expert_parallel as ep  # noqa: E402

from keras_mtl.distribution import expert_parallel_layout_map  # noqa: E402

SEED = 0
RELATIVE_TOLERANCE = 1e-3
START = time.monotonic()
CONFIGS = ("data_parallel", "expert_parallel")


def elapsed() -> str:
    return f" [{time.monotonic() - START:.1f} s]"


def make_distribution(config: str) -> keras.distribution.Distribution:
    """The distribution of `config`. The data are fed per process (see
    `local_rows`), so Keras's dataset auto-sharding, which needs a
    `tf.data.Dataset`, is off."""
    devices = keras.distribution.list_devices()
    if config == "data_parallel":
        return keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=False
        )
    # `list_devices()` lists process 0's devices, then process 1's. Split
    # each process's devices over both batch rows so that every expert row of
    # the mesh holds devices of both processes.
    processes = jax.process_count()
    grid = np.array(devices).reshape(processes, 2, -1).transpose(1, 0, 2)
    mesh = keras.distribution.DeviceMesh(
        (2, grid.size // 2), ("batch", "expert"), grid.reshape(2, -1)
    )
    return keras.distribution.ModelParallel(
        layout_map=expert_parallel_layout_map(mesh, "expert"),
        batch_dim_name="batch",
        auto_shard_dataset=False,
    )


def span(indices) -> str:
    """`0-3` for 0, 1, 2, 3; the list if not contiguous."""
    indices = sorted(indices)
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}"
    return str(indices)


def local_rows(sharding: jax.sharding.Sharding, batch: int) -> list[int]:
    """Rows of each global batch held by this process's devices: what it must
    feed (`jax.make_array_from_process_local_data` places them, in order, on
    its devices)."""
    rows: set[int] = set()
    for index in sharding.addressable_devices_indices_map((batch,)).values():
        rows.update(range(batch)[index[0]])
    return sorted(rows)


def gather(value) -> np.ndarray:
    """The whole value of a (possibly cross-process) `jax.Array` as NumPy."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(value)


def describe_sharding(name: str, array: jax.Array) -> str:
    """Which slices of `array`'s leading axis each process holds."""
    by_process: dict[int, set[int]] = {}
    for device, index in array.sharding.devices_indices_map(array.shape).items():
        rows = range(array.shape[0])[index[0]]
        by_process.setdefault(device.process_index, set()).update(rows)
    spans = ", ".join(f"process {p}: {span(r)}" for p, r in sorted(by_process.items()))
    spec = getattr(array.sharding, "spec", None)
    return f"{name} shape={tuple(array.shape)} spec={spec} axis 0 on {spans}"


def initial_weights() -> list[np.ndarray]:
    """The model's initial weights from seed `SEED`, built on one device: the
    same in every process and in the reference."""
    keras.utils.clear_session()
    keras.distribution.set_distribution(None)
    keras.utils.set_random_seed(SEED)
    return ep.build_model().get_weights()


def run(config: str | None, weights: list[np.ndarray], log) -> dict:
    """The model from `weights`: outputs, loss and gradients of the first
    batch, and all weights after `model.fit`. `config=None`: one device."""
    keras.utils.clear_session()
    distribution = None if config is None else make_distribution(config)
    keras.distribution.set_distribution(distribution)
    model = ep.build_model()
    model.set_weights(weights)
    x, y = ep.data()
    if distribution is None:
        rows = list(range(ep.BATCH))
        to_global = jax.numpy.asarray
    else:
        sharding = distribution.get_data_layout(x[: ep.BATCH].shape).backend_layout
        rows = local_rows(sharding, ep.BATCH)
        log(f"data rows fed per global batch of {ep.BATCH}: {span(rows)}")
        kernel = model.get_layer("sparse_moe").expert_kernels[0].value
        log(describe_sharding("sparse_moe expert_kernel_0", kernel))
        kernel = model.get_layer("hierarchical_moe").expert_kernel_in.value
        log(describe_sharding("hierarchical_moe expert_kernel_in", kernel))

        def to_global(array):
            return jax.make_array_from_process_local_data(sharding, array)

    # This process's rows of every global batch, batch after batch.
    steps = len(x) // ep.BATCH
    local_x = x.reshape(steps, ep.BATCH, *x.shape[1:])[:, rows]
    local_y = y.reshape(steps, ep.BATCH, *y.shape[1:])[:, rows]
    local_x = local_x.reshape(-1, *x.shape[1:])
    local_y = local_y.reshape(-1, *y.shape[1:])

    log("outputs, loss and gradients")

    # One jitted function: each compile costs seconds on CPU. `model.predict`
    # is not used: it joins its batches with `np.concatenate`, which cannot
    # read an array spread over processes.
    def outputs_loss(trainable, non_trainable, x, y):
        outputs = model.stateless_call(trainable, non_trainable, x)[0]
        out, _, losses = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True
        )
        return keras.ops.mean((out - y) ** 2) + sum(losses), outputs

    step = jax.jit(jax.value_and_grad(outputs_loss, has_aux=True))
    (loss, outputs), grads = step(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        to_global(local_x[: len(rows)]),
        to_global(local_y[: len(rows)]),
    )
    result = {
        "outputs": gather(outputs),
        "loss": float(gather(loss)),
        "grads": [gather(g) for g in grads],
    }
    log("fit")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    # `batch_size` is per process: Keras builds each global batch from the
    # processes' batches with `jax.make_array_from_process_local_data`
    # (`distribute_data_input` in keras/src/backend/jax/distribution_lib.py).
    history = model.fit(
        local_x, local_y, batch_size=len(rows), epochs=2, shuffle=False, verbose=0
    )
    log(f"fit losses {[round(v, 6) for v in history.history['loss']]}")
    result["trained"] = [gather(v.value) for v in model.weights]
    return result


def save(path: str, weights: list[np.ndarray], result: dict) -> None:
    arrays = {"outputs": result["outputs"], "loss": np.asarray(result["loss"])}
    parts = {"weights": weights, "grads": result["grads"], "trained": result["trained"]}
    for key, values in parts.items():
        arrays.update({f"{key}_{i}": a for i, a in enumerate(values)})
    # Written whole, then renamed: the workers poll for the file.
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load(path: str) -> tuple[list[np.ndarray], dict]:
    with np.load(path) as f:
        result = {"outputs": f["outputs"], "loss": float(f["loss"])}
        for key in ("weights", "grads", "trained"):
            count = sum(name.startswith(f"{key}_") for name in f.files)
            result[key] = [f[f"{key}_{i}"] for i in range(count)]
    return result.pop("weights"), result


def differences(
    single: dict, other: dict, weights: list[np.ndarray]
) -> dict[str, tuple[float, float]]:
    """Largest differences from one device, each with its tolerance.

    The absolute ones use the tolerance of `expert_parallel.py`. The weights
    move by only 1e-4 to 2e-3 in 8 SGD steps, so the updates (trained minus
    initial weights) and the gradients are also compared relative to their
    largest entry per variable.
    """

    def largest(a, b):
        return max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))

    def relative(a, b):
        return max(
            float(np.abs(u - v).max() / np.abs(u).max())
            for u, v in zip(a, b, strict=True)
            if np.abs(u).max() > 0
        )

    single_updates = [t - w for t, w in zip(single["trained"], weights, strict=True)]
    updates = [t - w for t, w in zip(other["trained"], weights, strict=True)]
    return {
        "outputs": (
            float(np.abs(single["outputs"] - other["outputs"]).max()),
            ep.TOLERANCE,
        ),
        "loss": (abs(single["loss"] - other["loss"]), ep.TOLERANCE),
        "grads": (largest(single["grads"], other["grads"]), ep.TOLERANCE),
        "trained weights": (
            largest(single["trained"], other["trained"]),
            ep.TOLERANCE,
        ),
        "grads (relative)": (
            relative(single["grads"], other["grads"]),
            RELATIVE_TOLERANCE,
        ),
        "weight updates (relative)": (
            relative(single_updates, updates),
            RELATIVE_TOLERANCE,
        ),
    }


def wait_for(path: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    log(f"waiting for {path}")
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reference at {path} after {timeout:.0f} s")
        time.sleep(0.2)


def worker(args: argparse.Namespace) -> int:
    pid = args.process_id

    def say(message):
        print(f"process {pid} {message}{elapsed()}", flush=True)

    say("step initialize")
    if args.coordinator.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        # Otherwise process 0's coordinator service listens on all interfaces
        # ("[::]:<port>", `jax/_src/distributed.py`).
        os.environ.setdefault("JAX_COORDINATOR_BIND_ADDRESS", args.coordinator)
    # Keras's entry point: `jax.distributed.initialize(coordinator, ...)`, then
    # a seed common to all processes.
    keras.distribution.initialize(args.coordinator, args.num_processes, pid)
    say(
        f"devices local={jax.local_device_count()} global={jax.device_count()} "
        f"processes={jax.process_count()}"
    )
    weights = initial_weights()
    results = {}
    for config in CONFIGS:
        results[config] = run(config, weights, lambda m, c=config: say(f"step {c}/{m}"))
    if args.reference:
        wait_for(args.reference, args.timeout, lambda m: say(f"step reference/{m}"))
        reference_weights, single = load(args.reference)
        same = all(
            np.array_equal(a, b)
            for a, b in zip(weights, reference_weights, strict=True)
        )
        say(f"step reference/initial weights equal: {same}")
        if not same:
            return 1
    else:
        # One device of this process; no distribution, so no collectives.
        single = run(None, weights, lambda m: say(f"step single_device/{m}"))
    ok = True
    for config, result in results.items():
        for name, (value, tolerance) in differences(single, result, weights).items():
            verdict = "ok" if value <= tolerance else f"MISMATCH (> {tolerance:g})"
            say(
                f"step {config}/compare: max |single - {config}| {name}: "
                f"{value:.2e} {verdict}"
            )
            ok = ok and value <= tolerance
    say("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def write_reference(path: str) -> int:
    def say(message):
        print(f"reference {message}{elapsed()}", flush=True)

    say(f"devices={len(jax.devices())}")
    weights = initial_weights()
    save(path, weights, run(None, weights, lambda m: say(f"step {m}")))
    say(f"written to {path}")
    return 0


def spawn(num_processes: int, timeout: float) -> int:
    """Starts the reference and the workers side by side; stops all if one
    fails or at the timeout."""
    script = str(pathlib.Path(__file__).resolve())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "reference.npz")
        one = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        commands = [([script, "--write-reference", reference], one)]
        common = ["--coordinator", f"127.0.0.1:{port}", "--reference", reference]
        common += ["--num-processes", str(num_processes)]
        commands += [
            ([script, *common, "--process-id", str(i)], None)
            for i in range(num_processes)
        ]
        procs = [
            subprocess.Popen([sys.executable, *c], env=env, start_new_session=True)
            for c, env in commands
        ]
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                codes = [p.poll() for p in procs]
                if all(c == 0 for c in codes) or any(c for c in codes):
                    break
                time.sleep(0.1)
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        codes = [p.returncode for p in procs]
    print(f"exit codes (reference, processes): {codes}")
    return 0 if all(c == 0 for c in codes) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawn", action="store_true", help="start all processes")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--write-reference", metavar="PATH")
    parser.add_argument("--reference", metavar="PATH")
    parser.add_argument("--coordinator", default="127.0.0.1:1234")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    if args.spawn:
        return spawn(args.num_processes, args.timeout)
    if args.write_reference:
        return write_reference(args.write_reference)
    if args.process_id is None:
        parser.error("give --process-id (or --spawn, or --write-reference)")
    return worker(args)


if __name__ == "__main__":
    sys.exit(main())
