"""The conformance runner itself: a wrong golden or a stale xfail fails the run."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from keras_mtl_conformance import report
from keras_mtl_conformance import spec as spec_lib

# The runner's logic is shared by all backends (each backend's adapters run
# in its conformance session).
pytestmark = pytest.mark.backend_independent

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cpu_env() -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}


def _run(
    *args: str, tmp_path: pathlib.Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = _cpu_env()
    env.update(extra_env or {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "keras_mtl_conformance",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--report-dir={tmp_path / 'report'}",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _copy_spec(tmp_path: pathlib.Path, name: str = "add_bias") -> pathlib.Path:
    specs = tmp_path / "specs"
    # A user's flat layout (`<dir>/<layer>/spec.yaml`).
    shutil.copytree(spec_lib.find(name).path.parent, specs / name)
    return specs


def test_runner_passes_on_intact_goldens(tmp_path):
    specs = _copy_spec(tmp_path)
    proc = _run(f"--spec-dir={specs}", "-k", "rank2 and forward", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    assert (tmp_path / "report" / "results.json").exists()
    assert "add_bias" in (tmp_path / "report" / "matrix.md").read_text()


@pytest.mark.long(30)
def test_parallel_workers_report_every_result(tmp_path):
    # Under pytest-xdist the workers run the checks and the controller writes
    # results.json: nothing may be lost on the way.
    specs = _copy_spec(tmp_path)
    proc = _run(f"--spec-dir={specs}", "-n", "2", "-k", "rank2", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    serial = _run(f"--spec-dir={specs}", "-k", "rank2", tmp_path=tmp_path / "serial")
    assert serial.returncode == 0, serial.stdout + serial.stderr
    ids = [
        sorted(r["id"] for r in json.loads(p.read_text())["results"])
        for p in (
            tmp_path / "report" / "results.json",
            tmp_path / "serial" / "report" / "results.json",
        )
    ]
    assert ids[0] == ids[1] and len(ids[0]) > 3, ids
    assert "add_bias" in (tmp_path / "report" / "matrix.md").read_text()


@pytest.mark.long(20)
def test_keras_file_checks_save_what_cross_backend_loads(tmp_path):
    # nox keeps the keras_file checks' files instead of a separate save pass:
    # they must hold what `keras_mtl_conformance.xbackend save` writes, and load.
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    specs = _copy_spec(tmp_path)
    kept, saved = tmp_path / "kept", tmp_path / "saved"
    proc = _run(
        f"--spec-dir={specs}",
        f"--save-keras-dir={kept}",
        "-k",
        "rank2 and keras_file",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cli = subprocess.run(
        [sys.executable, "-m", "keras_mtl_conformance.xbackend", "save"]
        + [f"--out={saved}", f"--spec-dir={specs}"],
        cwd=ROOT,
        env=_cpu_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    case = pathlib.Path(backend, "add_bias", "rank2")
    assert (kept / case.with_suffix(".keras")).exists()
    a = np.load(kept / case.with_suffix(".npz"))
    b = np.load(saved / case.with_suffix(".npz"))
    assert sorted(a) == sorted(b) and any(k.startswith("output:") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    proc = _run(
        f"--spec-dir={specs}",
        f"--cross-dir={kept}",
        "-k",
        f"rank2 and cross_backend and from_{backend}",
        tmp_path=tmp_path / "load",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_a_corrupted_golden_number_fails_the_suite(tmp_path):
    specs = _copy_spec(tmp_path)
    golden_path = specs / "add_bias" / "golden.yaml"
    golden = yaml.safe_load(golden_path.read_text())
    outputs = golden["cases"]["rank2"]["forward"]["float32"]["outputs"]
    outputs[0][1][2] += 1e-3  # one number, well above the float32 tolerance
    golden_path.write_text(yaml.safe_dump(golden))
    proc = _run(f"--spec-dir={specs}", "-k", "rank2 and forward", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert "add_bias/rank2/forward/float32" in proc.stdout
    assert "exceeds" in proc.stdout


def test_a_stale_spec_fails_with_the_command_to_run(tmp_path):
    specs = _copy_spec(tmp_path)
    spec_path = specs / "add_bias" / "spec.yaml"
    spec_path.write_text(spec_path.read_text().replace("seed: 201", "seed: 299"))
    proc = _run(f"--spec-dir={specs}", "-k", "rank2 and forward", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert f"--spec-dir {specs} --layer add_bias" in proc.stdout


def test_expected_failures_are_strict(tmp_path):
    specs = _copy_spec(tmp_path)
    expectations = tmp_path / "exp.yaml"
    expectations.write_text(
        yaml.safe_dump(
            [
                {
                    "match": "add_bias/rank2/forward/float32$",
                    "status": "xfail",
                    "reason": "deliberately wrong: this check passes",
                },
                {
                    "match": "no_such_layer/",
                    "status": "xfail",
                    "reason": "matches nothing",
                },
            ]
        )
    )
    proc = _run(
        f"--spec-dir={specs}",
        f"--expectations={expectations}",
        "-k",
        "rank2 and forward",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 1
    assert "XPASS(strict)" in proc.stdout
    assert "'no_such_layer/'" in proc.stdout and "matched no test" in proc.stdout


def test_expectations_need_a_reason(tmp_path):
    expectations = tmp_path / "exp.yaml"
    expectations.write_text(yaml.safe_dump([{"match": "x", "status": "xfail"}]))
    proc = _run(f"--expectations={expectations}", "-k", "nothing", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "reason is required" in proc.stdout + proc.stderr


USER_LAYER = '''
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="user_pkg")
class MaskedMean(keras.layers.Layer):
    """Mean over axis 1 of the unmasked steps, times a learned scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],))

    def call(self, x, mask=None):
        m = ops.cast(ops.expand_dims(mask, -1), x.dtype)
        total = ops.sum(x * m, axis=1)
        count = ops.maximum(ops.sum(m, axis=1), 1.0)
        return total / count * self.scale
