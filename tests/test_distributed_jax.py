"""JAX over two processes with `keras.distribution`: data parallel and expert
parallel (`examples/multi_process_jax.py`) against one device."""

from __future__ import annotations

import re

import pytest

from tests import _processes
from tests._helpers import only

SCRIPT = "examples/multi_process_jax.py"
CONFIGS = ("data_parallel", "expert_parallel")
# What each process compares, with the tolerance of the example.
QUANTITIES = {
    "outputs": 2e-5,
    "loss": 2e-5,
    "grads": 2e-5,
    "trained weights": 2e-5,
    "grads (relative)": 1e-3,
    "weight updates (relative)": 1e-3,
}


@only("jax")
@pytest.mark.long(50)
def test_two_processes_match_one_device(tmp_path):
    """A reference process with one device and two processes with 4 CPU
    devices each (one 8-device runtime) run side by side; each of the two
    compares both configurations with the reference (`QUANTITIES`)."""
    (port,) = _processes.free_ports(1)
    reference = str(tmp_path / "reference.npz")
    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    worker_args = [
        SCRIPT,
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
        "--reference",
        reference,
        "--timeout",
        "240",
    ]
    four = {**env, "XLA_FLAGS": _processes.xla_cpu_devices(4)}
    finished = _processes.run(
        [
            _processes.Process(
                "reference (1 device)",
                [SCRIPT, "--write-reference", reference],
                {**env, "XLA_FLAGS": _processes.xla_cpu_devices(1)},
            ),
            *(
                _processes.Process(
                    f"process {i}", [*worker_args, "--process-id", str(i)], four
                )
                for i in range(2)
            ),
        ],
        timeout=300,
    )
    _processes.check(finished)
    reference_output, *workers = (f.output for f in finished)
    assert "reference devices=1" in reference_output
    for i, output in enumerate(workers):
        where = f"process {i}"
        assert f"{where} devices local=4 global=8 processes=2" in output, output
        # Each process feeds its half of a batch (data parallel), or the whole
        # batch (every batch row of the expert mesh spans both processes).
        half = "0-7" if i == 0 else "8-15"
        assert f"data_parallel/data rows fed per global batch of 16: {half}" in output
        assert "expert_parallel/data rows fed per global batch of 16: 0-15" in output
        # The experts are split between the processes, not replicated.
        assert (
            "sparse_moe expert_kernel_0 shape=(8, 12, 16) spec=P('expert', None, "
            "None) axis 0 on process 0: 0-3, process 1: 4-7" in output
        ), output
        assert (
            "hierarchical_moe expert_kernel_in shape=(4, 2, 12, 16) spec=P('expert',"
            " None, None, None) axis 0 on process 0: 0-1, process 1: 2-3" in output
        ), output
        assert "initial weights equal: True" in output, output
        for config in CONFIGS:
            for quantity, tolerance in QUANTITIES.items():
                pattern = rf"max \|single - {config}\| {re.escape(quantity)}: (\S+) ok"
                match = re.search(pattern, output)
                assert match, f"{where} {config} {quantity}:\n{output[-3000:]}"
                assert float(match[1]) <= tolerance, f"{where} {config} {quantity}"
        assert f"{where} OK [" in output, output
