"""The layers inside each backend's native training loop, and in `model.fit`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_mtl import layers
from tests._helpers import only


def _data(n=64, d=6):
    rng = np.random.RandomState(0)
    x = rng.standard_normal((n, d)).astype("float32")
    y = (x @ rng.standard_normal((d, 1)) + 0.5).astype("float32")
    return x, y


def _tower():
    return keras.Sequential(
        [
            keras.Input((6,)),
            layers.MLP(
                [16, 8],
                activations=["relu", "sigmoid2"],
                enable_batch_normalization=True,
            ),
            layers.LayerNorm(),
            layers.Dense(1, allow_kernel_norm=True, kernel_norm_trainable=True),
            layers.AddBias(),
        ]
    )


def test_model_fit_reduces_the_loss():
    x, y = _data()
    model = _tower()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first


@pytest.mark.long(50)
def test_model_fit_jit_compiled():
    x, y = _data()
    model = _tower()
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@only("torch")
def test_torch_module_with_torch_optimizer():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower = layers.MLP([16, 1], activations="relu")
            self.norm = layers.LayerNorm()
            self.tower.build((None, 6))
            self.norm.build((None, 6))

        def forward(self, x):
            return self.tower(self.norm(x))

    x, y = (torch.from_numpy(a) for a in _data())
    net = Net()
    params = list(net.parameters())
    assert len(params) == 2 + 6  # LayerNorm gamma/beta, 2 x (kernel, norm, bias)
    opt = torch.optim.Adam(params, lr=0.01)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@only("torch")
def test_torch_compile_traces_a_module_with_mmoe_in_one_graph():
    """`torch.compile(fullgraph=True)` fails on any graph break in the layer.

    `bench/mmoe.py` times this use against hand-written PyTorch; a break would
    silently split the compiled step there.
    """
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mmoe = layers.MMoE(
                num_tasks=2,
                expert_output_dims=[8, 4],
                expert_activations="relu",
                num_experts=3,
            )
            self.mmoe.build((None, 6))
            self.heads = torch.nn.ModuleList(torch.nn.Linear(4, 1) for _ in range(2))

        def forward(self, x):
            outputs = self.mmoe(x, training=True)
            return torch.cat(
                [h(y) for h, y in zip(self.heads, outputs, strict=True)], 1
            )

    x, _ = (torch.from_numpy(a) for a in _data())
    net = Net()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(trainable) == 7 + 4  # MMoE's trainable variables, the heads'
    eager_out = net(x)
    eager_grads = torch.autograd.grad(eager_out.sum(), trainable)
    out = compiled(x)
    torch.testing.assert_close(out, eager_out)
    for grad, eager_grad in zip(
        torch.autograd.grad(out.sum(), trainable), eager_grads, strict=True
    ):
        torch.testing.assert_close(grad, eager_grad)


@only("jax")
def test_jax_jit_step_over_stateless_call():
    import jax
    import jax.numpy as jnp

    x, y = _data()
    model = _tower()
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    def loss_fn(tv, ntv, x, y):
        pred, ntv = model.stateless_call(tv, ntv, x, training=True)
        return jnp.mean((pred - y) ** 2), ntv

    @jax.jit
    def step(tv, ntv, x, y):
        (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, x, y)
        return loss, [w - 0.05 * g for w, g in zip(tv, grads, strict=True)], ntv

    losses = []
    for _ in range(60):
        loss, tv, ntv = step(tv, ntv, x, y)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    # BatchNorm moving statistics moved through the non-trainable state.
    assert any(
        not np.allclose(np.asarray(a), np.asarray(v.value))
        for a, v in zip(ntv, model.non_trainable_variables, strict=True)
    )


@only("tensorflow")
def test_tf_function_gradient_tape_step():
    import tensorflow as tf

    x, y = _data()
    model = _tower()
    opt = keras.optimizers.SGD(0.05)

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    losses = [float(step(x, y)) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]
