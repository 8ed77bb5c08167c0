"""Expert parallelism: the layout map, and the 8-device JAX check."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import keras
import pytest

from keras_mtl.distribution import expert_parallel_layout_map
from keras_mtl.layers import HierarchicalMoE
from keras_mtl.layers import SparseMoE
from tests._helpers import only
from tests._processes import xla_cpu_devices

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _mesh():
    devices = [f"cpu:{i}" for i in range(8)]
    return keras.distribution.DeviceMesh((2, 4), ("batch", "expert"), devices)


def test_layout_map_shards_only_the_expert_axis():
    layout_map = expert_parallel_layout_map(_mesh(), "expert")
    sparse = SparseMoE(8, [4], name="s")
    sparse.build((None, 6))
    hier = HierarchicalMoE((4, 2), 5, use_bias=True, name="h")
    hier.build((None, 6))
    layouts = {}
    for v in sparse.weights + hier.weights:
        layout = layout_map[v.path]
        layouts[v.path] = None if layout is None else tuple(layout.axes)
        if layout is not None:
            assert len(layout.axes) == len(v.shape), v.path
    assert layouts["s/expert_kernel_0"] == ("expert", None, None)
    assert layouts["s/expert_bias_1"] == ("expert", None)
    assert layouts["s/router_kernel"] is None
    assert layouts["s/expert_load"] is None
    assert layouts["h/expert_kernel_in"] == ("expert", None, None, None)
    assert layouts["h/expert_bias_out"] == ("expert", None, None)
    assert layouts["h/inner_gate_kernel"] == ("expert", None, None)
    assert layouts["h/outer_gate_kernel"] is None


def test_layout_map_unknown_axis():
    with pytest.raises(ValueError, match=r"expert_axis='model'"):
        expert_parallel_layout_map(_mesh(), "model")


@only("jax")
@pytest.mark.long(15)
def test_eight_device_expert_parallel_matches_one_device():
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_cpu_devices(8),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "expert_parallel.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "devices=8" in proc.stdout
    assert "spec=P('expert', None, None)" in proc.stdout
    assert proc.stdout.strip().endswith("OK")
