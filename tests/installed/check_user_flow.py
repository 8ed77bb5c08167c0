"""A user's own layer through the installed `keras-mtl-conformance` command.

`nox -s installed` builds the wheel, installs it with the `conformance` extra
and two backends in a fresh environment outside the checkout, and runs this
file there with that environment's pytest (not collected by `nox -s tests`:
its name does not start with `test_`). The layer, its NumPy reference and its
spec are written into a folder of the user's; every step is the documented
command, run from that folder.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

COMMAND = shutil.which("keras-mtl-conformance") or "keras-mtl-conformance"

LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="my_layers")
class Scale(keras.layers.Layer):
    """`x * factor + bias`."""

    def __init__(self, factor: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],))

    def call(self, x):
        return x * self.factor + self.bias

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''

REFERENCE = """
def scale(inputs, weights, config, training):
    (x,) = inputs
    return {"outputs": [x * config["factor"] + weights["bias"]]}
"""

WRONG_REFERENCE = REFERENCE.replace('+ weights["bias"]', '- weights["bias"]')

SPEC = """\
schema_version: 1
layer: my_layers.Scale
reference: my_reference:scale
description: A user's layer, checked by the installed suite.
cases:
  - id: basic
    config: {factor: 3.0}
    inputs:
      x: {shape: [4, 3], generator: {kind: normal, seed: 1}}
    weights:
      bias: {shape: [3], data: [0.5, -1.0, 2.0]}
  - id: one_row
    config: {factor: -1.5}
    checks: [forward]
    inputs:
      x: {shape: [1, 3], generator: {kind: normal, seed: 2}}
    weights:
      bias: {shape: [3], data: [0.0, 1.0, 0.0]}
"""


def _run(folder: pathlib.Path, backend: str, *args: str) -> str:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "CUDA_VISIBLE_DEVICES": "",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [COMMAND, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` on {backend} failed:\n{out}")
    return out


def _passed(out: str) -> bool:
    """pytest's last line says "N passed" and no "N failed"."""
    return bool(re.search(r"\d+ passed", out)) and not re.search(r"\d+ failed", out)


def _fails(folder: pathlib.Path, backend: str, *args: str) -> str:
    try:
        out = _run(folder, backend, *args)
    except AssertionError as err:
        return str(err)
    raise AssertionError(f"`{' '.join(args)}` passed and should not have:\n{out}")


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "my_layers.py").write_text(LAYER)
    (tmp_path / "my_reference.py").write_text(REFERENCE)
    spec_dir = tmp_path / "my_specs" / "scale"
    spec_dir.mkdir(parents=True)
    (spec_dir / "spec.yaml").write_text(SPEC)
    return tmp_path


def test_not_run_from_a_clone():
    import keras_mtl_conformance

    here = pathlib.Path(keras_mtl_conformance.__file__).resolve()
    assert "site-packages" in here.parts, here
    assert not (here.parent.parent / "specs").exists()


def test_a_users_layer_through_every_step(folder: pathlib.Path):
    out = _run(folder, "jax", "goldens", "--spec-dir", "my_specs")
    assert (folder / "my_specs" / "scale" / "golden.yaml").exists(), out
    # Two cases in two worker processes, which import the user's reference
    # from this folder as the command does.
    _run(folder, "jax", "goldens", "--spec-dir", "my_specs", "--check", "--jobs", "2")
    for backend in ("jax", "torch"):
        out = _run(folder, backend, "run", "--spec-dir", "my_specs", "-n", "2")
        assert _passed(out), out
        _run(folder, backend, "save", "--spec-dir", "my_specs", "--out", "xb")
    for backend in ("jax", "torch"):
        out = _run(
            folder, backend, "load", "--spec-dir", "my_specs", "--cross-dir", "xb"
        )
        assert _passed(out), out
    # TensorFlow is not installed here: its loads are skipped with the command.
    out = _run(
        folder, "jax", "load", "--spec-dir", "my_specs", "--cross-dir", "xb", "-rs"
    )
    assert "no files saved on tensorflow" in out, out


def test_a_wrong_reference_fails(folder: pathlib.Path):
    (folder / "my_reference.py").write_text(WRONG_REFERENCE)
    _run(folder, "jax", "goldens", "--spec-dir", "my_specs")
    out = _fails(folder, "jax", "run", "--spec-dir", "my_specs")
    assert "scale/basic/forward/float32" in out and "exceeds" in out, out


def test_a_stale_golden_names_the_users_command(folder: pathlib.Path):
    _run(folder, "jax", "goldens", "--spec-dir", "my_specs")
    spec = folder / "my_specs" / "scale" / "spec.yaml"
    spec.write_text(spec.read_text().replace("seed: 1", "seed: 2"))
    out = _fails(folder, "jax", "run", "--spec-dir", "my_specs", "-k", "forward")
    assert "keras-mtl-conformance goldens --spec-dir" in out, out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
