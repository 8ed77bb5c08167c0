"""SparseMoE on a GPU against plain-framework dropless grouped-GEMM MoE.

`python -m bench --suite moe --device gpu` on the JAX or torch backend.

Size: T = 16384 tokens, d = 1024, expert hidden 4096, E = 64 experts, top-2,
capacity factor 1.25 in training and evaluation, groups of 2048 tokens: the
size at which MoE models are trained (a 16k-token batch through a
1024-wide layer). The CPU suite's T = 4096, d = 256 (`bench/moe.py`) is
launch-bound on a GPU: its matmuls take microseconds, so a GPU timing of it
measures kernel launches and host work rather than the dispatchers. Every
figure is for bfloat16 and float32, each in its own table (`--dtype`).

Rows, all timed forward (`training=True`, no gradient) and forward+backward
(the gradient of `sum(square(float32(y)))` plus the layer's auxiliary losses
with respect to the inputs and every trainable weight):

- the layer with each dispatcher (`index`, `grouped`, `einsum`; `dense` runs
  every expert on every token, 64x the FLOPs, so only with `--with-dense`),
  the dropless `grouped` layer (`capacity_factor=None`), the default
  `dispatcher="auto"` (labelled with what it resolved to), and the `grouped`
  layers again with `use_bias=False`, like-for-like with the references;
- the reference: a dropless MoE written in the plain framework with the same
  routing maths (float32 router softmax, top-2, gates renormalized over the
  two) and weights, no biases, relu between the expert matmuls. JAX: a stable
  argsort of the expert ids, a gather, two `jax.lax.ragged_dot` and a
  gate-weighted scatter-add, under `jax.jit`. torch: the same with two
  `torch._grouped_mm` and `index_add`, eager and `torch.compile`d.

Modes: JAX rows are `jax.jit` of `layer.stateless_call` (JAX's eager mode
dispatches op by op and is nobody's training loop, so it is not timed).
torch rows are timed twice: eager (`layer(x)` and `.backward()`) and through
`torch.compile` (the forward, or the forward and loss whose result then gets
`.backward()`). Each layer row's ratio is against the reference of the same
backend and mode. A variant that raises (out of memory, a compile failure)
prints the exception's first line and its cells say "failed: ...".

Method: every input, weight and matmul operand is on the device before any
timing (jnp arrays on JAX's default device, `cuda` tensors on torch); each
figure is the median of 20 calls after 3 warm-ups, with a device sync after
every call (`jax.block_until_ready`, `torch.cuda.synchronize`). The matmul
peak is one `[8192, 8192] @ [8192, 8192]` matmul in the same dtype, timed in
the same process the same way; "% of peak" is active FLOPs (`T * k * 4 * d *
h` forward, three times that forward+backward) over time over that peak.
float32 means float32: TF32 is off on torch and JAX runs the whole bench
under `jax.default_matmul_precision("float32")`.

`--small` (T = 256, d = 64, h = 128, E = 8, groups of 128, `dense` included,
2 timed calls after 1 warm-up, a 1024 matmul) runs on whatever device there
is, to check the code path on a machine without a GPU; `--no-compile` leaves
out the `torch.compile` rows (minutes per variant on a small CPU). Without
`--small`, a backend that sees no GPU stops with a message before anything
is built.

On a GPU machine without a package registry, with JAX (CUDA build) or torch
(CUDA build), keras and this repository's dependencies installed, from the
repository root:

    KERAS_BACKEND=jax python -m bench --suite moe --device gpu
    KERAS_BACKEND=torch python -m bench --suite moe --device gpu

The report goes to `reports/bench-<backend>-gpu.md` (`-gpu-small.md` with
`--small`, so that a check never overwrites real figures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from unittest import mock

import keras
import numpy as np

from bench.timing import median_seconds
from bench.timing import result_row
from keras_mtl import layers

CAPACITY_FACTOR = 1.25
DTYPES = ("bfloat16", "float32")
BACKENDS = ("jax", "torch")

Step = Callable[[], Any]
# Seconds, or "failed: <reason>".
Timing = float | str


@dataclasses.dataclass(frozen=True)
class Size:
    tokens: int
    dim: int
    hidden: int
    experts: int
    top_k: int
    group_size: int
    matmul: int  # side of the square reference matmul
    warmup: int
    repeats: int

    @property
    def active_flops(self) -> float:
        """Forward FLOPs of the two expert matmuls of every chosen expert."""
        return self.tokens * self.top_k * 4.0 * self.dim * self.hidden


FULL = Size(16384, 1024, 4096, 64, 2, 2048, 8192, warmup=3, repeats=20)
SMALL = Size(256, 64, 128, 8, 2, 128, 1024, warmup=1, repeats=2)


class UnavailableError(RuntimeError):
    """This backend or machine cannot run the GPU bench (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One `SparseMoE` configuration: its label and constructor arguments."""

    label: str
    kwargs: dict[str, Any]


@dataclasses.dataclass
class Result:
    """One table row: a variant (or the reference) in one mode."""

    label: str
    mode: str
    fwd: Timing
    grad: Timing


def variants(with_dense: bool) -> list[Variant]:
    capped = {
        "capacity_factor": CAPACITY_FACTOR,
        "eval_capacity_factor": CAPACITY_FACTOR,
    }
    dropless = {"capacity_factor": None, "eval_capacity_factor": None}
    cf = f"capacity {CAPACITY_FACTOR}"
    dispatchers = ("index", "grouped", "einsum", "dense")
    out = [
        Variant(f"{d}, {cf}", {**capped, "dispatcher": d})
        for d in dispatchers
        if with_dense or d != "dense"
    ]
    return [
        *out,
        Variant("grouped, dropless", {**dropless, "dispatcher": "grouped"}),
        # Labelled with the dispatcher it resolves to (`Runner.auto_dispatcher`).
        Variant(f"auto, {cf}", capped),
        Variant(
            f"grouped, {cf}, use_bias=False",
            {**capped, "dispatcher": "grouped", "use_bias": False},
        ),
        Variant(
            "grouped, dropless, use_bias=False",
            {**dropless, "dispatcher": "grouped", "use_bias": False},
        ),
    ]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def _failed(error: BaseException, what: str) -> str:
    reason = _first_line(error)
    print(f"  {what} failed: {reason}", flush=True)
    return f"failed: {reason}"


def host_weights(size: Size) -> dict[str, np.ndarray]:
    """The weights every variant and reference gets, by variable name.

    Kernels `N(0, 1) / sqrt(fan_in)` keep activations of order one; biases
    are small so the bias-free references stay comparable.
    """
    rng = np.random.default_rng(1)
    d, h, e = size.dim, size.hidden, size.experts

    def normal(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

    return {
        "router_kernel": normal((d, e), d**-0.5),
        "expert_kernel_0": normal((e, d, h), d**-0.5),
        "expert_bias_0": normal((e, h), 0.01),
        "expert_kernel_1": normal((e, h, d), h**-0.5),
        "expert_bias_1": normal((e, d), 0.01),
    }


class Runner:
    """What differs between backends: devices, steps, the reference."""

    backend: str
    modes: tuple[str, ...]

    def __init__(self, device: str) -> None:
        self.device = device  # "gpu" or "cpu": where the bench runs

    def precision(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def device_name(self) -> str:
        raise NotImplementedError

    def put(self, array: np.ndarray) -> Any:
        """A float32 host array as a device tensor."""
        raise NotImplementedError

    def cast(self, tensor: Any, dtype: str) -> Any:
        raise NotImplementedError

    def sync(self, out: Any) -> None:
        raise NotImplementedError

    def matmul_step(self, n: int, dtype: str) -> Step:
        raise NotImplementedError

    def layer_steps(self, layer: Any, x: Any, mode: str) -> tuple[Step, Step]:
        raise NotImplementedError

    def reference_steps(
        self, weights: dict[str, Any], x: Any, size: Size, mode: str, dtype: str
    ) -> tuple[Step, Step]:
        raise NotImplementedError

    def reference_label(self, mode: str, dtype: str) -> str:
        raise NotImplementedError

    def mode_label(self, mode: str) -> str:
        return mode

    def auto_dispatcher(self, layer: Any, x: Any, mode: str) -> str:
        return layer.resolve_dispatcher(x, training=True)

    def release(self) -> None:
        """Frees what the last variant left behind before the next one."""
        gc.collect()


class JaxRunner(Runner):
    backend = "jax"
    modes = ("jit",)

    def __init__(self, device: str) -> None:
        super().__init__(device)
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def precision(self) -> contextlib.AbstractContextManager[Any]:
        # So that float32 rows are float32 (not TF32 or bfloat16 passes).
        return self.jax.default_matmul_precision("float32")

    def device_name(self) -> str:
        return self.jnp.zeros(()).devices().pop().device_kind

    def put(self, array: np.ndarray) -> Any:
        return self.jnp.asarray(array)

    def cast(self, tensor: Any, dtype: str) -> Any:
        return tensor.astype(dtype)

    def sync(self, out: Any) -> None:
        self.jax.block_until_ready(out)

    def matmul_step(self, n: int, dtype: str) -> Step:
        jax = self.jax
        ka, kb = jax.random.split(jax.random.key(0))
        a = jax.random.normal(ka, (n, n), dtype)
        b = jax.random.normal(kb, (n, n), dtype)
        f = jax.jit(self.jnp.matmul)
        return lambda: f(a, b)

    def layer_steps(self, layer: Any, x: Any, mode: str) -> tuple[Step, Step]:
        jax, jnp = self.jax, self.jnp
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def forward(tv: list[Any], ntv: list[Any], x: Any) -> Any:
            # Outputs, statistics and losses: all a training forward computes.
            return layer.stateless_call(tv, ntv, x, training=True, return_losses=True)

        def loss(tv: list[Any], ntv: list[Any], x: Any) -> Any:
            y, _, losses = forward(tv, ntv, x)
            return jnp.sum(jnp.square(y.astype("float32"))) + sum(losses)

        fwd = jax.jit(forward)
        grad = jax.jit(jax.grad(loss, argnums=(0, 2)))
        return lambda: fwd(tv, ntv, x), lambda: grad(tv, ntv, x)

    def reference_steps(
        self, weights: dict[str, Any], x: Any, size: Size, mode: str, dtype: str
    ) -> tuple[Step, Step]:
        jax, jnp = self.jax, self.jnp
        k, e = size.top_k, size.experts
        params = [weights[n] for n in ("router_kernel", *_KERNELS)]

        def moe(params: list[Any], x: Any) -> Any:
            router, w1, w2 = params
            logits = x.astype("float32") @ router.astype("float32")
            gates, chosen = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), k)
            gates = gates / gates.sum(-1, keepdims=True)
            flat = chosen.reshape(-1)
            order = jnp.argsort(flat, stable=True)
            token = order // k
            # A one-hot sum, not `jnp.bincount`: one fused reduction.
            sizes = jax.nn.one_hot(flat, e, dtype=jnp.int32).sum(0)
            h = jax.nn.relu(jax.lax.ragged_dot(x[token], w1, sizes))
            ys = jax.lax.ragged_dot(h, w2, sizes)
            weight = gates.reshape(-1)[order].astype(ys.dtype)
            return jnp.zeros_like(x).at[token].add(ys * weight[:, None])

        def loss(params: list[Any], x: Any) -> Any:
            return jnp.sum(jnp.square(moe(params, x).astype("float32")))

        fwd = jax.jit(moe)
        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return lambda: fwd(params, x), lambda: grad(params, x)

    def reference_label(self, mode: str, dtype: str) -> str:
        return "plain JAX: argsort + lax.ragged_dot, dropless, no biases"


class TorchRunner(Runner):
    backend = "torch"
    modes = ("eager", "compiled")

    def __init__(self, device: str, compiled: bool = True) -> None:
        super().__init__(device)
        import torch

        self.torch = torch
        self.modes = ("eager", "compiled") if compiled else ("eager",)
        self.target = torch.device("cuda" if device == "gpu" else "cpu")

    @contextlib.contextmanager
    def precision(self) -> Iterator[None]:
        # TF32 off: float32 rows (layer, reference and peak) stay float32.
        matmul = self.torch.backends.cuda.matmul
        previous = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = previous

    @property
    def on_cuda(self) -> bool:
        return self.target.type == "cuda"

    def device_name(self) -> str:
        if self.on_cuda:
            return self.torch.cuda.get_device_name(self.target)
        return "cpu"

    def put(self, array: np.ndarray) -> Any:
        return self.torch.as_tensor(array, device=self.target)

    def cast(self, tensor: Any, dtype: str) -> Any:
        return tensor.to(getattr(self.torch, dtype))

    def sync(self, out: Any) -> None:
        if self.on_cuda:
            self.torch.cuda.synchronize(self.target)

    def matmul_step(self, n: int, dtype: str) -> Step:
        torch = self.torch
        gen = torch.Generator(self.target).manual_seed(0)
        dt = getattr(torch, dtype)
        a = torch.randn(n, n, generator=gen, device=self.target, dtype=dt)
        b = torch.randn(n, n, generator=gen, device=self.target, dtype=dt)
        return lambda: a @ b

    def mode_label(self, mode: str) -> str:
        return "torch.compile" if mode == "compiled" else mode

    def _steps(
        self,
        forward: Callable[..., Any],
        loss: Callable[..., Any],
        args: Sequence[Any],
        params: Sequence[Any],
        mode: str,
        before: Callable[[], None] = lambda: None,
    ) -> tuple[Step, Step]:
        """Forward (no grad) and forward+backward steps over `args`, each
        after `before()`; the gradients go to `params` and to the first
        argument, the inputs."""
        torch = self.torch
        x, *rest = args
        x_grad = x.detach().clone().requires_grad_(True)
        if mode == "compiled":
            forward, loss = torch.compile(forward), torch.compile(loss)

        def fwd() -> Any:
            before()
            with torch.no_grad():
                return forward(x, *rest)

        def grad() -> Any:
            before()
            for p in (*params, x_grad):
                p.grad = None
            value = loss(x_grad, *rest)
            value.backward()
            return value

        return fwd, grad

    def layer_steps(self, layer: Any, x: Any, mode: str) -> tuple[Step, Step]:
        def forward(x: Any) -> Any:
            return layer(x, training=True)

        def loss(x: Any) -> Any:
            y = layer(x, training=True)
            return y.float().square().sum() + sum(layer.losses)

        params = [v.value for v in layer.trainable_variables]
        self._fresh_dynamo()
        # The call clears the previous call's losses; traced, dynamo guards
        # on those very tensors, so the next call (holding new ones) would
        # recompile, every time. Cleared out here, the guard sees an empty
        # list on every call.
        return self._steps(forward, loss, [x], params, mode, layer._clear_losses)

    def _grouped_mm(self, mode: str, dtype: str) -> Callable[..., Any]:
        grouped_mm = self.torch._grouped_mm
        if mode == "compiled" and dtype != "bfloat16":
            # Its fake-tensor kernel, which `torch.compile` traces with,
            # takes bfloat16 only (torch 2.13): run it outside the graph.
            return self.torch.compiler.disable(grouped_mm)
        return grouped_mm

    def reference_steps(
        self, weights: dict[str, Any], x: Any, size: Size, mode: str, dtype: str
    ) -> tuple[Step, Step]:
        torch = self.torch
        k, e = size.top_k, size.experts
        params = [
            weights[n].detach().clone().requires_grad_(True)
            for n in ("router_kernel", *_KERNELS)
        ]
        grouped_mm = self._grouped_mm(mode, dtype)

        def moe(x: Any, router: Any, w1: Any, w2: Any) -> Any:
            logits = x.float() @ router.float()
            gates, chosen = torch.topk(torch.softmax(logits, dim=-1), k)
            gates = gates / gates.sum(-1, keepdim=True)
            flat = chosen.reshape(-1)
            order = torch.argsort(flat, stable=True)
            token = order // k
            # Not `torch.bincount`: on CUDA it reads its size back to the host.
            sizes = torch.zeros(e, dtype=flat.dtype, device=flat.device)
            sizes = sizes.scatter_add(0, flat, torch.ones_like(flat))
            offsets = torch.cumsum(sizes, 0, dtype=torch.int32)
            h = torch.relu(grouped_mm(x[token], w1, offs=offsets))
            ys = grouped_mm(h, w2, offs=offsets)
            weight = gates.reshape(-1)[order].to(ys.dtype)
            return torch.zeros_like(x).index_add(0, token, ys * weight[:, None])

        def loss(x: Any, *params: Any) -> Any:
            return moe(x, *params).float().square().sum()

        self._fresh_dynamo()
        return self._steps(moe, loss, [x, *params], params, mode)

    def reference_label(self, mode: str, dtype: str) -> str:
        label = "plain torch: argsort + torch._grouped_mm, dropless, no biases"
        if mode == "compiled" and dtype != "bfloat16":
            label += " (_grouped_mm outside the graph: compiles in bfloat16 only)"
        if self.on_cuda and not self._fast_grouped_mm(dtype):
            label += " (not bfloat16 on sm90/sm100: torch loops over the groups)"
        return label

    def _fast_grouped_mm(self, dtype: str) -> bool:
        major = self.torch.cuda.get_device_capability(self.target)[0]
        return dtype == "bfloat16" and major in (9, 10)

    def auto_dispatcher(self, layer: Any, x: Any, mode: str) -> str:
        if mode != "compiled":
            return layer.resolve_dispatcher(x, training=True)
        # The choice can depend on whether torch.compile is tracing (see
        # `keras_mtl.backend.grouped_torch.is_fast`): ask as if it were.
        with mock.patch.object(self.torch.compiler, "is_compiling", lambda: True):
            return layer.resolve_dispatcher(x, training=True)

    def _fresh_dynamo(self) -> None:
        # Every variant recompiles the same code objects (the layer's call
        # and its graph-break continuations); past dynamo's recompile limit
        # (8) it would run them eagerly without saying so.
        self.torch._dynamo.reset()
        self.torch._dynamo.config.recompile_limit = 64

    def release(self) -> None:
        super().release()
        if self.on_cuda:
            self.torch.cuda.empty_cache()


_KERNELS = ("expert_kernel_0", "expert_kernel_1")


def make_runner(device: str, small: bool, compiled: bool) -> Runner:
    """The backend's runner, after checking it can run here."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise UnavailableError(
            f"the GPU bench covers JAX and torch; this is the {backend} backend "
            "(set KERAS_BACKEND=jax or KERAS_BACKEND=torch)"
        )
    if backend == "jax":
        import jax

        has_gpu = jax.default_backend() == "gpu"
        seen = f"JAX's default backend is {jax.default_backend()!r}"
    else:
        import torch

        has_gpu = torch.cuda.is_available()
        seen = "torch.cuda.is_available() is False"
    if device == "gpu" and not has_gpu:
        if not small:
            raise UnavailableError(f"--device gpu but {seen}{_hidden_gpu_hint()}")
        device = "cpu"  # `--small` checks the code path on any device
    if backend == "jax":
        return JaxRunner(device)
    return TorchRunner(device, compiled)


