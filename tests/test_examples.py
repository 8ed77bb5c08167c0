"""Smoke test: the MMoE synthetic example runs end to end (`--quick`)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_mmoe_synthetic_quick():
    # The example is backend-neutral Keras code. It runs under torch, where it
    # takes seconds; under JAX and TF its XLA compiles take minutes of CI. The
    # layers are checked per backend by the conformance suite.
    if keras.backend.backend() != "torch":
        pytest.skip("runs in the torch test session")
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mmoe_synthetic.py"), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The first table (final test loss); later tables have other row names.
    lines = result.stdout.splitlines()
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


def test_cross_backend_training_is_one_run():
    """From the same weights, 20 MMoE Adam steps agree on all three backends.

    Cross-backend by itself, so it runs once (in the JAX test session).
    """
    if keras.backend.backend() != "jax":
        pytest.skip("runs every backend itself; once is enough")
    for module in ("jax", "tensorflow", "torch"):
        pytest.importorskip(module)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "cross_backend_training.py"),
            "--models=mmoe",
            "--epochs=1",
            "--train=5120",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    row = next(
        line for line in result.stdout.splitlines() if line.startswith("| mmoe |")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "20", row  # steps
    assert float(cells[2]) > float(cells[3]), row  # it trained
    for diff in cells[4:]:
        assert float(diff) < 1e-4, row
