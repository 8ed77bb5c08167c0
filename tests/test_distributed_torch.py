"""PyTorch `DistributedDataParallel` (gloo, 2 processes) with keras_mtl layers.

`examples/ddp_torch.py` trains MMoE, SparseMoE and DIEN on 2 ranks; here its
weights and statistics are checked against one process on the same global
batches, and the `.keras` file rank 0 saves is loaded in fresh processes.
`keras_mtl.backend.ddp_torch` is checked on its own as well.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import pathlib
import sys

import keras
import numpy as np
import pytest

from tests._helpers import only
from tests._processes import Process
from tests._processes import check
from tests._processes import free_ports
from tests._processes import run

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ddp_torch.py"


def _example():
    spec = importlib.util.spec_from_file_location("ddp_torch_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclass looks its module up while being built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets for a rank, on the loopback interface."""
    return {
        "KERAS_BACKEND": "torch",
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


@only("torch")
@pytest.mark.long(65)
def test_ddp_two_ranks_match_one_process_and_save_a_loadable_model(tmp_path):
    example = _example()
    (port,) = free_ports(1)
    ranks = [
        Process(
            f"rank {r}",
            [str(EXAMPLE), "--out", str(tmp_path), "--no-compare"],
            _rank_env(r, example.WORLD, port),
        )
        for r in range(example.WORLD)
    ]
    check(run(ranks, timeout=180))

    # The saved model loads in fresh processes while this one repeats the
    # training.
    loads = [
        Process(
            f"load on {backend}",
            [str(EXAMPLE), "--predict", str(tmp_path)],
            {"KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"},
        )
        for backend in ("torch", "jax")
    ]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        loading = pool.submit(run, loads, 180)
        checks = example.compare(tmp_path)
        finished = loading.result()

    failed = [c for c in checks if not c.ok]
    assert not failed, "\n".join(
        [f"tolerance {example.TOLERANCE:g}"]
        + [
            str(c) + ("" if c.equal else " (expected above the tolerance)")
            for c in failed
        ]
    )
    # Each config, rank and step against the halves; against the whole batch
    # equal for `exact`, above the tolerance for `batch_stats`.
    assert len([c for c in checks if c.what == "weights"]) == (
        len(example.CONFIGS) * example.WORLD * example.STEPS * 2
    )

    # DDP leaves the statistics per rank: they differ before the average.
    batch_stats = [
        example.load_rank(tmp_path, r, "batch_stats") for r in range(example.WORLD)
    ]
    paths = batch_stats[0]["statistic_paths"]
    local = [dict(zip(paths, r["local_statistics"], strict=True)) for r in batch_stats]
    for name in ("mmoe/experts/batch_norm_0/moving_mean", "sparse_moe/expert_load"):
        assert not np.allclose(local[0][name], local[1][name]), name
    # The ranks hold different numbers of real tokens: an unweighted mean of
    # the routing statistics would be another value.
    averaged = dict(zip(paths, batch_stats[0]["averaged_statistics"], strict=True))
    for name in ("sparse_moe/expert_load", "sparse_moe/dropped_fraction"):
        unweighted = (local[0][name] + local[1][name]) / 2
        assert not np.allclose(unweighted, averaged[name], rtol=1e-3), name

    check(finished)
    saved_outputs = np.load(tmp_path / "outputs_rank0.npy")
    for backend in ("torch", "jax"):
        outputs = np.load(tmp_path / f"outputs_{backend}.npy")
        diff = example.relative(outputs, saved_outputs)
        assert diff <= example.TOLERANCE, f"load on {backend}: outputs {diff:.2e}"
        # The file holds rank 0's statistics after the average.
        with np.load(tmp_path / f"statistics_{backend}.npz") as f:
            loaded = dict(f)
        assert sorted(loaded) == sorted(averaged), backend
        for name, value in averaged.items():
            np.testing.assert_allclose(
                loaded[name], value, rtol=0, atol=0, err_msg=f"{backend} {name}"
            )


@only("torch")
def test_average_across_ranks_on_one_rank_keeps_the_values(tmp_path):
    """With one rank the weighted mean is the value itself, bit for bit, in
    the variable's dtype (`float64` sums; the 2-rank weighting is checked
    by the DDP test, whose ranks hold different token counts)."""
    import torch.distributed as dist

    from keras_mtl import layers
    from keras_mtl.backend.ddp_torch import average_across_ranks

    moe = layers.SparseMoE(4, [8], name="moe")
    moe.build((None, 6))
    moe.expert_load.assign(np.array([0.1, 0.2, 0.3, 1 / 3], "float32"))
    moe.dropped_fraction.assign(np.float32(0.7))
    before = [keras.ops.convert_to_numpy(v.value) for v in moe.non_trainable_weights]
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        average_across_ranks(moe.non_trainable_weights, weight=3.0)
        average_across_ranks([])
    finally:
        dist.destroy_process_group()
    for v, value in zip(moe.non_trainable_weights, before, strict=True):
        assert v.dtype == "float32"
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), value)


@only("torch")
def test_non_trainable_weights_finds_each_statistic_once():
    import torch

    from keras_mtl import layers
    from keras_mtl.backend.ddp_torch import average_across_ranks
    from keras_mtl.backend.ddp_torch import non_trainable_weights

    moe = layers.SparseMoE(4, [8], name="moe")
    moe.build((None, 6))
    mlp = layers.MLP(
        [5, 3], enable_batch_normalization=True, use_learnable_weight_norm=False
    )
    mlp.build((None, 6))
    dense = layers.Dense(3, activation="relu", inactive_relu_monitor=True)
    dense.build((None, 6))
    # `moe` twice: a layer shared by two parts of a module.
    net = torch.nn.ModuleList([moe, torch.nn.Sequential(mlp, dense), moe])
    found = non_trainable_weights(net)
    expected = (
        moe.non_trainable_weights
        + mlp.non_trainable_weights
        + dense.non_trainable_weights
    )
    assert [id(v) for v in found] == [id(v) for v in expected]
    names = [v.path.split("/")[-1] for v in found]
    assert names.count("moving_mean") == 2  # batch_norm_in, batch_norm_0
    assert {"expert_load", "dropped_fraction", "inactive_relu_moving_avg"} <= set(names)
    assert "kernel_norm" in names  # frozen weight-norm scales
    # Neither a trainable weight nor the seed generator's state.
    assert not any(v.trainable for v in found)
    assert all(keras.backend.is_float_dtype(v.dtype) for v in found)
    with pytest.raises(ValueError, match="weight"):
        average_across_ranks(found, weight=-1.0)