def _hidden_gpu_hint() -> str:
    hidden = {
        name: os.environ[name]
        for name in ("CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")
        if name in os.environ
    }
    if not hidden:
        return " (is a CUDA build of the backend installed?)"
    env = ", ".join(f"{k}={v!r}" for k, v in hidden.items())
    return f" (the environment sets {env}, which can hide the GPU)"


def build_layer(
    variant: Variant, size: Size, dtype: str, weights: dict[str, Any]
) -> layers.SparseMoE:
    layer = layers.SparseMoE(
        num_experts=size.experts,
        expert_hidden_units=[size.hidden],
        top_k=size.top_k,
        group_size=size.group_size,
        dtype=dtype,
        **variant.kwargs,
    )
    layer.build((size.tokens, size.dim))
    for v in layer.trainable_variables:  # the same weights in every variant
        v.assign(weights[v.name])
    return layer


def _time_steps(
    runner: Runner, make_steps: Callable[[], tuple[Step, Step]], size: Size
) -> tuple[Timing, Timing]:
    """Median seconds of the forward and forward+backward steps; a failure
    (out of memory, a compile error) is reported and timed as its reason."""
    try:
        steps = make_steps()
    except Exception as error:
        reason = _failed(error, "build")
        return reason, reason
    out: list[Timing] = []
    for step, what in zip(steps, ("fwd", "fwd+bwd"), strict=True):
        try:
            out.append(median_seconds(step, size.warmup, size.repeats, runner.sync))
        except Exception as error:
            out.append(_failed(error, what))
    del steps
    runner.release()
    return out[0], out[1]


