"""`.keras` files saved by an earlier version still load and compute the same.

`tests/data/saved_43dcc1d/tensorflow/<spec>/<case>.keras` were saved on
TensorFlow at commit 43dcc1d (before the argument renames and the module
moves that followed it), one per spec: its first case with a cross-backend
check, beside the weights and outputs of the saving model (`<case>.npz`).
Each is loaded here on the current backend: the weights must be identical
and the outputs must match both the saved ones and the golden, within the
cross-backend tolerance. Registered names (`keras_mtl>MLP`, ...) are what
the files refer to, so moving a module must not break them.
"""

from __future__ import annotations

import pathlib

import pytest

from keras_mtl_conformance import compare
from keras_mtl_conformance import goldens
from keras_mtl_conformance import spec as spec_lib
from keras_mtl_conformance import xbackend

ROOT = pathlib.Path(__file__).parent / "data" / "saved_43dcc1d"
SAVER = "tensorflow"


def _cases() -> list:
    cases = {
        (spec.name, case.id): case
        for spec in spec_lib.discover()
        for case in spec.cases
    }
    params = []
    for path in sorted((ROOT / SAVER).glob("*/*.keras")):
        key = (path.parent.name, path.stem)
        params.append(pytest.param(cases.get(key), id=f"{key[0]}-{key[1]}"))
    return params


def test_every_spec_has_a_saved_file():
    saved = {p.parent.name for p in (ROOT / SAVER).glob("*/*.keras")}
    assert saved == {spec.name for spec in spec_lib.discover()}


@pytest.mark.parametrize("case", _cases())
def test_file_saved_before_loads_and_computes_the_same(case):
    import keras

    assert case is not None, "the spec case of this file is gone"
    golden = goldens.read(case.spec)["cases"][case.id]
    tol = compare.tolerance(
        case, "cross_backend", "float32", keras.backend.backend(), "cpu"
    )
    xbackend.check_load(case, SAVER, str(ROOT), golden["forward"]["float32"], tol)
