"""Measuring helpers: medians of repeated runs, printed as ratios side by side."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import attrs


@attrs.frozen
class Row:
    name: str
    value: float
    target: str
    unit: str = "x"

    def line(self) -> str:
        return f"  {self.name:<62} {self.value:>9.3f}{self.unit:<3} target {self.target}"


async def median_time(fn: Callable[[], Awaitable[object]], *, repeat: int, inner: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` batches of ``inner`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            await fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def sync_median_time(fn: Callable[[], object], *, repeat: int, inner: int = 1) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)
