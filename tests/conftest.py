"""Shared fixtures: a fresh Keras session per test and backend markers."""

from __future__ import annotations

import gc

import keras
import pytest

BACKEND = keras.backend.backend()

# The backends import hundreds of thousands of long-lived objects; frozen,
# they are skipped by every later collection (clear_session's gc.collect
# costs 0.2-0.35 s per test otherwise).
gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.freeze()  # and what the test modules imported


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    yield


def only(backend: str):
    return pytest.mark.skipif(backend != BACKEND, reason=f"{backend}-only test")
