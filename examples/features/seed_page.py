"""The seed's homepage on simulated sources: six sections, one batch.

Each source sleeps for the latency the seed measured (80/60/70/50/65/75 ms).
The batch takes about the slowest of them; calling them one after another
takes their sum. Run: ``python -m examples.features.seed_page``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from batchpage import Aggregator, RequestContext, Section

SEED_LATENCIES_MS = {
    "featuredProducts": 80,
    "newArrivals": 60,
    "featuredStores": 70,
    "featuredEvents": 50,
    "featuredOffers": 65,
    "flashSales": 75,
}


def simulated(name: str, latency_ms: int) -> Callable[[RequestContext], Awaitable[Any]]:
    async def source(ctx: RequestContext) -> list[dict[str, Any]]:
        await anyio.sleep(latency_ms / 1000)
        limit = int(ctx.params.get("limit", 3))
        return [{"id": f"{name}-{i}", "title": f"{name} #{i}"} for i in range(limit)]

    source.__name__ = name
    return source


SECTIONS = [
    Section(name=name, source=simulated(name, ms), timeout=0.2)
    for name, ms in SEED_LATENCIES_MS.items()
]


async def main() -> None:
    ctx = RequestContext(params={"limit": 3})
    async with Aggregator(SECTIONS, page="homepage", page_timeout=0.25) as agg:
        started = time.perf_counter()
        page = await agg.fetch(ctx)
        batch_ms = (time.perf_counter() - started) * 1000

        started = time.perf_counter()
        for section in SECTIONS:  # the legacy way: one call after another
            await section.source(ctx)
        sequential_ms = (time.perf_counter() - started) * 1000

    print(json.dumps(page.to_dict(), indent=2))
    print(
        f"\nHTTP {page.status_code}; batch of {len(SECTIONS)} sections: {batch_ms:.1f} ms "
        f"(slowest section {max(SEED_LATENCIES_MS.values())} ms); "
        f"sequential: {sequential_ms:.1f} ms (sum {sum(SEED_LATENCIES_MS.values())} ms); "
        f"{sequential_ms / batch_ms:.2f}x faster",
        file=sys.stderr,
    )


if __name__ == "__main__":
    anyio.run(main)
