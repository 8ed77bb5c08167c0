"""Smoke test: the MMoE synthetic example runs end to end (`--quick`)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_example(script: str, *args, backend: str | None = None) -> str:
    """Runs `examples/<script>`, fails the test on a non-zero exit; its stdout."""
    env = dict(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    return result.stdout


@pytest.mark.long(30)
def test_mmoe_synthetic_quick():
    # The example is backend-neutral Keras code. It runs under torch, where it
    # takes seconds; under JAX and TF its XLA compiles take minutes of CI. The
    # layers are checked per backend by the conformance suite.
    if keras.backend.backend() != "torch":
        pytest.skip("runs in the torch test session")
    stdout = _run_example(
        "mmoe_synthetic.py", "--quick", backend=keras.backend.backend()
    )
    # The first table (final test loss); later tables have other row names.
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if line.startswith("| "):
            table.append(line)
    assert table[0].startswith("| model | p = 1.0 | p = 0.5 | p = 0.0 |")
    assert [row.split(" | ")[0] for row in table[1:]] == [
        "| shared_bottom",
        "| mmoe",
        "| ple",
    ]


@pytest.mark.long(35)
def test_cross_backend_training_is_one_run():
    """From the same weights, 20 MMoE Adam steps agree on all three backends.

    Cross-backend by itself, so it runs once (in the JAX test session).
    """
    if keras.backend.backend() != "jax":
        pytest.skip("runs every backend itself; once is enough")
    for module in ("jax", "tensorflow", "torch"):
        pytest.importorskip(module)
    stdout = _run_example(
        "cross_backend_training.py", "--models=mmoe", "--epochs=1", "--train=5120"
    )
    row = next(line for line in stdout.splitlines() if line.startswith("| mmoe |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "20", row  # steps
    assert float(cells[2]) > float(cells[3]), row  # it trained
    for diff in cells[4:]:
        assert float(diff) < 1e-4, row


def test_seed_sweep_trains_like_keras(monkeypatch):
    """The vmapped sweep's steps are Keras's own `train_on_batch` steps.

    Two seeds of MMoE, three steps: each seed's weights must match a Keras
    model built from the same seed and trained on the same batches.
    """
    if keras.backend.backend() != "jax":
        pytest.skip("the seed sweep trains with jax.vmap")
    import jax
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import mmoe_seed_sweep as sweep_ex
    import mmoe_synthetic as ex

    seeds, steps, batch, lr = [4, 7], 3, 64, 1e-2
    task = sweep_ex.tasks(0.5, seeds)
    keys = np.stack([jax.random.PRNGKey(s) for s in seeds])
    sweep = sweep_ex.Sweep("mmoe", seeds, lr)
    sweep.train(task, keys, 0, steps, batch)
    for s, seed in enumerate(seeds):
        model = ex.build_model("mmoe", seed, lr)
        one = {name: value[s] for name, value in task.items()}
        for i in range(steps):
            x, ys = sweep_ex.sample(one, jax.random.fold_in(keys[s], i), batch)
            model.train_on_batch(np.asarray(x), [np.asarray(y) for y in ys])
        moved = [
            np.abs(after[s] - before[s]).max()
            for after, before in zip(sweep.state[0], sweep.initial[0], strict=True)
        ]
        assert min(moved) > 1e-3, moved  # every weight trained
        for variable, stacked in zip(
            model.trainable_variables, sweep.state[0], strict=True
        ):
            np.testing.assert_allclose(
                variable.numpy(),
                stacked[s],
                rtol=1e-4,
                atol=1e-5,
                err_msg=variable.path,
            )


@pytest.mark.long(20)
def test_seed_sweep_quick_and_its_saved_report(tmp_path):
    if keras.backend.backend() != "jax":
        pytest.skip("the seed sweep trains with jax.vmap")
    saved = tmp_path / "sweep.json"

    def tables(*args):
        stdout = _run_example("mmoe_seed_sweep.py", *args, backend="jax")
        return stdout[stdout.index("Final test loss") :]

    trained = tables("--quick", "--models", "shared_bottom", "mmoe", "--json", saved)
    assert "| shared_bottom − mmoe |" in trained
    assert "| ple |" not in trained
    assert tables("--report", saved) == trained
