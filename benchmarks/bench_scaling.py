"""Page time against the number of sections, 1 to 50: one batch against calls in sequence.

Section ``i`` sleeps the seed's latencies in turn (80, 60, 70, 50, 65, 75 ms,
then again): a batch should take about the slowest section whatever the
count, a sequence the sum. The rows are the data of the docs' plot
(``python -m benchmarks --docs``).
"""

from __future__ import annotations

import time
from typing import Final

from examples.features.seed_page import SEED_LATENCIES_MS, simulated

from batchpage import Aggregator, RequestContext, Section

from ._common import Row, at_most, info, median_time

COUNTS: Final = (1, 2, 5, 10, 20, 30, 40, 50)
LATENCIES_MS: Final = tuple(SEED_LATENCIES_MS.values())
CTX: Final = RequestContext(params={"limit": 3})


def sections(count: int) -> list[Section]:
    return [
        Section(
            name=f"s{i}",
            source=simulated(f"s{i}", LATENCIES_MS[i % len(LATENCIES_MS)]),
            timeout=0.5,
            breaker=None,
        )
        for i in range(count)
    ]


async def run(quick: bool) -> list[Row]:
    repeat = 3 if quick else 7
    rows: list[Row] = []
    worst = 0.0
    for count in COUNTS:
        page = sections(count)
        slowest = max(LATENCIES_MS[i % len(LATENCIES_MS)] for i in range(count)) / 1000
        async with Aggregator(page, page="scaling") as agg:
            batch = await median_time(lambda: agg.fetch(CTX), repeat=repeat)
        start = time.perf_counter()
        for section in page:  # the legacy way: one call after another (sleeps: once is enough)
            await section.source(CTX)
        sequential = time.perf_counter() - start
        worst = max(worst, batch / slowest)
        rows.append(Row(f"scaling: {count} sections, batch", batch * 1000, info("ms"), unit="ms"))
        rows.append(
            Row(f"scaling: {count} sections, sequential", sequential * 1000, info("ms"), unit="ms")
        )
    rows.append(
        Row(
            "scaling: batch time / slowest section, worst over 1..50 sections",
            worst,
            at_most(1.1, f"median of {repeat} pages per count"),
        )
    )
    return rows


def series(rows: list[Row], kind: str) -> list[tuple[int, float]]:
    """``(sections, ms)`` of ``kind`` (``"batch"`` or ``"sequential"``) from this group's rows."""
    points = []
    for row in rows:
        head, _, tail = row.name.partition(" sections, ")
        if head.startswith("scaling: ") and tail == kind:
            points.append((int(head.removeprefix("scaling: ")), row.value))
    return points