def _time_variant(
    runner: Runner,
    variant: Variant,
    mode: str,
    size: Size,
    dtype: str,
    weights: dict[str, Any],
    x: Any,
) -> Result:
    """One variant in one mode, on a layer of its own (freed afterwards)."""
    try:
        layer = build_layer(variant, size, dtype, weights)
    except Exception as error:
        reason = _failed(error, variant.label)
        return Result(variant.label, mode, reason, reason)
    label = variant.label
    if variant.kwargs.get("dispatcher", "auto") == "auto":
        label = label.replace("auto", f"auto -> {_auto(runner, layer, x, mode)}")
    make_steps = functools.partial(runner.layer_steps, layer, x, mode)
    result = _timed(runner, label, mode, dtype, make_steps, size)
    del layer, make_steps
    runner.release()
    return result


def _timed(
    runner: Runner,
    label: str,
    mode: str,
    dtype: str,
    make_steps: Callable[[], tuple[Step, Step]],
    size: Size,
) -> Result:
    """Announces the row, then times its steps (`_time_steps`)."""
    print(f"{dtype} {label} ({runner.mode_label(mode)})", flush=True)
    fwd, grad = _time_steps(runner, make_steps, size)
    return Result(label, mode, fwd, grad)


def _auto(runner: Runner, layer: Any, x: Any, mode: str) -> str:
    try:
        return runner.auto_dispatcher(layer, x, mode)
    except Exception as error:
        return _failed(error, "resolve_dispatcher")


