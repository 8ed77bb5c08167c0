"""Shared fixtures: a fresh Keras session per test and backend markers."""

from __future__ import annotations

import gc

import pytest

from keras_mtl_conformance import scheduling
from keras_mtl_conformance import xdist_status

# Keras (and with it the backend) is imported by the test modules and the
# fixtures, never here at module level: under pytest-xdist the controller
# loads this file too, runs no test, and its import (5.5 s for TensorFlow)
# would delay every worker's start. `BACKEND` and `only` live in
# `tests/_helpers.py`.


def pytest_configure(config: pytest.Config) -> None:
    scheduling.one_at_a_time(config)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # The tests marked `long(seconds)` first, the longest first, so that
    # pytest-xdist's workers end together.
    scheduling.longest_first(items, _seconds_first)


def _seconds_first(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long")
    return -float(marker.args[0]) if marker else 0.0


def pytest_collection_finish(session: pytest.Session) -> None:
    # The backends and test modules are imported by now: hundreds of
    # thousands of long-lived objects. Frozen, they are skipped by every later
    # full collection.
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _float32_matmuls():
    # Tests compare numeric paths (dispatchers, compiled and eager calls): on a
    # GPU they need full float32 matmuls, as the conformance runner pins them.
    import keras

    from keras_mtl_conformance import precision

    precision.pin_float32_matmuls(keras.backend.backend())


@pytest.fixture(autouse=True)
def _fresh_session():
    import keras

    keras.config.set_dtype_policy("float32")
    # No `gc.collect()` per test: with the objects tests leave behind
    # (compiled functions, traced graphs) it took over a third of the time;
    # on JAX the 340 tests of test_core, test_multi_task and test_interaction
    # took 95 s with it and 60 s without (2 workers). Python's own collector
    # still frees cycles.
    keras.utils.clear_session(free_memory=False)
    yield


def pytest_sessionstart(session: pytest.Session) -> None:
    xdist_status.show_counts_when_quiet(session.config)
