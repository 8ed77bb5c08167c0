"""The GPU MoE benchmark (`bench/moe_gpu.py`) at its `--small` size on the CPU,
and the command line that selects it."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from bench import __main__ as bench_main
from bench import moe_gpu
from tests._helpers import BACKEND
from tests._helpers import only

jax_or_torch = pytest.mark.skipif(
    BACKEND not in moe_gpu.BACKENDS, reason="the GPU bench covers JAX and torch"
)


def _gpu_visible() -> bool:
    if BACKEND == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if BACKEND == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def _inputs(runner: moe_gpu.Runner, size: moe_gpu.Size) -> tuple[dict, object]:
    weights = {n: runner.put(w) for n, w in moe_gpu.host_weights(size).items()}
    x = np.random.default_rng(0).standard_normal((size.tokens, size.dim))
    return weights, runner.put(x.astype("float32"))


@jax_or_torch
@pytest.mark.long(15)
def test_small_run_times_every_variant_and_the_reference(capsys):
    # Eager torch only: torch.compile takes minutes for the eight layer
    # variants on two CPU cores (its reference is checked below).
    rows = moe_gpu.run(device="cpu", small=True, dtypes=("float32",), compiled=False)
    out = capsys.readouterr().out
    assert "failed" not in out
    assert "| variant | fwd ms | fwd+bwd ms |" in out
    assert "dropped assignments at capacity 1.25: " in out
    # Every variant (dense included at the small size), fwd and fwd+bwd.
    assert len(rows) == 2 * len(moe_gpu.variants(with_dense=True))
    for dispatcher in ("index,", "grouped,", "einsum,", "dense,", "auto -> "):
        assert any(dispatcher in row["benchmark"] for row in rows), dispatcher
    reference = "ragged_dot" if BACKEND == "jax" else "torch._grouped_mm"
    for row in rows:
        assert reference in row["baseline"]
        for key in ("baseline_ms", "ours_ms", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (row, key)


@jax_or_torch
def test_reference_matches_the_bias_free_dropless_layer():
    """The references route like the layer: same outputs, same weights."""
    size = moe_gpu.SMALL
    runner = moe_gpu.make_runner("cpu", small=True, compiled=False)
    with keras.device("cpu"), runner.precision():
        weights, x = _inputs(runner, size)
        (variant,) = [
            v
            for v in moe_gpu.variants(with_dense=False)
            if v.label == "grouped, dropless, use_bias=False"
        ]
        layer = moe_gpu.build_layer(variant, size, "float32", weights)
        fwd, _ = runner.reference_steps(weights, x, size, runner.modes[0], "float32")
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fwd()),
            keras.ops.convert_to_numpy(layer(x, training=True)),
            rtol=1e-4,
            atol=1e-5,
        )


@only("torch")
@pytest.mark.long(50)
def test_torch_compiled_reference_matches_eager():
    # float32: `torch._grouped_mm` stays outside the compiled graph.
    size = moe_gpu.SMALL
    runner = moe_gpu.make_runner("cpu", small=True, compiled=True)
    with keras.device("cpu"), runner.precision():
        weights, x = _inputs(runner, size)
        eager, _ = runner.reference_steps(weights, x, size, "eager", "float32")
        fwd, grad = runner.reference_steps(weights, x, size, "compiled", "float32")
        np.testing.assert_allclose(fwd().numpy(), eager().numpy(), rtol=1e-5, atol=1e-6)
        assert math.isfinite(float(grad().detach()))


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible: it would run")
@jax_or_torch
def test_full_size_without_a_gpu_fails_fast():
    with pytest.raises(moe_gpu.UnavailableError, match="--device gpu but"):
        moe_gpu.run(device="gpu")


@only("tensorflow")
def test_tensorflow_is_refused():
    with pytest.raises(moe_gpu.UnavailableError, match="covers JAX and torch"):
        moe_gpu.run(device="gpu", small=True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "gpu", "--suite", "core"], "only the moe suite"),
        (["--device", "gpu", "--suite", "moe", "--suite", "dcn"], "dcn"),
        (["--small"], "only with --device gpu"),
        (["--suite", "moe", "--dtype", "float32"], "only with --device gpu"),
    ],
)
def test_command_line_refuses(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_defaults():
    assert bench_main.parse_args([]).device == "cpu"
    args = bench_main.parse_args(["--device", "gpu"])
    assert (args.suite, args.dtype, args.small) == (["moe"], "both", False)
