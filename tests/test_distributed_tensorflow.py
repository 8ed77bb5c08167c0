"""`model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` on two local
workers gives the one-worker weights and losses
(`examples/multi_worker_tensorflow.py`)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from tests import _processes
from tests._helpers import only

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "multi_worker_tensorflow.py"
WORKERS = 2


def _first_different_step(example, single: dict, worker: dict) -> str:
    a, b = worker["steps"], single["steps"]
    if a.shape != b.shape:
        return f"{len(a)} steps, one worker {len(b)}"
    bad = np.flatnonzero(np.abs(a - b) > example.ATOL + example.RTOL * np.abs(b))
    if not len(bad):
        return "all step losses agree"
    step = int(bad[0])
    return f"step {step} loss {a[step]:.7f}, one worker {b[step]:.7f}"


@only("tensorflow")
@pytest.mark.long(25)
def test_two_workers_match_one_worker(tmp_path, monkeypatch):
    ports = _processes.free_ports(WORKERS)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = [
        _processes.Process(
            f"worker {i}",
            [str(SCRIPT), "--out", str(tmp_path / f"worker{i}.npz")],
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
                "KERAS_BACKEND": "tensorflow",
                "CUDA_VISIBLE_DEVICES": "",
                "TF_CPP_MIN_LOG_LEVEL": "2",
            },
        )
        for i in range(WORKERS)
    ]
    finished = _processes.run(processes, timeout=240)
    _processes.check(finished)
    for f in finished:
        assert f"{f.name}: {WORKERS} replicas" in f.output, f.output[-2000:]
        # Printed by the script's own check of the distributed dataset.
        assert f"{f.name}: batch k holds rows" in f.output, f.output[-2000:]

    # The reference runs here: TensorFlow is already imported in this process.
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import multi_worker_tensorflow as example

    single = example.train(None, "one worker")
    problems = []
    for i in range(WORKERS):
        worker = example.load(str(tmp_path / f"worker{i}.npz"))
        diffs = example.differences(single, worker)
        print(f"worker {i}:")
        for key, (abs_max, rel_max, _) in diffs.items():
            print(f"  {key}: max abs {abs_max:.2e} max rel {rel_max:.2e}")
        bad = [key for key, (_, _, ok) in diffs.items() if not ok]
        if bad:
            where = _first_different_step(example, single, worker)
            problems.append(f"worker {i} ({where}): {', '.join(bad)}")
    assert not problems, "\n".join(problems)
