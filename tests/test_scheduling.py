"""Long tests first, one at a time under pytest-xdist (`scheduling`)."""

from __future__ import annotations

import types

import pytest

from keras_mtl_conformance import conftest as conformance_conftest
from keras_mtl_conformance import scheduling
from keras_mtl_conformance.collect import CaseCheck
from tests import conftest as tests_conftest

pytestmark = pytest.mark.backend_independent


def _config(**option):
    return types.SimpleNamespace(option=types.SimpleNamespace(**option))


def test_one_test_at_a_time_unless_the_command_line_chose():
    config = _config(maxschedchunk=None)
    scheduling.one_at_a_time(config)
    assert config.option.maxschedchunk == 1
    config = _config(maxschedchunk=8)
    scheduling.one_at_a_time(config)
    assert config.option.maxschedchunk == 8
    config = _config()  # pytest-xdist not installed
    scheduling.one_at_a_time(config)
    assert not hasattr(config.option, "maxschedchunk")


def test_conformance_checks_run_compiled_export_grad_then_the_rest():
    def item(check, case="c"):
        cc = CaseCheck("layer", case, check, "float32", case=None)
        return types.SimpleNamespace(
            callspec=types.SimpleNamespace(params={"case_check": cc}), name=cc.id
        )

    checks = ["build", "grad", "forward", "compiled", "export", "symbolic"]
    items = [item(c, case) for case in ("a", "b") for c in checks]
    items.append(types.SimpleNamespace(name="no_callspec"))
    scheduling.longest_first(items, conformance_conftest._check_rank)
    assert [i.name for i in items] == [
        "layer/a/compiled/float32",
        "layer/b/compiled/float32",
        "layer/a/export/float32",
        "layer/b/export/float32",
        "layer/a/grad/float32",
        "layer/b/grad/float32",
        "layer/a/build/float32",
        "layer/a/forward/float32",
        "layer/a/symbolic/float32",
        "layer/b/build/float32",
        "layer/b/forward/float32",
        "layer/b/symbolic/float32",
        "no_callspec",
    ]


def test_unit_tests_marked_long_run_first_the_longest_first():
    def item(name, seconds=None):
        marker = pytest.mark.long(seconds).mark if seconds else None
        return types.SimpleNamespace(
            name=name, get_closest_marker=lambda _name, m=marker: m
        )

    items = [item("a"), item("b", 20), item("c"), item("d", 120), item("e", 30)]
    scheduling.longest_first(items, tests_conftest._seconds_first)
    assert [i.name for i in items] == ["d", "e", "b", "a", "c"]
