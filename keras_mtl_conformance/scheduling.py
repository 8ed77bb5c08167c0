"""Long tests first, handed out one at a time under pytest-xdist.

pytest-xdist's `load` scheduler gives each worker a first chunk of a quarter
of its share of the tests, in collection order, and refills it in chunks.
When the few long tests (a torch.compile check takes 5-50 s; most checks take
well under a second) sit in one chunk, one worker runs them all while the
other finishes early and waits; when they come last, the run ends on one
worker. Run first and handed out one at a time (`--maxschedchunk=1`), the
long tests spread over the workers and the short ones fill the gaps.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


def one_at_a_time(config: pytest.Config) -> None:
    """`--maxschedchunk=1` unless the command line chose a chunk size."""
    # The option exists only with pytest-xdist installed; None: not given.
    if getattr(config.option, "maxschedchunk", 0) is None:
        config.option.maxschedchunk = 1


def longest_first(
    items: list[pytest.Item], rank: Callable[[pytest.Item], float]
) -> None:
    """Sorts `items` by `rank` (lower first), keeping the collection order
    among equal ranks."""
    items.sort(key=rank)
