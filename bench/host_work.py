"""What one call launches on torch: aten ops and host syncs, counted on any device.

On a GPU, torch waits for the device (a host sync) when a value is read back
(`.item()`, `.tolist()`, `nonzero`, a tensor of repeats in
`repeat_interleave`) and when a Python number is copied to the device, as
`keras.ops` does for every Python number it is given on torch
(`torch.as_tensor(x, device=...)`: a blocking copy). Each sync stalls the
host until the device has drained its queue, so the next kernels cannot be
queued while earlier ones run. The counts below are the same on the CPU, so
they are measured and tested there:

- `aten_ops`: aten operators the profiler records (forward and backward),
  those that `aten::_grouped_mm` calls itself left out (torch's CPU kernel
  is a loop of per-group matmuls);
- `reads`: `aten::_local_scalar_dense` (every `.item()`, `.tolist()` element
  and implicit read-back) and `aten::nonzero`, outside `aten::_grouped_mm`;
- `grouped_mm_reads`: those inside `aten::_grouped_mm`: its CPU kernel loops
  over the groups reading each offset on the host (no sync on a CPU); its
  CUDA kernel for bfloat16 on compute capability 9.x/10.x reads them on the
  device, and `keras_mtl.backend.grouped` takes no other CUDA case;
- `scalar_copies`: `torch.as_tensor` / `torch.tensor` calls on a Python
  number (the copies a GPU would wait for).

`python -m bench.host_work` prints the counts for `SparseMoE` and
`HierarchicalMoE` forward+backward on torch.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import Any

READS = ("aten::_local_scalar_dense", "aten::nonzero")


def count(fn: Callable[[], Any]) -> dict[str, Any]:
    """Runs `fn` once under the profiler; returns the counts described above."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    copies: collections.Counter[str] = collections.Counter()

    class ScalarCopies(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.as_tensor, torch.tensor) and isinstance(
                args[0] if args else None, (bool, int, float)
            ):
                copies[_caller()] += 1
            return func(*args, **(kwargs or {}))

    with profile(activities=[ProfilerActivity.CPU]) as prof, ScalarCopies():
        fn()
    ops: collections.Counter[str] = collections.Counter()
    grouped_reads = 0
    for event in prof.events():
        inside = _inside(event, "aten::_grouped_mm")
        if event.name in READS and inside:
            grouped_reads += 1
        elif event.name.startswith("aten::") and not inside:
            ops[event.name] += 1
    return {
        "aten_ops": sum(ops.values()),
        "reads": sum(ops[name] for name in READS),
        "grouped_mm_reads": grouped_reads,
        "scalar_copies": sum(copies.values()),
        "copy_sites": dict(copies),
        "ops": ops,
    }


def _inside(event: Any, name: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == name:
            return True
        parent = parent.cpu_parent
    return False


def _caller() -> str:
    import traceback

    for frame in reversed(traceback.extract_stack()[:-2]):
        if "keras_mtl" in frame.filename or "keras/src/layers" in frame.filename:
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "elsewhere"


def forward_backward(layer: Any, x: Any, **kwargs: Any) -> Callable[[], Any]:
    """One training forward and backward of `layer` on `x` (torch tensors)."""

    def step() -> Any:
        y = layer(x, training=True, **kwargs)
        loss = (y * y).sum()
        for extra in layer.losses:
            loss = loss + extra
        loss.backward()
        return y

    return step


def main() -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import torch

    from keras_mtl import layers

    if keras.backend.backend() != "torch":
        raise SystemExit("bench.host_work counts torch operators: KERAS_BACKEND=torch")
    torch.manual_seed(0)
    tokens, dim, hidden = 512, 64, 128
    x = torch.randn(tokens, dim, requires_grad=True)
    mask = torch.rand(tokens) > 0.1
    rows = []
    for dispatcher in ("index", "grouped", "einsum", "dense"):
        for cf in (1.25, None):
            layer = layers.SparseMoE(
                num_experts=8,
                expert_hidden_units=[hidden],
                group_size=256,
                capacity_factor=cf,
                dispatcher=dispatcher,
            )
            step = forward_backward(layer, x, mask=mask)
            step()  # build
            counts = count(step)
            rows.append((f"SparseMoE {dispatcher}, capacity_factor={cf}", counts))
    for dispatcher in ("index", "einsum"):
        layer = layers.HierarchicalMoE(
            num_experts=(4, 4),
            expert_hidden_units=hidden,
            group_size=256,
            dispatcher=dispatcher,
            second_policy_train="all",
        )
        step = forward_backward(layer, x, mask=mask)
        step()
        rows.append((f"HierarchicalMoE {dispatcher}", count(step)))
    print(
        f"torch {torch.__version__}, {tokens} tokens, d={dim}, hidden {hidden}, "
        "one masked training forward+backward\n"
    )
    print(
        "| call | aten ops | read-backs | Python numbers copied to the device "
        "| read-backs inside the CPU `_grouped_mm` |"
    )
    print("|---|---|---|---|---|")
    for name, c in rows:
        print(
            f"| {name} | {c['aten_ops']} | {c['reads']} | {c['scalar_copies']} "
            f"| {c['grouped_mm_reads']} |"
        )
    for name, c in rows:
        if c["copy_sites"]:
            print(f"\n{name}: copies at {c['copy_sites']}")


if __name__ == "__main__":
    main()