'''

USER_REFERENCE = """
import numpy as np


def masked_mean(inputs, weights, config, training, mask):
    (x,) = inputs
    m = mask[..., None].astype(np.float64)
    return {"outputs": [(x * m).sum(1) / np.maximum(m.sum(1), 1.0) * weights["scale"]]}
"""

USER_SPEC = """\
schema_version: 1
layer: user_pkg.layers.MaskedMean
reference: user_pkg.reference:masked_mean
description: A user's own layer with a mask passed as a keyword argument.
cases:
  - id: padded
    config: {}
    checks: [config_roundtrip, build, symbolic, forward, compiled, grad, keras_file]
    inputs:
      x: {shape: [2, 3, 2], generator: {kind: normal, seed: 1}}
      mask: {shape: [2, 3], dtype: bool, kwarg: mask,
             data: [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]}
    weights:
      scale: {shape: [2], data: [1.0, 2.0]}
"""


def test_user_spec_directory_with_a_masked_layer(tmp_path):
    pkg = tmp_path / "src" / "user_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text(USER_LAYER)
    (pkg / "reference.py").write_text(USER_REFERENCE)
    spec_dir = tmp_path / "user_specs" / "masked_mean"
    spec_dir.mkdir(parents=True)
    (spec_dir / "spec.yaml").write_text(USER_SPEC)
    env_path = f"{tmp_path / 'src'}{os.pathsep}{ROOT}"
    gen = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_mtl_conformance.goldens",
            f"--spec-dir={tmp_path / 'user_specs'}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": env_path},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "masked_mean" in gen.stdout
    proc = _run(
        f"--spec-dir={tmp_path / 'user_specs'}",
        tmp_path=tmp_path,
        extra_env={"PYTHONPATH": env_path},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 9 checks, and the export of the first case in each of the backend's two
    # formats; a format whose exporter is not installed is skipped.
    passed = int(re.search(r"(\d+) passed", proc.stdout).group(1))
    assert passed >= 10 and "failed" not in proc.stdout, proc.stdout


def test_a_false_stochastic_claim_fails(tmp_path):
    specs = _copy_spec(tmp_path)
    spec_path = specs / "add_bias" / "spec.yaml"
    spec_path.write_text(
        spec_path.read_text()
        + """  - id: claims_noise
    config: {}
    checks: [stochastic]
    stochastic: {properties: [inference_deterministic, varies_in_training]}
    inputs:
      x: {shape: [1, 2], data: [[1.0, 2.0]]}
    weights:
      bias: {shape: [2], data: [0.0, 0.0]}
"""
    )
    subprocess.run(
        [sys.executable, "-m", "keras_mtl_conformance.goldens", f"--spec-dir={specs}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    proc = _run(f"--spec-dir={specs}", "-k", "claims_noise", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "the noise does not advance" in proc.stdout


def test_terminal_matrix_header_keeps_a_space_after_short_layer_names():
    env = {"backend": "jax", "device": "cpu", "label": "jax-cpu"}
    results = [
        {"layer": "mlp", "check": "forward", "policy": "float32", "status": "passed"}
    ]
    header = report.summary_lines(env, results)[0]
    assert header.split() == ["layer", report._column(env)], header


def test_matrix_gives_export_checks_a_column_per_environment():
    env = {
        "backend": "torch", "device": "cpu", "label": "torch-cpu", "keras": "3",
        "backend_version": "2", "device_name": "cpu", "seconds": 1,
    }  # fmt: skip
    results = [
        {"layer": "mlp", "check": "forward", "policy": "float32", "status": "passed"},
        {"layer": "mlp", "check": "export", "policy": "onnx", "status": "failed",
         "id": "mlp/a/export/onnx", "message": "x"},
    ]  # fmt: skip
    text = report.render([{"env": env, "results": results}])
    assert "| layer | torch-cpu | torch-cpu export |" in text
    assert "| mlp | ✅ 1/1 | ❌ 1/1 failed |" in text


def test_jax_jitted_checks_compile_with_the_fusion_emitters(monkeypatch):
    # The noxfile turns XLA's CPU fusion emitters off for eager calls
    # (`XLA_FLAGS`); the compiled and grad checks turn them back on.
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("JAX compile options")
    from keras_mtl_conformance.adapters import jax_adapter

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/x")
    assert jax_adapter.compiler_options() is None
    monkeypatch.setenv(
        "XLA_FLAGS", "--xla_dump_to=/x --xla_cpu_use_fusion_emitters=false"
    )
    assert jax_adapter.compiler_options() == {"xla_cpu_use_fusion_emitters": True}
    jitted = []
    real_jit = jax_adapter._jit
    monkeypatch.setattr(
        jax_adapter, "_jit", lambda fn: jitted.append(fn) or real_jit(fn)
    )
    value, grads = jax_adapter.value_and_gradients(
        lambda x: (x * x).sum(), [np.ones(3, "float32")], compiled=True
    )
    assert (value, grads[0].tolist()) == (3.0, [2.0, 2.0, 2.0])
    assert len(jitted) == 1


def test_jax_jitted_checks_compile_with_every_optimization():
    # The noxfile disables most XLA optimizations for the eager calls; the
    # compiled and grad checks must still compile with them.
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("JAX compile options")
    import jax

    from keras_mtl_conformance.adapters import jax_adapter

    flag = "jax_disable_most_optimizations"
    before = jax.config.values[flag]
    jax.config.update(flag, True)
    seen = []

    def fn(x):
        seen.append(jax.config.values[flag])  # runs while tracing
        return (x * x).sum()

    try:
        for compiled in (True, False):
            jax_adapter.value_and_gradients(fn, [np.ones(3, "float32")], compiled)
        assert seen == [False, True]
        assert jax.config.values[flag] is True  # restored
    finally:
        jax.config.update(flag, before)
