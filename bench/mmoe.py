"""A training step of `keras_mtl.layers.MMoE` against two baselines.

Model: MMoE with `E` experts (MLP `dims`, relu then linear), `T = 2` softmax
gates, a `Dense(1)` head per task, the sum of the two MSEs, Adam.

- (a) "keras loop": the same network from stock Keras layers, one `Dense`
  stack per expert and a Python loop over experts, compiled like ours: XLA on
  JAX and TensorFlow, eager on torch (Keras's default there; a
  `torch.compile`d pair is an extra row).
- (a') "seeds' loop": the seeds' own structure, one `keras_mtl.layers.MLP`
  per expert (weight-normalized, as MMoE's experts are by default) and a
  Python loop; the like-with-like baseline for ours with its defaults.
- (b) "native": a hand-written implementation with stacked `[E, in, out]`
  expert weights in plain PyTorch (torch backend, eager, `torch.optim.Adam`)
  or plain JAX (jax backend, `jax.jit` step with a hand-written Adam). Not run
  on TensorFlow. On torch, a second set of native rows sends every model's
  forward through `torch.compile` ("jit where the backend supports it"),
  the hand-written one included.

Ours uses MMoE's defaults, so its experts are weight-normalized (baselines
(a) and (b) are not): that ratio includes the cost. Two more rows per size
compare like with like: ours with `use_weight_norm=False` against (a), and
ours with its defaults against (a').
All models of a size are timed in alternation (`paired_median_seconds`).
"""

from __future__ import annotations

import keras
import numpy as np

from bench.timing import paired_median_seconds
from bench.timing import result_row
from keras_mtl import layers

SIZES = [(512, 128, 8, [64, 32]), (2048, 512, 8, [256, 128])]
TASKS = 2


def _default_jit() -> bool:
    """XLA on JAX and TensorFlow; eager on torch, Keras's own default there.

    Keras resolves `jit_compile="auto"` to eager on torch; `torch.compile`d
    steps are timed as extra rows (see `run`).
    """
    return keras.backend.backend() != "torch"


def _compile(inputs, outputs, jit_compile: bool | None = None) -> keras.Model:
    model = keras.Model(inputs, outputs)
    if jit_compile is None:
        jit_compile = _default_jit()
    model.compile(optimizer="adam", loss=["mse"] * TASKS, jit_compile=jit_compile)
    return model


def _mmoe(experts: int, dims: list[int], weight_norm: bool = True) -> layers.MMoE:
    """The benchmarked layer, the same in every row that uses it."""
    return layers.MMoE(
        num_tasks=TASKS,
        expert_output_dims=dims,
        expert_activations="relu",
        num_experts=experts,
        use_weight_norm=weight_norm,
    )


def _ours(
    dim: int,
    experts: int,
    dims: list[int],
    weight_norm: bool = True,
    jit_compile: bool | None = None,
) -> keras.Model:
    x = keras.Input((dim,))
    ys = _mmoe(experts, dims, weight_norm)(x)
    return _compile(x, [keras.layers.Dense(1)(y) for y in ys], jit_compile)


def _gated_heads(x, expert_outputs: list) -> list:
    """One softmax gate over the experts and a `Dense(1)` head per task."""
    stacked = keras.ops.stack(expert_outputs, axis=1)  # [B, E, D]
    ys = []
    for _ in range(TASKS):
        gate = keras.layers.Dense(len(expert_outputs), "softmax", use_bias=False)(x)
        y = keras.ops.einsum("be,bed->bd", gate, stacked)
        ys.append(keras.layers.Dense(1)(y))
    return ys


def _keras_loop(
    dim: int, experts: int, dims: list[int], jit_compile: bool | None = None
) -> keras.Model:
    x = keras.Input((dim,))
    outs = []
    for _ in range(experts):
        h = x
        for i, units in enumerate(dims):
            h = keras.layers.Dense(units, "relu" if i < len(dims) - 1 else None)(h)
        outs.append(h)
    return _compile(x, _gated_heads(x, outs), jit_compile)


def _seeds_loop(dim: int, experts: int, dims: list[int]) -> keras.Model:
    x = keras.Input((dim,))
    activations = ["relu"] * (len(dims) - 1) + [None]
    outs = [layers.MLP(dims, activations)(x) for _ in range(experts)]
    return _compile(x, _gated_heads(x, outs))


