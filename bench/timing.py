"""Timing helpers: median wall time of repeated calls after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(
    fn: Callable[[], object],
    warmup: int = 3,
    repeats: int = 20,
    sync: Callable[[object], None] | None = None,
) -> float:
    for _ in range(warmup):
        out = fn()
        if sync:
            sync(out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if sync:
            sync(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
