"""Timing helpers: median wall time of repeated calls after a warm-up, and
the result row every suite returns."""

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


def paired_median_seconds(
    fns: dict[str, Callable[[], object]],
    warmup: int = 3,
    repeats: int = 20,
    interleave: bool = True,
) -> dict[str, float]:
    """Median wall time of each callable, timed in alternation.

    One call of each per round, so slow drifts of a shared machine's load hit
    every candidate alike instead of whichever happens to run last. With
    `interleave=False` each callable runs its repeats back to back (torch:
    a `torch.compile`d step leaves OpenMP worker threads spinning, which
    slowed whichever eager call came next by up to 30x on 2 cores).
    """
    if not interleave:
        return {name: median_seconds(fn, warmup, repeats) for name, fn in fns.items()}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def result_row(
    benchmark: str, baseline: str, base: float, ours: float
) -> dict[str, object]:
    """One result of a suite: its times (seconds) in ms and `ours / base`."""
    return {
        "benchmark": benchmark,
        "baseline": baseline,
        "baseline_ms": base * 1e3,
        "ours_ms": ours * 1e3,
        "ratio": ours / base,
    }
