"""Turns specs into pytest parameters: one per (layer, case, check, policy)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest

from keras_mtl_conformance import spec as spec_lib

BACKENDS = ("tensorflow", "jax", "torch")


@dataclasses.dataclass(frozen=True)
class CaseCheck:
    layer: str
    case_id: str
    check: str
    # A dtype policy, `from_<backend>` for cross_backend, a format for export.
    policy: str
    case: Any = dataclasses.field(compare=False, repr=False)
    spec_error: str | None = None

    @property
    def id(self) -> str:
        return f"{self.layer}/{self.case_id}/{self.check}/{self.policy}"

    @property
    def param(self) -> Any:
        return pytest.param(self, id=self.id)


@functools.cache
def _specs(spec_dirs: tuple[str, ...] | None) -> list[spec_lib.LayerSpec]:
    return spec_lib.discover(list(spec_dirs) if spec_dirs else None)


def params(
    spec_dirs: list[str] | None, cross_dir: str | None, backend: str | None = None
) -> list[CaseCheck]:
    """Every check of every case, and an `export` check per format of
    `backend` for each of the spec's export cases."""
    from keras_mtl_conformance.export import FORMATS

    out = []
    for spec in _specs(tuple(spec_dirs) if spec_dirs else None):
        if backend is not None:
            out.extend(
                CaseCheck(spec.name, entry.case.id, "export", fmt, entry.case)
                for entry in spec.export
                for fmt in FORMATS[backend]
            )
        for case in spec.cases:
            for check in case.checks:
                if check == "forward":
                    policies = case.dtype_policies
                elif check == "cross_backend":
                    if cross_dir is None:
                        continue
                    policies = tuple(f"from_{b}" for b in BACKENDS)
                else:
                    policies = ("float32",)
                out.extend(
                    CaseCheck(spec.name, case.id, check, p, case) for p in policies
                )
    return out
