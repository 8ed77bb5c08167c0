"""Expert parallelism for SparseMoE and HierarchicalMoE with `keras.distribution`.

Runs on JAX with 8 simulated CPU devices and checks that a model sharded over
the expert axis gives the same outputs, gradients and trained weights as the
same model on one device:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax \\
        python examples/expert_parallel.py

(The script sets both variables itself when they are unset.) It prints the
largest differences and exits non-zero if any exceeds the tolerance.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mtl  # noqa: E402
from keras_mtl.distribution import expert_parallel_layout_map  # noqa: E402

TOLERANCE = 2e-5
BATCH, LENGTH, WIDTH = 16, 8, 12


def build_model() -> keras.Model:
    inputs = keras.Input((LENGTH, WIDTH), batch_size=BATCH)
    h = keras_mtl.layers.SparseMoE(
        num_experts=8,
        expert_hidden_units=[16],
        top_k=2,
        group_size=32,
        capacity_factor=1.0,
        importance_loss_weight=0.01,
        name="sparse_moe",
    )(inputs)
    h = keras.layers.Add()([inputs, h])
    h = keras_mtl.layers.HierarchicalMoE(
        num_experts=(4, 2),
        expert_hidden_units=16,
        group_size=32,
        second_policy_train="threshold",
        second_policy_eval="threshold",
        name="hierarchical_moe",
    )(h)
    return keras.Model(inputs, keras.layers.Add()([inputs, h]))


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    x = rng.standard_normal((4 * BATCH, LENGTH, WIDTH)).astype("float32")
    y = np.tanh(x @ rng.standard_normal((WIDTH, WIDTH))).astype("float32")
    return x, y


def loss_and_grads(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple:
    """Loss (incl. auxiliary losses) and gradients with `jax.jit`."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(trainable, non_trainable, x, y):
        out, _, losses = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True
        )
        return keras.ops.mean((out - y) ** 2) + sum(losses)

    return jax.jit(jax.value_and_grad(loss))(trainable, non_trainable, x, y)


def run(distributed: bool, weights: list[np.ndarray] | None) -> dict:
    keras.utils.clear_session()
    if distributed:
        mesh = keras.distribution.DeviceMesh(
            (2, 4), ("batch", "expert"), keras.distribution.list_devices()
        )
        layout_map = expert_parallel_layout_map(mesh, "expert")
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(
                layout_map=layout_map, batch_dim_name="batch"
            )
        )
    else:
        keras.distribution.set_distribution(None)
    model = build_model()
    if weights is not None:
        model.set_weights(weights)
    x, y = data()
    result = {"weights": [np.asarray(w) for w in model.get_weights()]}
    kernel = model.get_layer("sparse_moe").expert_kernels[0].value
    result["kernel_sharding"] = str(getattr(kernel, "sharding", None))
    result["outputs"] = np.asarray(model.predict(x, batch_size=BATCH, verbose=0))
    value, grads = loss_and_grads(model, x[:BATCH], y[:BATCH])
    result["loss"] = float(value)
    result["grads"] = [np.asarray(g) for g in grads]
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    result["trained"] = [np.asarray(w) for w in model.get_weights()]
    return result


def main() -> int:
    devices = jax.devices()
    print(f"backend={keras.backend.backend()} devices={len(devices)}")
    if len(devices) < 8:
        print("needs 8 devices: set XLA_FLAGS=--xla_force_host_platform_device_count=8")
        return 2
    single = run(distributed=False, weights=None)
    sharded = run(distributed=True, weights=single["weights"])
    print(f"expert kernel sharding: {sharded['kernel_sharding']}")
    diffs = {
        "outputs": np.abs(single["outputs"] - sharded["outputs"]).max(),
        "loss": abs(single["loss"] - sharded["loss"]),
        "grads": max(
            np.abs(a - b).max()
            for a, b in zip(single["grads"], sharded["grads"], strict=True)
        ),
        "trained weights": max(
            np.abs(a - b).max()
            for a, b in zip(single["trained"], sharded["trained"], strict=True)
        ),
    }
    for name, value in diffs.items():
        print(f"max |single - sharded| {name}: {value:.2e}")
    ok = all(v <= TOLERANCE for v in diffs.values()) and "expert" in str(
        sharded["kernel_sharding"]
    )
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
