"""Wall-clock timing: one statistic, used by the benchmark and by evaluation's speed rows."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax

__all__ = ["format_seconds", "median_seconds"]


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of `fn()` (waited for with `jax.block_until_ready`) over `repeats`
    runs, after one run that compiles and warms up. The median, not the minimum: on a shared
    machine it is the figure a rerun reproduces."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def format_seconds(seconds: float) -> str:
    """Whole seconds as '0h03m05s'."""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
