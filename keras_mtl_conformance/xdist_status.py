"""One informative pytest-xdist status line in quiet (`-q`) runs.

With `-q` and no terminal, pytest-xdist prints its status line when the
workers start and again when they have collected, and in quiet mode that
line is always "bringing up nodes...": the same words twice, with neither
the number of workers nor the number of tests. This shows xdist's own
verbose line instead ("2 workers [1658 items]").
"""

from __future__ import annotations

import pytest


def show_counts_when_quiet(config: pytest.Config) -> None:
    """Call from `pytest_sessionstart`; does nothing without xdist or `-q`."""
    dist = config.pluginmanager.getplugin("terminaldistreporter")
    if dist is None or config.option.verbose >= 0 or not hasattr(dist, "_status"):
        return
    try:
        from xdist.dsession import get_workers_status_line
    except ImportError:
        return

    def status() -> str:
        return get_workers_status_line(list(dist._status.values())) or "starting"

    dist.getstatus = status
