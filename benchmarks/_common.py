"""Measuring helpers: medians of repeated runs, printed as ratios side by side.

Every figure is a :class:`Row` with a :class:`Target`. A target either has a
test (``at_most``, ``at_least``, ``exactly``) or is informational (``info``);
the benchmark command exits non-zero when a tested target is missed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs


@attrs.frozen
class Target:
    """What a figure must be; ``met`` is ``None`` for an informational figure."""

    text: str
    met: Callable[[float], bool] | None = None


def at_most(limit: float, note: str = "") -> Target:
    return Target(_text(f"<= {limit:g}", note), lambda value: value <= limit)


def at_least(limit: float, note: str = "") -> Target:
    return Target(_text(f">= {limit:g}", note), lambda value: value >= limit)


def exactly(expected: float, note: str = "") -> Target:
    return Target(_text(f"{expected:g}", note), lambda value: value == expected)


def info(note: str) -> Target:
    return Target(f"({note})" if note else "(informational)")


def _text(bound: str, note: str) -> str:
    return f"{bound} ({note})" if note else bound


@attrs.frozen
class Row:
    name: str
    value: float
    target: Target
    unit: str = "x"
    group: str = ""

    @property
    def verdict(self) -> str:
        """``"met"``, ``"MISSED"`` or ``""`` for an informational figure."""
        if self.target.met is None:
            return ""
        return "met" if self.target.met(self.value) else "MISSED"

    def line(self) -> str:
        return (
            f"  {self.name:<66} {self.value:>10.3f}{self.unit:<3} "
            f"target {self.target.text}  {self.verdict}"
        ).rstrip()

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target.text,
            "verdict": self.verdict,
        }


async def median_time(fn: Callable[[], Awaitable[object]], *, repeat: int, inner: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` batches of ``inner`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            await fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


async def interleaved(
    *fns: Callable[[], Awaitable[object]], repeat: int, inner: int = 1
) -> list[float]:
    """Median seconds per call of each of ``fns``, their batches interleaved.

    Batch ``r`` runs the contenders in turn, in an order that rotates with
    ``r`` (ABBA... for two): a load that comes and goes on a shared machine
    falls on every contender alike, instead of on whichever ran during it.
    """
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(repeat):
        order = list(enumerate(fns))
        if r % 2:
            order.reverse()
        for index, fn in order:
            start = time.perf_counter()
            for _ in range(inner):
                await fn()
            samples[index].append((time.perf_counter() - start) / inner)
    return [statistics.median(s) for s in samples]


def sync_median_time(fn: Callable[[], object], *, repeat: int, inner: int = 1) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)
