"""Generate or check the reference outputs (`specs/<family>/<layer>/golden.yaml`).

    python -m keras_mtl_conformance.goldens            # regenerate every layer
    python -m keras_mtl_conformance.goldens --layer dense
    python -m keras_mtl_conformance.goldens --check    # fail if any golden is stale

Goldens come only from the float64 NumPy references in `keras_mtl_conformance/reference`
(never from keras_mtl): outputs and auxiliary losses per dtype policy (inputs
and weights rounded to the policy's compute dtype first), and gradients of
`sum(outputs * cotangents) + sum(losses)` by float64 central differences.
This module imports no deep-learning backend.

Finite differences cannot see `stop_gradient`, so a reference that takes
the keyword `anchor` (or `**kwargs`) gets it on every call: `None` for forward
outputs (meaning "the current point"), and `(inputs, weights)` at the
unperturbed point while differentiating. A reference implements
`stop_gradient(expr)` by evaluating `expr` at the anchor (a perturbation then
cannot move it: its gradient is zero); references without stopped quantities
ignore it (`**_`) or do not take it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import inspect
import multiprocessing
import os
import pathlib
import sys
import zlib
from typing import Any

import numpy as np
import yaml

from keras_mtl_conformance import spec as spec_lib

GENERATOR_VERSION = 1
FD_EPSILON = 1e-6
# `--check` recomputes the goldens; a stored value is stale when it moved by
# more than this, relative to 1 + |value|. Outputs and losses repeat to a few
# ulps on any machine.
CHECK_TOLERANCE = 1e-9
# A central difference divides the objective's rounding by 2h (h = 1e-6
# |x|): another BLAS kernel (another CPU) moves it by about 1e-10 |objective|
# (seen: 1.7e-9 on a SparseMoE expert kernel's gradient between two CI
# machines). Far below the float32 tolerances the goldens are checked at.
GRAD_CHECK_TOLERANCE = 1e-7
REGENERATE = "run `nox -s goldens` (or `keras-mtl-conformance goldens`) and commit"


def regenerate_hint(spec: spec_lib.LayerSpec) -> str:
    """The command that regenerates `spec`'s goldens, for messages."""
    if not spec.spec_dir_option:
        return REGENERATE
    return (
        f"run `keras-mtl-conformance goldens{spec.spec_dir_option} --layer {spec.name}`"
    )


@functools.cache
def _takes_anchor(fn: Any) -> bool:
    """Whether `fn` has an `anchor` parameter or `**kwargs`.

    References with neither (older user references) keep working: they stop
    no gradient, so they need no anchor.
    """
    params = inspect.signature(fn).parameters.values()
    return any(p.name == "anchor" or p.kind is p.VAR_KEYWORD for p in params)


