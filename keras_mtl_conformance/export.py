"""The `export` check: a case's layer, in a functional model, exported for
serving and run outside Keras.

Formats per backend (`FORMATS`):
- `onnx`: `model.export(format="onnx")` (tf2onnx on TensorFlow, jax2onnx on
  JAX, the TorchScript exporter on torch when the batch is dynamic), run in
  onnxruntime on the CPU;
- `tf_saved_model` (TensorFlow, JAX): `model.export(format="tf_saved_model")`,
  loaded with `tf.saved_model.load` in another Python process, which never
  imports keras or keras_mtl (`saved_model_server`);
- `torch_export` (torch): `torch.export.export` of the model, run through the
  exported program.

The batch axis is dynamic unless the spec's `export` entry gives a
`static_batch` reason; the exported model is then traced at the case's
batch size.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import keras
import numpy as np

from keras_mtl_conformance import harness
from keras_mtl_conformance import spec as spec_lib

FORMATS = {
    "tensorflow": ("onnx", "tf_saved_model"),
    "jax": ("onnx", "tf_saved_model"),
    "torch": ("onnx", "torch_export"),
}
# The modules each (backend, format) needs; all come with `keras-mtl[export]`.
_NEEDS = {
    ("tensorflow", "onnx"): ("onnx", "onnxruntime", "tf2onnx"),
    ("jax", "onnx"): ("onnx", "onnxruntime", "jax2onnx"),
    ("torch", "onnx"): ("onnx", "onnxruntime"),
    ("tensorflow", "tf_saved_model"): (),
    ("jax", "tf_saved_model"): ("tensorflow",),
    ("torch", "torch_export"): (),
}


def missing_modules(backend: str, fmt: str) -> list[str]:
    return [m for m in _NEEDS[(backend, fmt)] if importlib.util.find_spec(m) is None]


def model_for_export(entry: spec_lib.ExportCase) -> keras.Model:
    """The case's layer with its spec weights, in a functional model whose
    batch axis is `None` unless the entry fixes it, called once."""
    case = entry.case
    model = harness.functional_model(
        case, harness.ready_layer(case), static_batch=bool(entry.static_batch)
    )
    harness.run_model(model, case)  # `model.export` needs a model called once
    return model


def input_signature(model: keras.Model) -> list[Any]:
    """`model.export`'s signature, the model's own inputs: without one, Keras
    makes the batch axis `None` even where the model fixes it."""
    specs = [
        keras.InputSpec(shape=x.shape, dtype=x.dtype, name=x.name) for x in model.inputs
    ]
    return [specs] if len(specs) > 1 else specs


def run_exported(
    fmt: str,
    model: keras.Model,
    entry: spec_lib.ExportCase,
    arrays: list[np.ndarray],
    tmp_path: pathlib.Path,
) -> list[np.ndarray]:
    """Exports `model` once in `fmt` and returns its outputs on `arrays`."""
    if fmt == "onnx":
        return _run_onnx(model, entry, arrays, tmp_path / "model.onnx")
    if fmt == "tf_saved_model":
        path = tmp_path / "saved_model"
        model.export(
            str(path),
            format="tf_saved_model",
            input_signature=input_signature(model),
            verbose=False,
        )
        return _saved_model_server().run(path, arrays, tmp_path)
    if fmt == "torch_export":
        return _run_torch_export(model, entry, arrays)
    raise ValueError(f"unknown export format {fmt!r}")


def _run_onnx(
    model: keras.Model,
    entry: spec_lib.ExportCase,
    arrays: list[np.ndarray],
    path: pathlib.Path,
) -> list[np.ndarray]:
    import onnxruntime

    model.export(
        str(path), format="onnx", input_signature=input_signature(model), verbose=False
    )
    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    spec_names = list(entry.case.inputs)
    if len(names) != len(arrays):
        raise AssertionError(
            f"the ONNX model takes {len(names)} inputs {names}, the case has "
            f"{len(arrays)} {spec_names}"
        )
    # Exporters keep the `keras.Input` names; a renamed input is fed by order.
    if sorted(names) == sorted(spec_names):
        feed = dict(zip(spec_names, arrays, strict=True))
    else:
        feed = dict(zip(names, arrays, strict=True))
    return [np.asarray(o) for o in session.run(None, feed)]


def _run_torch_export(
    model: keras.Model, entry: spec_lib.ExportCase, arrays: list[np.ndarray]
) -> list[np.ndarray]:
    import torch

    # On the device Keras places tensors on, as the model's weights are.
    tensors = [keras.ops.convert_to_tensor(a) for a in arrays]
    args = (tensors,) if len(tensors) > 1 else tuple(tensors)
    batch = arrays[0].shape[0]
    dynamic = None
    # torch.export specializes an axis of size 1, so a batch of one is
    # exported as it is.
    if not entry.static_batch and batch > 1:
        dim = torch.export.Dim("batch")
        axes = [{0: dim} for _ in tensors]
        # `Model.forward(*args)`: the positional arguments are one tuple.
        dynamic = ((axes,),) if len(tensors) > 1 else (tuple(axes),)
    program = torch.export.export(model, args, dynamic_shapes=dynamic, strict=False)
    outputs = program.module()(*args)
    return [o.detach().cpu().numpy() for o in keras.tree.flatten(outputs)]


class _SavedModelServer:
    """One Python process per pytest worker that loads SavedModels and runs
    their `serve` endpoint; requests and answers are JSON lines, tensors
    travel in `.npz` files."""

    def __init__(self) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keras_mtl_conformance.saved_model_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        atexit.register(self.close)

    def run(
        self, path: pathlib.Path, arrays: list[np.ndarray], tmp_path: pathlib.Path
    ) -> list[np.ndarray]:
        inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
        np.savez(inputs, *arrays)
        request = {"model": str(path), "inputs": str(inputs), "outputs": str(outputs)}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(
                f"the SavedModel loader process exited (code {self.proc.poll()})"
            )
        answer = json.loads(line)
        if answer.get("error"):
            raise AssertionError(f"tf.saved_model.load / serve: {answer['error']}")
        with np.load(outputs) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_SERVER: list[_SavedModelServer] = []


def _saved_model_server() -> _SavedModelServer:
    if not _SERVER or _SERVER[0].proc.poll() is not None:
        _SERVER[:] = [_SavedModelServer()]
    return _SERVER[0]
