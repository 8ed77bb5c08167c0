"""Cross-backend `.keras` exchange: save on one backend, load on another.

    KERAS_BACKEND=jax keras-mtl-conformance save --out artifacts/keras
    KERAS_BACKEND=torch keras-mtl-conformance load --cross-dir artifacts/keras

`save` writes, for every case with the `cross_backend` check,
`<out>/<backend>/<layer>/<case>.keras` and `<case>.npz` (the saver's weights
and outputs). The `cross_backend` check loads each file on the current
backend and requires identical weights and matching outputs; a saver with
no folder under the cross directory (a backend that is not installed) is
skipped with the command to run.

The conformance run writes the same files as a by-product of its `keras_file`
checks when given `--save-keras-dir` (that check already builds, saves and
calls each model), which is how `nox -t conformance` gets them without a
second pass over every spec.
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import sys
from typing import Any

import numpy as np

from keras_mtl_conformance import compare
from keras_mtl_conformance import spec as spec_lib


def _paths(root: str | pathlib.Path, backend: str, case: spec_lib.Case):
    base = pathlib.Path(root) / backend / case.spec.name
    return base / f"{case.id}.keras", base / f"{case.id}.npz"


def model_file(root: str | pathlib.Path, backend: str, case: spec_lib.Case):
    """Where `backend`'s `.keras` file for `case` goes (its folder created)."""
    model_path, _ = _paths(root, backend, case)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    return model_path


def write_data(
    root: str | pathlib.Path,
    backend: str,
    case: spec_lib.Case,
    weights: dict[str, np.ndarray],
    outputs: Any,
) -> None:
    """Store the saver's weights (as saved) and outputs beside its `.keras` file."""
    from keras_mtl_conformance import harness

    arrays = {f"weight:{k}": v for k, v in weights.items()}
    arrays.update(
        {
            f"output:{i}": harness.to_numpy(o)
            for i, o in enumerate(harness.flatten(outputs))
        }
    )
    np.savez(_paths(root, backend, case)[1], **arrays)


def save(out: pathlib.Path, spec_dirs: list[str] | None) -> int:
    import keras

    from keras_mtl_conformance import harness

    gc.freeze()  # the backend's objects: the collector's full passes skip them
    backend = keras.backend.backend()
    count = 0
    for spec in spec_lib.discover(spec_dirs):
        for case in spec.cases:
            if "cross_backend" not in case.checks:
                continue
            keras.utils.clear_session(free_memory=False)
            model = harness.save_model(case, model_file(out, backend, case))
            # The weights as saved: a training call may update state (BN).
            weights = harness.weights_of(model)
            outputs = harness.run_model(model, case)
            write_data(out, backend, case, weights, outputs)
            count += 1
    print(f"{backend}: saved {count} models under {out / backend}")
    return 0


def check_load(
    case: spec_lib.Case,
    saver: str,
    root: str,
    expected: dict[str, Any],
    tol: spec_lib.Tolerance,
) -> float:
    import keras

    from keras_mtl_conformance import harness

    model_path, data_path = _paths(root, saver, case)
    if not model_path.exists():
        raise AssertionError(
            f"{model_path} is missing: run `KERAS_BACKEND={saver} "
            f"keras-mtl-conformance save --out {root}{case.spec.spec_dir_option}` "
            "first"
        )
    saved = dict(np.load(data_path))
    # Import the layer's module so its class is registered before loading.
    harness.layer_class(case.spec)
    model = keras.saving.load_model(model_path)
    saved_weights = {
        k.removeprefix("weight:"): v
        for k, v in saved.items()
        if k.startswith("weight:")
    }
    harness.assert_same_weights(
        harness.weights_of(model), saved_weights, f"loaded from {saver}"
    )
    outputs = harness.run_model(model, case)
    flat = harness.flatten(outputs)
    worst = 0.0
    for i, out in enumerate(flat):
        got = harness.to_numpy(out)
        worst = max(
            worst,
            compare.assert_close(
                f"output {i} vs {saver}", got, saved[f"output:{i}"], tol
            ),
        )
        worst = max(
            worst,
            compare.assert_close(
                f"output {i} vs golden", got, expected["outputs"][i], tol
            ),
        )
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cross-backend .keras files")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("save", help="save every cross_backend case")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("artifacts/keras"))
    p.add_argument("--spec-dir", action="append", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    return save(args.out, args.spec_dir)


if __name__ == "__main__":
    sys.exit(main())
