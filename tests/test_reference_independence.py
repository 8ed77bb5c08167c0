"""The float64 references must not depend on keras, keras_mtl or any backend."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

# Static checks of the reference sources: no backend involved.
pytestmark = pytest.mark.backend_independent

REFERENCE_DIR = (
    pathlib.Path(__file__).resolve().parents[1] / "keras_mtl_conformance" / "reference"
)
ALLOWED_THIRD_PARTY = {"numpy", "scipy"}


def _imports(path: pathlib.Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the reference package
                continue
            names.append(node.module or "")
    return names


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    return (
        top in sys.stdlib_module_names
        or top in ALLOWED_THIRD_PARTY
        or name == "keras_mtl_conformance.reference"
        or name.startswith("keras_mtl_conformance.reference.")
    )


def test_reference_modules_exist():
    assert sorted(p.name for p in REFERENCE_DIR.glob("*.py"))


def test_references_import_only_numpy_and_scipy():
    bad = {
        str(p.relative_to(REFERENCE_DIR)): [n for n in _imports(p) if not _allowed(n)]
        for p in REFERENCE_DIR.glob("**/*.py")
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"forbidden imports in keras_mtl_conformance/reference: {bad}"


def test_checker_catches_a_forbidden_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("import numpy as np\nfrom keras import ops\nimport torch\n")
    assert [n for n in _imports(module) if not _allowed(n)] == ["keras", "torch"]