def _glorot(rng, shape):
    limit = np.sqrt(6.0 / (shape[-2] + shape[-1]))
    return rng.uniform(-limit, limit, shape).astype("float32")


def _native_params(dim, experts, dims):
    rng = np.random.RandomState(0)
    params = {}
    fan_in = dim
    for i, units in enumerate(dims):
        params[f"k{i}"] = _glorot(rng, (experts, fan_in, units))
        params[f"b{i}"] = np.zeros((experts, units), "float32")
        fan_in = units
    for t in range(TASKS):
        params[f"g{t}"] = _glorot(rng, (dim, experts))
        params[f"hk{t}"] = _glorot(rng, (fan_in, 1))
        params[f"hb{t}"] = np.zeros((1,), "float32")
    return params


def _torch_adam_runner(forward, parameters, compiled: bool = False):
    """A PyTorch step of the summed task MSEs with `torch.optim.Adam`.

    With `compiled`, `forward` goes through `torch.compile` (its backward is
    then compiled too); the loss, `backward()` call and optimizer step stay
    the same eager code for every model.
    """
    import torch

    if compiled:
        forward = torch.compile(forward)
    opt = torch.optim.Adam(parameters, lr=1e-3)

    def step(x, ys):
        opt.zero_grad(set_to_none=True)
        preds = forward(x)
        loss = sum(
            torch.mean((y_hat - y) ** 2) for y_hat, y in zip(preds, ys, strict=True)
        )
        loss.backward()
        opt.step()
        return loss

    def run(x, ys):
        x = torch.from_numpy(x)
        ys = [torch.from_numpy(y) for y in ys]
        return lambda: step(x, ys).item()

    return run


def _native_torch(dim, experts, dims, compiled=False):
    import torch

    params = {
        k: torch.nn.Parameter(torch.from_numpy(v))
        for k, v in _native_params(dim, experts, dims).items()
    }

    def forward(x):
        h = x.unsqueeze(0).expand(experts, -1, -1)  # [E, B, D]
        for i in range(len(dims)):
            h = torch.baddbmm(params[f"b{i}"].unsqueeze(1), h, params[f"k{i}"])
            if i < len(dims) - 1:
                h = torch.relu(h)
        preds = []
        for t in range(TASKS):
            g = torch.softmax(x @ params[f"g{t}"], dim=-1)  # [B, E]
            y = torch.einsum("be,ebd->bd", g, h)
            preds.append(y @ params[f"hk{t}"] + params[f"hb{t}"])
        return preds

    return _torch_adam_runner(forward, list(params.values()), compiled)


