"""Random weights and inputs, one backend's layers against the other two.

    python -m keras_mtl_conformance.random_cross make  --out=DIR [--seed=S] [--count=N]
    python -m keras_mtl_conformance.random_cross check --out=DIR

`make` (on any backend) draws `N` (spec case, seed) samples: a layer
configuration from a conformance spec case, new random values for its
generated inputs (same generator, new seed; inline data such as masks kept),
and new random weights: every trainable float weight drawn from a normal
distribution (non-trainable state keeps its initial value, e.g. batch-norm
variances). It builds each layer, runs it at inference and writes the
configuration, the weights by path and the outputs to `DIR/<backend>.npz`.
`check` (on another backend) rebuilds the same layers, assigns those
weights by path, runs them and compares its outputs with the maker's:
`max |ours - theirs| <= RTOL * max |theirs|` (plus `ATOL` for outputs that
are all near zero), failing with the sample, layer, case and error.

The unit tests run a small sample (`tests/test_random_cross.py`); `nox -s
random_cross` runs a larger one (`-- --count=400`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys
from typing import Any

import numpy as np

RTOL = 1e-4
ATOL = 1e-6
WEIGHT_SCALE = 0.5


def _samples(seed: int, count: int) -> list[tuple[str, str, int]]:
    """`(spec name, case id, sample seed)`, the same on every backend."""
    from keras_mtl_conformance import spec as spec_lib

    cases = [
        (spec.name, case.id)
        for spec in spec_lib.discover()
        for case in spec.cases
        if "stochastic" not in case.checks
    ]
    rng = random.Random(seed)
    return [(*rng.choice(cases), rng.randrange(2**31)) for _ in range(count)]


def _case(spec_name: str, case_id: str) -> Any:
    from keras_mtl_conformance import spec as spec_lib

    spec = spec_lib.find(spec_name)
    return next(c for c in spec.cases if c.id == case_id)


def _inputs(case: Any, seed: int) -> dict[str, np.ndarray]:
    """The case's inputs with every generator re-seeded (same distribution,
    new values); inline data (masks, ids) kept."""
    from keras_mtl_conformance import spec as spec_lib

    arrays = case.input_arrays()
    for i, (name, tensor) in enumerate(case.inputs.items()):
        if "generator" in tensor:
            generator = {**tensor["generator"], "seed": (seed + i) % 2**31}
            arrays[name] = spec_lib.materialize({**tensor, "generator": generator})
    return arrays


def _run(
    case: Any, arrays: dict[str, np.ndarray], weights: Any
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Builds the case's layer, sets `weights` (a dict by path, or a seed to
    draw them from) and returns its inference outputs and its weights."""
    from keras_mtl_conformance import harness

    layer = harness.make_layer(case)
    harness.build(layer, case)
    variables = harness.variables_by_path(layer)
    if isinstance(weights, int):
        rng = np.random.RandomState(weights)
        for path in sorted(variables):
            v = variables[path]
            if v.trainable and "float" in str(v.dtype):
                v.assign(WEIGHT_SCALE * rng.standard_normal(v.shape).astype(v.dtype))
    else:
        for path, value in weights.items():
            variables[path].assign(value.astype(variables[path].dtype))
    inputs = harness.concrete_inputs(case, arrays)
    first, kwargs = harness.call_args(layer, case, inputs)
    if "training" in kwargs:
        kwargs["training"] = False
    outputs = harness.flatten(layer(first, **kwargs))
    state = {p: harness.to_numpy(v) for p, v in variables.items()}
    return [harness.to_numpy(o) for o in outputs], state


def make(out: pathlib.Path, seed: int, count: int) -> pathlib.Path:
    import keras

    saved: dict[str, Any] = {}
    samples = _samples(seed, count)
    for i, (spec_name, case_id, sample_seed) in enumerate(samples):
        case = _case(spec_name, case_id)
        arrays = _inputs(case, sample_seed)
        outputs, state = _run(case, arrays, sample_seed)
        for name, value in arrays.items():
            saved[f"{i}/input/{name}"] = value
        for path, value in state.items():
            saved[f"{i}/weight/{path}"] = value
        for j, value in enumerate(outputs):
            saved[f"{i}/output/{j}"] = value
    saved["samples"] = np.asarray(json.dumps(samples))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{keras.backend.backend()}.npz"
    np.savez(path, **saved)
    return path


def check(out: pathlib.Path) -> list[str]:
    """Errors against every other backend's file in `out` (empty: all agree)."""
    import keras

    ours = keras.backend.backend()
    errors = []
    for path in sorted(out.glob("*.npz")):
        if path.stem == ours:
            continue
        data = np.load(path)
        samples = json.loads(str(data["samples"]))
        for i, (spec_name, case_id, _) in enumerate(samples):
            case = _case(spec_name, case_id)
            inputs, weights = _part(data, i, "input"), _part(data, i, "weight")
            outputs, _ = _run(case, inputs, weights)
            theirs = _part(data, i, "output")
            for j, got in enumerate(outputs):
                want = theirs[str(j)]
                same_shape = got.shape == want.shape
                scale = float(np.max(np.abs(want))) if want.size else 0.0
                err = (
                    float(np.max(np.abs(got - want)))
                    if same_shape and want.size
                    else 0.0
                )
                # NaN anywhere fails (a comparison with NaN is false).
                if not same_shape or not err <= RTOL * scale + ATOL:
                    errors.append(
                        f"sample {i} {spec_name}/{case_id} output {j}: made on "
                        f"{path.stem}, run on {ours}: max error {err:.3g} at "
                        f"output scale {scale:.3g} (shapes {want.shape}, {got.shape})"
                    )
    return errors


def _part(data: Any, i: int, kind: str) -> dict[str, np.ndarray]:
    """Sample `i`'s inputs, weights or outputs from a `make` file."""
    prefix = f"{i}/{kind}/"
    return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("make", "check"))
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if args.mode == "make":
        print(f"wrote {make(args.out, args.seed, args.count)}")
        return 0
    errors = check(args.out)
    for line in errors:
        print(line)
    print(f"{len(errors)} mismatching outputs")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
