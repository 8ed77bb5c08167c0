"""The unit tests' order under pytest-xdist (`tests/conftest.py`)."""

from __future__ import annotations

import types

import pytest

from tests import conftest

pytestmark = pytest.mark.backend_independent


def _config(*args, **option):
    return types.SimpleNamespace(
        option=types.SimpleNamespace(**option),
        invocation_params=types.SimpleNamespace(args=args),
    )


def test_whole_files_to_a_worker_unless_the_command_line_chose(monkeypatch):
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    config = _config("-n", "2", dist="load")  # xdist's default with -n
    conftest.pytest_configure(config)
    assert config.option.dist == "loadfile"
    for given in (["--dist", "load"], ["--dist=load"]):
        config = _config("-n", "2", *given, dist="load")
        conftest.pytest_configure(config)
        assert config.option.dist == "load"
    config = _config(dist="no")  # no workers
    conftest.pytest_configure(config)
    assert config.option.dist == "no"


def test_a_dist_mode_in_pytest_addopts_is_kept(monkeypatch):
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:cacheprovider --dist load")
    config = _config("-n", "2", dist="load")
    conftest.pytest_configure(config)
    assert config.option.dist == "load"


def test_one_test_at_a_time_unless_the_command_line_chose():
    config = _config(maxschedchunk=None)
    conftest.pytest_configure(config)
    assert config.option.maxschedchunk == 1
    config = _config(maxschedchunk=8)
    conftest.pytest_configure(config)
    assert config.option.maxschedchunk == 8
    config = _config()  # pytest-xdist not installed
    conftest.pytest_configure(config)
    assert not hasattr(config.option, "maxschedchunk")


def test_tests_marked_long_run_first_the_longest_first():
    def item(name, seconds=None):
        marker = pytest.mark.long(seconds).mark if seconds else None
        return types.SimpleNamespace(
            name=name, get_closest_marker=lambda _name, m=marker: m
        )

    items = [item("a"), item("b", 20), item("c"), item("d", 120), item("e", 30)]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["d", "e", "b", "a", "c"]
