"""Tolerances and comparisons for the conformance checks."""

from __future__ import annotations

import numpy as np

from keras_mtl_conformance import spec as spec_lib

# (rtol, atol) by check and compute dtype. Comparisons are
# |got - want| <= atol + rtol * |want|, in float64.
_DEFAULTS = {
    ("forward", "float32"): (1e-5, 1e-6),
    ("forward", "float16"): (1e-3, 1e-3),
    ("forward", "bfloat16"): (1.6e-2, 1e-2),
    ("grad", "float32"): (1e-4, 1e-5),
    # compiled/eager on one backend and .keras reloads must agree tightly.
    ("same_backend", "float32"): (1e-6, 1e-6),
}


def tolerance(
    case: spec_lib.Case, check: str, policy: str, backend: str, device: str
) -> spec_lib.Tolerance:
    """The bound for `check`: the default, or the case's last matching override."""
    dtype = spec_lib.COMPUTE_DTYPE[policy]
    key = (
        "forward"
        if check in ("forward", "compiled", "keras_file", "cross_backend")
        else check
    )
    rtol, atol = _DEFAULTS[(key, dtype)]
    override = case.tolerance(check, policy, backend, device)
    if override is None:
        return spec_lib.Tolerance(rtol, atol)
    return spec_lib.Tolerance(
        override.rtol if override.rtol is not None else rtol,
        override.atol if override.atol is not None else atol,
        override.reason,
    )


def same_backend_tolerance() -> spec_lib.Tolerance:
    return spec_lib.Tolerance(*_DEFAULTS[("same_backend", "float32")])


def assert_close(
    name: str, got: np.ndarray, want: np.ndarray, tol: spec_lib.Tolerance
) -> float:
    """Raises AssertionError with details; returns the max absolute error."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != expected {want.shape}")
    if got.size == 0:
        return 0.0
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    if np.any(nan_got != nan_want):
        raise AssertionError(
            f"{name}: NaN mismatch ({int(nan_got.sum())} NaN, expected "
            f"{int(nan_want.sum())})"
        )
    finite = ~nan_want
    err = np.abs(got[finite] - want[finite])
    bound = tol.atol + tol.rtol * np.abs(want[finite])
    max_err = float(err.max()) if err.size else 0.0
    if np.any(err > bound):
        idx = int(np.argmax(err - bound))
        raise AssertionError(
            f"{name}: max abs error {max_err:.3g} exceeds atol={tol.atol:g}, "
            f"rtol={tol.rtol:g} ({int(np.sum(err > bound))}/{err.size} elements; "
            f"worst got {got[finite][idx]!r}, expected {want[finite][idx]!r})"
        )
    return max_err