def _run_reference(
    case: spec_lib.Case,
    inputs: dict[str, np.ndarray],
    weights: dict[str, np.ndarray],
    anchor: tuple[list[np.ndarray], dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    fn = case.spec.reference_fn()
    positional, tensor_kwargs = case.split_inputs(inputs)
    extra = {"anchor": anchor} if _takes_anchor(fn) else {}
    result = fn(
        positional,
        weights,
        case.config,
        case.training,
        **extra,
        **case.call_kwargs,
        **tensor_kwargs,
    )
    outputs = [np.asarray(o, dtype=np.float64) for o in result["outputs"]]
    if len(outputs) != len(case.spec.outputs) and len(case.spec.outputs) != 1:
        raise spec_lib.SpecError(
            case.spec.path,
            f"reference returned {len(outputs)} outputs, spec names "
            f"{len(case.spec.outputs)}",
            case.id,
            "outputs",
        )
    losses = [float(v) for v in result.get("losses", [])]
    if len(losses) != len(case.spec.losses):
        raise spec_lib.SpecError(
            case.spec.path,
            f"reference returned {len(losses)} losses, spec names "
            f"{len(case.spec.losses)}",
            case.id,
            "losses",
        )
    updates = {
        k: np.asarray(v, dtype=np.float64) for k, v in result.get("updates", {}).items()
    }
    return {"outputs": outputs, "losses": losses, "updates": updates}


def _rounded(arrays: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    return {k: spec_lib.round_to(v, dtype) for k, v in arrays.items()}


def cotangents(case: spec_lib.Case, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Fixed random cotangents, seeded by the case name (stable everywhere)."""
    rng = np.random.RandomState(zlib.crc32(case.name.encode()))
    return [
        rng.standard_normal(o.shape).astype(np.float32).astype(np.float64)
        for o in outputs
    ]


def _objective(case, inputs, weights, cots, anchor) -> float:
    res = _run_reference(case, inputs, weights, anchor)
    total = sum(float(np.sum(o * c)) for o, c in zip(res["outputs"], cots, strict=True))
    return total + sum(res["losses"])


def finite_difference_grads(case: spec_lib.Case, inputs, weights, cots):
    """d objective / d (float inputs, trainable weights), central differences.

    The reference sees `anchor=(inputs, weights)` at the unperturbed point, so
    quantities it stops the gradient of stay fixed (see the module docstring).
    """
    grads: dict[str, dict[str, np.ndarray]] = {"inputs": {}, "weights": {}}
    anchor = (case.split_inputs(inputs)[0], weights)
    groups = (
        ("inputs", inputs, case.float_inputs()),
        ("weights", weights, case.trainable_weights()),
    )
    for group, arrays, keys in groups:
        for key in keys:
            base = arrays[key]
            grad = np.zeros_like(base, dtype=np.float64)
            for idx in np.ndindex(base.shape):
                h = FD_EPSILON * max(1.0, abs(base[idx]))
                values = []
                for sign in (1.0, -1.0):
                    bumped = base.copy()
                    bumped[idx] += sign * h
                    new = dict(arrays)
                    new[key] = bumped
                    args = (new, weights) if group == "inputs" else (inputs, new)
                    values.append(_objective(case, *args, cots, anchor))
                grad[idx] = (values[0] - values[1]) / (2 * h)
            grads[group][key] = grad
    return grads


def inputs_sha256(case: spec_lib.Case) -> str:
    """Digest of a case's materialized inputs and weights.

    Stored with each case's goldens: a change in how spec tensors are
    generated (NumPy's random streams, say) then makes the goldens stale.
    """
    return _sha({**case.input_arrays(), **case.weight_arrays()})


def _sha(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key], dtype=np.float64).tobytes())
    return digest.hexdigest()


def _tolist(x: np.ndarray) -> Any:
    return np.asarray(x, dtype=np.float64).tolist()


def generate_case(case: spec_lib.Case) -> dict[str, Any]:
    inputs = case.input_arrays()
    weights = case.weight_arrays()
    entry: dict[str, Any] = {
        "inputs_sha256": inputs_sha256(case),
        "forward": {},
    }
    for policy in case.dtype_policies:
        dtype = spec_lib.COMPUTE_DTYPE[policy]
        res = _run_reference(case, _rounded(inputs, dtype), _rounded(weights, dtype))
        entry["forward"][policy] = {
            "outputs": [_tolist(o) for o in res["outputs"]],
            "shapes": [list(o.shape) for o in res["outputs"]],
            "losses": res["losses"],
            "updates": {k: _tolist(v) for k, v in res["updates"].items()},
        }
        if policy == "float32":
            _check_expected_exact(case, res["outputs"])
    if "grad" in case.checks:
        res = _run_reference(case, inputs, weights)
        cots = cotangents(case, res["outputs"])
        grads = finite_difference_grads(case, inputs, weights, cots)
        entry["grad"] = {
            "cotangents": [_tolist(c) for c in cots],
            "inputs": {k: _tolist(v) for k, v in grads["inputs"].items()},
            "weights": {k: _tolist(v) for k, v in grads["weights"].items()},
        }
    return entry


def _check_expected_exact(case: spec_lib.Case, outputs: list[np.ndarray]) -> None:
    """Hand-computed values in the spec validate the reference itself."""
    for name, values in case.expected_exact.items():
        if name not in case.spec.outputs:
            raise spec_lib.SpecError(
                case.spec.path, f"unknown output '{name}'", case.id, "expected_exact"
            )
        got = outputs[case.spec.outputs.index(name)]
        want = np.asarray(values, dtype=np.float64)
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6, atol=1e-9):
            raise spec_lib.SpecError(
                case.spec.path,
                f"the reference disagrees with the hand-computed values: "
                f"{got.tolist()} != {want.tolist()}",
                case.id,
                "expected_exact",
            )


def generate(spec: spec_lib.LayerSpec) -> dict[str, Any]:
    return _golden(spec, {case.id: generate_case(case) for case in spec.cases})


def _golden(spec: spec_lib.LayerSpec, cases: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": {
            "generator_version": GENERATOR_VERSION,
            "spec_sha256": spec.spec_sha256(),
            "reference": spec.reference,
            "reference_sha256": spec.reference_sha256(),
            "numpy": np.__version__,
        },
        "cases": cases,
    }


def generate_many(
    specs: list[spec_lib.LayerSpec], jobs: int | None = None
) -> list[dict[str, Any]]:
    """`generate` for each spec, the cases spread over `jobs` processes.

    `jobs` defaults to the CPUs this process may use; 1 computes here. Cases
    are independent, and most of the time goes to the central differences of
    the `grad` goldens (one reference call per input and weight element).
    """
    jobs = _usable_cpus() if jobs is None else jobs
    tasks = [(str(spec.path), case.id) for spec in specs for case in spec.cases]
    if jobs < 2 or len(tasks) < 2:
        return [generate(spec) for spec in specs]
    # spawn: a worker starts with NumPy and the references only, whatever
    # threads this process runs; it gets this process's `sys.path`.
    with concurrent.futures.ProcessPoolExecutor(
        min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        entries = iter(pool.map(_case_in_worker, tasks))
        return [
            _golden(spec, {case.id: next(entries) for case in spec.cases})
            for spec in specs
        ]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache
def _load_in_worker(path: str) -> spec_lib.LayerSpec:
    return spec_lib.load_spec(path)


def _case_in_worker(task: tuple[str, str]) -> dict[str, Any]:
    path, case_id = task
    spec = _load_in_worker(path)
    return generate_case(next(c for c in spec.cases if c.id == case_id))


def write(spec: spec_lib.LayerSpec, golden: dict[str, Any]) -> None:
    header = (
        f"# GENERATED by `nox -s goldens` from {spec.reference}.\n"
        "# Do not edit by hand.\n"
    )
    body = yaml.safe_dump(golden, sort_keys=False, default_flow_style=None, width=100)
    spec.golden_path.write_text(header + body)


def _ragged(a: list[Any]) -> bool:
    try:
        np.asarray(a, dtype=np.float64)
    except ValueError:
        return True
    return False


def _check_tolerance(path: str) -> float:
    """`GRAD_CHECK_TOLERANCE` under a case's `grad` entry, else `CHECK_TOLERANCE`."""
    return GRAD_CHECK_TOLERANCE if path.split("/")[2:3] == ["grad"] else CHECK_TOLERANCE


def _max_diff(a: Any, b: Any, path: str = "") -> tuple[float, float, str]:
    """Largest difference between two golden trees, relative to 1 + |b|, as
    `(difference / its check tolerance, difference, key path)`."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return _INF, _INF, f"{path}: keys {sorted(set(a) ^ set(b))}"
        worst = (0.0, 0.0, "")
        for k in a:
            worst = max(worst, _max_diff(a[k], b[k], f"{path}/{k}"))
        return worst
    if isinstance(a, str) or isinstance(b, str):
        return (0.0, 0.0, "") if a == b else (_INF, _INF, path)
    if isinstance(a, list) and isinstance(b, list) and _ragged(a) | _ragged(b):
        # A list of outputs of different shapes: compare entry by entry.
        if len(a) != len(b):
            return _INF, _INF, f"{path}: {len(a)} entries != {len(b)}"
        worst = (0.0, 0.0, "")
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            worst = max(worst, _max_diff(u, v, f"{path}[{i}]"))
        return worst
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return _INF, _INF, f"{path}: shape {x.shape} != {y.shape}"
    if x.size == 0:
        return 0.0, 0.0, ""
    diff = float(np.max(np.abs(x - y) / (1.0 + np.abs(y))))
    return diff / _check_tolerance(path), diff, path


_INF = float("inf")


def read(spec: spec_lib.LayerSpec) -> dict[str, Any]:
    """The stored goldens; `SpecError` with the command to run when missing."""
    path = spec.golden_path
    if not path.exists():
        raise spec_lib.SpecError(path, f"goldens are missing: {regenerate_hint(spec)}")
    return spec_lib.safe_load(path.read_text())


def stale_reason(spec: spec_lib.LayerSpec, golden: dict[str, Any]) -> str | None:
    """Why stored goldens no longer match the spec or its reference, if they don't.

    Cheap (hashes only): the conformance run calls it for every spec. `check`
    also recomputes the values.
    """
    meta = golden.get("meta", {})
    if meta.get("spec_sha256") != spec.spec_sha256():
        return f"{spec.path} changed since its goldens were generated"
    if meta.get("reference_sha256") != spec.reference_sha256():
        return f"the reference '{spec.reference}' changed since the goldens were made"
    cases = golden.get("cases", {})
    missing = {c.id for c in spec.cases} - set(cases)
    if missing:
        return f"no goldens for cases {sorted(missing)}"
    for case in spec.cases:
        if cases[case.id].get("inputs_sha256") != inputs_sha256(case):
            return f"the materialized inputs of {case.name} changed"
    return None


def read_fresh(spec: spec_lib.LayerSpec) -> dict[str, Any]:
    """The stored goldens; `SpecError` with the command to run when stale."""
    golden = read(spec)
    reason = stale_reason(spec, golden)
    if reason:
        raise spec_lib.SpecError(
            spec.golden_path, f"stale goldens: {reason}; {regenerate_hint(spec)}"
        )
    return golden


def check(spec: spec_lib.LayerSpec) -> str | None:
    """None when `golden.yaml` is up to date, else why it is stale."""
    stored, reason = _stored(spec)
    return reason or _recomputed_differ(stored, generate(spec))


def _recomputed_differ(stored: dict[str, Any], fresh: dict[str, Any]) -> str | None:
    """Why recomputed goldens `fresh` disagree with the `stored` ones, if they do."""
    stored_meta, fresh_meta = stored.get("meta", {}), fresh["meta"]
    if stored_meta.get("generator_version") != fresh_meta["generator_version"]:
        return "generated by another generator version"
    excess, diff, where = _max_diff(fresh["cases"], stored["cases"])
    if excess > 1.0:
        return (
            f"recomputed values differ at {where} (relative {diff:.3g}, "
            f"tolerance {_check_tolerance(where):g})"
        )
    return None


def _stored(spec: spec_lib.LayerSpec) -> tuple[dict[str, Any], str | None]:
    """The stored goldens, and what `check` finds without recomputing: a
    missing file, changed hashes."""
    if not spec.golden_path.exists():
        return {}, f"{spec.golden_path} is missing"
    stored = read(spec)
    return stored, stale_reason(spec, stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="verify instead of writing; exit 1 when stale",
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        help="only this layer (spec directory name); repeatable",
    )
    parser.add_argument(
        "--spec-dir",
        action="append",
        type=pathlib.Path,
        default=None,
        help="spec directory (default: specs/)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="processes computing the cases (default: one per CPU)",
    )
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1. Received: --jobs={args.jobs}")
    try:
        return _run(parser, args)
    except spec_lib.SpecError as err:
        # A user's spec: its file and field say enough, no traceback needed.
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    specs = spec_lib.discover(args.spec_dir)
    if args.layer:
        unknown = set(args.layer) - {s.name for s in specs}
        if unknown:
            parser.error(f"unknown layer(s): {sorted(unknown)}")
        specs = [s for s in specs if s.name in args.layer]
    failures = 0
    # `--check` recomputes only what the hashes leave in doubt.
    stored = {s.name: _stored(s) for s in specs} if args.check else {}
    todo = [s for s in specs if not args.check or not stored[s.name][1]]
    computed = generate_many(todo, args.jobs)
    fresh = {s.name: golden for s, golden in zip(todo, computed, strict=True)}
    for spec in specs:
        if args.check:
            golden, reason = stored[spec.name]
            reason = reason or _recomputed_differ(golden, fresh[spec.name])
            status = "ok" if reason is None else f"STALE: {reason}"
            failures += reason is not None
        else:
            write(spec, fresh[spec.name])
            status = f"wrote {spec.golden_path.relative_to(spec.path.parent.parent)}"
        print(f"{spec.name:<22} {len(spec.cases):>3} cases  {status}")
    if failures:
        dirs = "".join(f" --spec-dir {d}" for d in args.spec_dir or [])
        hint = f"run `keras-mtl-conformance goldens{dirs}`" if dirs else REGENERATE
        print(f"\n{failures} spec(s) have stale goldens: {hint}.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
