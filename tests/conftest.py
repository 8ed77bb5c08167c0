"""Shared fixtures: a fresh Keras session per test and backend markers."""

from __future__ import annotations

import gc
import os
import shlex

import pytest

from keras_mtl_conformance import xdist_status

# Keras (and with it the backend) is imported by the test modules and the
# fixtures, never here at module level: under pytest-xdist the controller
# loads this file too, runs no test, and its import (5.5 s for TensorFlow)
# would delay every worker's start. `BACKEND` and `only` live in
# `tests/_helpers.py`.


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist a worker takes a whole test file at a time
    # (`--dist loadfile`, unless `--dist` is given; the files with the most
    # tests first): a file's tests share layers and shapes, so the programs a
    # backend compiles for them (JAX's XLA program per eager op and shape,
    # Inductor's kernels) are compiled in one worker, not in both. Same
    # machine, 2 workers, empty compile caches: JAX 198 -> 184 s and
    # 201 -> 196 s, torch 186 -> 174 s, TensorFlow 131 -> 127 s. Keeping the
    # long tests first in that mode (`--no-loadscope-reorder`): torch 186 s.
    if getattr(config.option, "dist", None) == "load" and not _dist_given(config):
        config.option.dist = "loadfile"
    # With `--dist load`, xdist's `load` scheduler hands each worker a first
    # chunk of a quarter of its share of the tests, in collection order: the
    # few long tests (a compiled DIEN training step takes about 50 s on torch,
    # most tests under a second) landed on one worker, or ended the run on
    # one. One test at a time (unless `--maxschedchunk` is given), the long
    # ones first (`pytest_collection_modifyitems`), the workers end together.
    # The option exists only with pytest-xdist installed; None: not given.
    if getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1


def _dist_given(config: pytest.Config) -> bool:
    """Whether the command line, `PYTEST_ADDOPTS` or the `addopts` setting
    chose a `--dist` mode."""
    params = getattr(config, "invocation_params", None)
    args = [*(params.args if params else ())]
    args += shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    if hasattr(config, "getini"):
        args += config.getini("addopts")
    return any(a == "--dist" or a.startswith("--dist=") for a in args)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # The tests marked `long(seconds)` first, the longest first; the others
    # in collection order.
    items.sort(key=long_seconds_first)


def long_seconds_first(item: pytest.Item) -> float:
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
