"""Random weights and inputs for spec configurations agree across backends
(`keras_mtl_conformance/random_cross.py`; `nox -s random_cross` runs more)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_mtl_conformance import random_cross
from tests._helpers import BACKEND

# Runs once (in the TensorFlow session); the other backends run in
# subprocesses.
pytestmark = pytest.mark.backend_independent
SAMPLES = 12


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("random_cross")
    random_cross.make(out, seed=1, count=SAMPLES)
    return out


@pytest.mark.parametrize("other", ["tensorflow", "jax", "torch"])
@pytest.mark.long(25)
def test_other_backends_reproduce_the_outputs(made, other):
    if other == BACKEND:
        pytest.skip("the maker itself")
    if importlib.util.find_spec(other) is None:
        pytest.skip(f"{other} is not installed")
    env = {**os.environ, "KERAS_BACKEND": other, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_mtl_conformance.random_cross",
            "check",
            f"--out={made}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "0 mismatching outputs" in run.stdout


def test_a_wrong_output_is_reported(made, tmp_path):
    """The check fails, naming the sample, when another backend's output
    differs: here the maker's own file with one output changed."""
    data = dict(np.load(made / f"{BACKEND}.npz"))
    key = next(k for k in sorted(data) if k.endswith("/output/0"))
    data[key] = data[key] + 1e-2 * (1.0 + np.abs(data[key]).max())
    np.savez(tmp_path / "elsewhere.npz", **data)
    shutil.copy(made / f"{BACKEND}.npz", tmp_path / f"{BACKEND}.npz")
    errors = random_cross.check(tmp_path)
    sample = key.split("/")[0]
    assert len(errors) == 1 and errors[0].startswith(f"sample {sample} "), errors