def _dropped_fraction(
    size: Size, dtype: str, weights: dict[str, Any], x: Any
) -> float | None:
    """Dropped assignments of one training call at capacity factor 1.25 (the
    same for every capped variant: they share the routing and weights)."""
    try:
        layer = build_layer(variants(with_dense=False)[0], size, dtype, weights)
        layer(x, training=True)
        return float(keras.ops.convert_to_numpy(layer.dropped_fraction))
    except Exception as error:
        _failed(error, "dropped fraction")
        return None


def _matmul_peak(runner: Runner, size: Size, dtype: str) -> float:
    """FLOP/s of one device-resident `[n, n] @ [n, n]` matmul in `dtype`."""
    n = size.matmul
    step = runner.matmul_step(n, dtype)
    return 2.0 * n**3 / median_seconds(step, size.warmup, size.repeats, runner.sync)


def _ms(t: Timing) -> str:
    return t if isinstance(t, str) else f"{t * 1e3:.2f}"


def _quotient(num: Timing, den: Timing, fmt: str) -> str:
    if isinstance(num, str) or isinstance(den, str):
        return "-"
    return format(num / den, fmt)


def _table(
    runner: Runner,
    results: list[Result],
    references: dict[str, Result],
    size: Size,
    peak: float,
) -> list[str]:
    # Seconds the active FLOPs take at the matmul peak, over the time taken.
    ideal = size.active_flops / peak
    lines = [
        "| variant | fwd ms | fwd+bwd ms | fwd % of matmul peak | fwd+bwd % of peak "
        "| fwd / reference | fwd+bwd / reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref = references[r.mode]
        lines.append(
            f"| {r.label} ({runner.mode_label(r.mode)}) | {_ms(r.fwd)} | "
            f"{_ms(r.grad)} | {_quotient(ideal, r.fwd, '.0%')} | "
            f"{_quotient(3 * ideal, r.grad, '.0%')} | "
            f"{_quotient(r.fwd, ref.fwd, '.2f')} | "
            f"{_quotient(r.grad, ref.grad, '.2f')} |"
        )
    return lines


def _header(
    runner: Runner, size: Size, dtype: str, peak: float, dropped: float | None
) -> str:
    s = size
    drop = "-" if dropped is None else f"{dropped:.1%}"
    return (
        f"### {runner.backend} {dtype} on {runner.device_name()}: SparseMoE "
        f"T={s.tokens} d={s.dim} h={s.hidden} E={s.experts} k={s.top_k}, "
        f"groups of {s.group_size}; matmul {s.matmul}^3 {dtype}: "
        f"{peak / 1e12:.3g} TFLOP/s; dropped assignments at capacity "
        f"{CAPACITY_FACTOR}: {drop}"
    )


def _summary_rows(
    runner: Runner, dtype: str, results: list[Result], references: dict[str, Result]
) -> list[dict[str, Any]]:
    """Each layer row against the reference of its mode, where both ran."""
    rows = []
    for r in results:
        ref = references[r.mode]
        mode = runner.mode_label(r.mode)
        for what, ours, base in (
            ("fwd", r.fwd, ref.fwd),
            ("fwd+bwd", r.grad, ref.grad),
        ):
            if isinstance(ours, str) or isinstance(base, str):
                continue  # the printed table says why
            rows.append(
                result_row(
                    f"SparseMoE GPU {dtype} {r.label} ({mode}) {what}",
                    f"{ref.label} ({mode})",
                    base,
                    ours,
                )
            )
    return rows


def _run_dtype(
    runner: Runner,
    size: Size,
    dtype: str,
    master: dict[str, Any],
    x32: Any,
    with_dense: bool,
) -> list[dict[str, Any]]:
    weights = {n: runner.cast(w, dtype) for n, w in master.items()}
    x = runner.cast(x32, dtype)
    peak = _matmul_peak(runner, size, dtype)
    results: list[Result] = []
    references: dict[str, Result] = {}
    # One mode after the other: on the CPU a `torch.compile`d step leaves
    # OpenMP threads spinning that slow down eager calls timed after it.
    for mode in runner.modes:
        for variant in variants(with_dense):
            results.append(
                _time_variant(runner, variant, mode, size, dtype, weights, x)
            )
        # The plain-framework reference of the mode.
        make_steps = functools.partial(
            runner.reference_steps, weights, x, size, mode, dtype
        )
        label = runner.reference_label(mode, dtype)
        references[mode] = _timed(runner, label, mode, dtype, make_steps, size)
    dropped = _dropped_fraction(size, dtype, weights, x)
    # Each mode's layer rows, then its reference.
    table = [
        r
        for mode in runner.modes
        for r in (*(r for r in results if r.mode == mode), references[mode])
    ]
    lines = [
        _header(runner, size, dtype, peak, dropped),
        "",
        *_table(runner, table, references, size, peak),
    ]
    print("\n" + "\n".join(lines) + "\n", flush=True)
    return _summary_rows(runner, dtype, results, references)


def run(
    device: str = "gpu",
    small: bool = False,
    dtypes: Sequence[str] = DTYPES,
    with_dense: bool = False,
    compiled: bool = True,
) -> list[dict[str, Any]]:
    """Prints a table per dtype and returns the summary rows (see the module
    docstring). `device="gpu"` needs a GPU unless `small`; `compiled=False`
    leaves out the `torch.compile` rows. Raises `UnavailableError` where the
    bench cannot run."""
    runner = make_runner(device, small, compiled)
    size = SMALL if small else FULL
    with_dense = with_dense or small
    host = host_weights(size)
    x_host = np.random.default_rng(0).standard_normal(
        (size.tokens, size.dim), dtype=np.float32
    )
    rows = []
    # "cpu", not "cpu:0": under "cpu:0" Keras's torch backend moves each new
    # variable off its `Parameter` (a "cpu" tensor is not on "cpu:0"), and
    # re-wrapping the integer seed variable as a `Parameter` then fails.
    with keras.device(runner.device), runner.precision():
        master = {n: runner.put(w) for n, w in host.items()}
        x32 = runner.put(x_host)
        for dtype in dtypes:
            rows += _run_dtype(runner, size, dtype, master, x32, with_dense)
    return rows
