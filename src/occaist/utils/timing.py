"""Median wall time of a callable, for the ``scripts/bench_*.py`` benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_seconds"]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; the median seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
