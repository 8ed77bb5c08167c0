"""Shared fixtures: a fresh Keras session per test and backend markers."""

from __future__ import annotations

import gc

import keras
import pytest

from keras_mtl_conformance import precision
from keras_mtl_conformance import xdist_status

BACKEND = keras.backend.backend()
# Tests compare numeric paths (dispatchers, compiled and eager calls): on a GPU
# they need full float32 matmuls, as the conformance runner pins them.
precision.pin_float32_matmuls(BACKEND)


def pytest_collection_finish(session: pytest.Session) -> None:
    # The backends and test modules are imported by now: hundreds of
    # thousands of long-lived objects. Frozen, they are skipped by every later
    # collection (clear_session's gc.collect costs 0.2-0.35 s per test
    # otherwise).
    gc.freeze()


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    yield


def only(backend: str):
    return pytest.mark.skipif(backend != BACKEND, reason=f"{backend}-only test")


def pytest_sessionstart(session: pytest.Session) -> None:
    xdist_status.show_counts_when_quiet(session.config)