def _jax_adam_runner(loss_fn, params):
    """A `jax.jit` step of `loss_fn(params, x, ys)` with a hand-written Adam."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def step(p, m, v, i, x, ys):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, ys)
        i = i + 1
        m = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v = jax.tree.map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        lr = 1e-3 * jnp.sqrt(1 - 0.999**i) / (1 - 0.9**i)
        p = jax.tree.map(lambda w, a, b: w - lr * a / (jnp.sqrt(b) + 1e-7), p, m, v)
        return p, m, v, i, loss

    state = [
        params,
        jax.tree.map(jnp.zeros_like, params),
        jax.tree.map(jnp.zeros_like, params),
        jnp.zeros((), jnp.float32),
    ]

    def run(x, ys):
        x, ys = jnp.asarray(x), [jnp.asarray(y) for y in ys]

        def call():
            out = step(*state, x, ys)
            state[:] = out[:4]
            return float(out[4])

        return call

    return run


def _native_jax(dim, experts, dims):
    import jax
    import jax.numpy as jnp

    params = {k: jnp.asarray(v) for k, v in _native_params(dim, experts, dims).items()}

    def loss_fn(p, x, ys):
        h = jnp.broadcast_to(x, (experts, *x.shape))
        for i in range(len(dims)):
            h = jnp.einsum("ebi,eio->ebo", h, p[f"k{i}"]) + p[f"b{i}"][:, None]
            if i < len(dims) - 1:
                h = jax.nn.relu(h)
        loss = 0.0
        for t in range(TASKS):
            g = jax.nn.softmax(x @ p[f"g{t}"], axis=-1)
            y = jnp.einsum("be,ebd->bd", g, h)
            loss = loss + jnp.mean((y @ p[f"hk{t}"] + p[f"hb{t}"] - ys[t]) ** 2)
        return loss

    return _jax_adam_runner(loss_fn, params)


def _ours_in_jax_loop(dim, experts, dims, weight_norm=True):
    """Our model through `stateless_call` in the native JAX step (same Adam)."""
    import jax.numpy as jnp

    model = _ours(dim, experts, dims, weight_norm=weight_norm)
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_fn(p, x, ys):
        preds, _ = model.stateless_call(p, non_trainable, x, training=True)
        return sum(
            jnp.mean((y_hat - y) ** 2) for y_hat, y in zip(preds, ys, strict=True)
        )

    return _jax_adam_runner(loss_fn, [v.value for v in model.trainable_variables])


def _ours_in_torch_loop(dim, experts, dims, weight_norm=True, compiled=False):
    """Our model as a `torch.nn.Module` in the native PyTorch step."""
    model = _ours(dim, experts, dims, weight_norm=weight_norm)
    return _torch_adam_runner(
        lambda x: model(x, training=True), list(model.parameters()), compiled
    )


def _layer_in_torch_module(dim, experts, dims, compiled=False):
    """The `MMoE` layer alone in a `torch.nn.Module`, `torch.nn.Linear` heads.

    How a PyTorch user reuses the layer (`tests/test_training_loops.py`):
    no Keras model around it, so the step pays for one Keras
    `Layer.__call__` instead of a functional model's graph walk and two
    Keras `Dense` heads. Without weight normalization, like the baseline.
    """
    import torch

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mmoe = _mmoe(experts, dims, weight_norm=False)
            self.mmoe.build((None, dim))
            self.heads = torch.nn.ModuleList(
                torch.nn.Linear(dims[-1], 1) for _ in range(TASKS)
            )

        def forward(self, x):
            outputs = self.mmoe(x, training=True)
            return [head(y) for head, y in zip(self.heads, outputs, strict=True)]

    module = Module()
    return _torch_adam_runner(module, list(module.parameters()), compiled)


NATIVE = {"torch": _native_torch, "jax": _native_jax}
OURS_NATIVE = {"torch": _ours_in_torch_loop, "jax": _ours_in_jax_loop}


def _train_step(model: keras.Model, x, ys):
    """One Keras training step of `model` on the fixed batch, as a callable."""
    return lambda: model.train_on_batch(x, ys)


def _fresh_dynamo() -> None:
    """Forgets earlier compiled steps and lifts dynamo's recompile limit.

    Every compiled Keras model recompiles the same code object (the rest of
    Keras's torch `train_step` after its graph break), once per model and
    more on its first steps; past `recompile_limit` (8) dynamo runs that
    code eagerly without failing, and a full bench run hit it at the second
    size, so its "compiled" rows timed a partly eager step.
    """
    import torch

    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = 64


def _row(
    name: str, times: dict[str, float], label: str, baseline: str, base: str, ours: str
) -> dict[str, object]:
    """One result: step `ours` of `times` against step `base`."""
    return result_row(f"{name}{label}", baseline, times[base], times[ours])


def run() -> list[dict[str, object]]:
    rows = []
    backend = keras.backend.backend()
    rng = np.random.RandomState(0)
    for batch, dim, experts, dims in SIZES:
        x = rng.standard_normal((batch, dim)).astype("float32")
        ys = [rng.standard_normal((batch, 1)).astype("float32") for _ in range(TASKS)]
        steps = {}
        for kind, model in (
            ("ours", _ours(dim, experts, dims)),
            ("ours_plain", _ours(dim, experts, dims, weight_norm=False)),
            ("loop", _keras_loop(dim, experts, dims)),
            ("seeds_loop", _seeds_loop(dim, experts, dims)),
        ):
            steps[kind] = _train_step(model, x, ys)
        if backend in NATIVE:
            steps["native"] = NATIVE[backend](dim, experts, dims)(x, ys)
            steps["ours_native"] = OURS_NATIVE[backend](dim, experts, dims)(x, ys)
            # The hand-written models have no weight normalization; this is
            # the like-for-like row.
            steps["ours_plain_native"] = OURS_NATIVE[backend](
                dim, experts, dims, weight_norm=False
            )(x, ys)
        if backend == "torch":
            steps["layer_module"] = _layer_in_torch_module(dim, experts, dims)(x, ys)
        # Timed in alternation, so load drifts of the shared machine hit all.
        times = paired_median_seconds(steps, repeats=10)
        if backend == "torch":
            # After the eager ones and back to back: a `torch.compile`d step
            # leaves OpenMP threads spinning that slow eager calls down.
            _fresh_dynamo()
            compiled_models = {
                "ours_compiled": _ours(dim, experts, dims, jit_compile=True),
                "ours_plain_compiled": _ours(
                    dim, experts, dims, weight_norm=False, jit_compile=True
                ),
                "loop_compiled": _keras_loop(dim, experts, dims, jit_compile=True),
            }
            times.update(
                paired_median_seconds(
                    {k: _train_step(m, x, ys) for k, m in compiled_models.items()},
                    repeats=10,
                    interleave=False,
                )
            )
            # The native loops with every forward through `torch.compile`
            # ("jit where the backend supports it"). Each step is compiled
            # code plus the same eager optimizer step, so these can alternate.
            times.update(
                paired_median_seconds(
                    {
                        "native_compiled": _native_torch(
                            dim, experts, dims, compiled=True
                        )(x, ys),
                        "ours_native_compiled": _ours_in_torch_loop(
                            dim, experts, dims, compiled=True
                        )(x, ys),
                        "ours_plain_native_compiled": _ours_in_torch_loop(
                            dim, experts, dims, weight_norm=False, compiled=True
                        )(x, ys),
                        "layer_module_compiled": _layer_in_torch_module(
                            dim, experts, dims, compiled=True
                        )(x, ys),
                    },
                    repeats=15,
                )
            )
        name = f"MMoE train step B={batch} D={dim} E={experts} {dims} T={TASKS}"
        loop = "Keras, one Dense stack per expert, Python loop"
        seeds = (
            "seeds' structure: one keras_mtl MLP (weight norm) per expert, Python loop"
        )
        # (label, baseline, baseline's step, our step)
        pairs = [
            ("", loop, "loop", "ours"),
            (", ours with use_weight_norm=False", loop, "loop", "ours_plain"),
            ("", seeds, "seeds_loop", "ours"),
        ]
        if backend == "torch":
            both = ", both through torch.compile (jit_compile=True)"
            pairs += [
                (both, loop, "loop_compiled", "ours_compiled"),
                (
                    f"{both}, ours with use_weight_norm=False",
                    loop,
                    "loop_compiled",
                    "ours_plain_compiled",
                ),
            ]
        if backend in NATIVE:
            label = "plain PyTorch (eager)" if backend == "torch" else "plain JAX (jit)"
            native = f"hand-written {label}"
            pairs += [
                ("", native, "native", "ours"),
                (", ours in the same native loop", native, "native", "ours_native"),
                (
                    ", ours with use_weight_norm=False in the same native loop "
                    "(the same math as the baseline)",
                    native,
                    "native",
                    "ours_plain_native",
                ),
            ]
        if backend == "torch":
            pairs.append(
                (
                    ", the layer alone (use_weight_norm=False) in a torch.nn.Module "
                    "with torch.nn.Linear heads, the same native loop",
                    native,
                    "native",
                    "layer_module",
                )
            )
            native_c = "hand-written plain PyTorch, forward through torch.compile"
            pairs += [
                (
                    ", ours in the same native loop, forward through torch.compile",
                    native_c,
                    "native_compiled",
                    "ours_native_compiled",
                ),
                (
                    ", ours with use_weight_norm=False in the same native loop, "
                    "forward through torch.compile",
                    native_c,
                    "native_compiled",
                    "ours_plain_native_compiled",
                ),
                (
                    ", the layer alone (use_weight_norm=False) in a torch.nn.Module, "
                    "forward through torch.compile, the same native loop",
                    native_c,
                    "native_compiled",
                    "layer_module_compiled",
                ),
            ]
        rows += [_row(name, times, *pair) for pair in pairs]
    return rows
