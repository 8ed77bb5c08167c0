"""Shared fixtures: a fresh Keras session per test and backend markers."""

from __future__ import annotations

import keras
import pytest

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    yield


def only(backend: str):
    return pytest.mark.skipif(backend != BACKEND, reason=f"{backend}-only test")
