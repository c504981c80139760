"""Metrics: a page's Prometheus metrics, per section, through ``PrometheusObserver``.

The observer counts pages by status and sections by cache status and error
code, and times both; ``watch(aggregator)`` adds what is read when Prometheus
scrapes (breaker states, the refresh backlog, the cache layers' counters).
A service serves ``generate_latest(registry)`` at ``GET /metrics``
(``pip install 'batchpage[prometheus]'``).
Run: ``python -m examples.features.metrics``.
"""

from __future__ import annotations

import anyio
from prometheus_client import CollectorRegistry, generate_latest

from batchpage import Aggregator, BreakerPolicy, CachePolicy, RequestContext, Section
from batchpage.contrib.prometheus import PrometheusObserver


async def products(ctx: RequestContext) -> list[str]:
    """A healthy section."""
    return ["lamp", "chair"]


async def offers(ctx: RequestContext) -> list[str]:
    """A section whose service is down."""
    raise ConnectionError("offers service down")


SECTIONS = [
    Section(name="products", source=products, cache=CachePolicy(fresh=60)),
    Section(
        name="offers",
        source=offers,
        fallback=[],
        breaker=BreakerPolicy(failure_threshold=2, reset_timeout=30),
    ),
]


async def main() -> None:
    registry = CollectorRegistry()  # the default registry, in a real service
    metrics = PrometheusObserver(registry=registry)
    async with Aggregator(SECTIONS, page="homepage", observers=[metrics]) as agg:
        metrics.watch(agg)
        for _ in range(3):
            await agg.fetch(RequestContext())
        exposition = generate_latest(registry).decode()
    wanted = ("batchpage_pages_total", "batchpage_section_results_total", "batchpage_breaker_state")
    for line in exposition.splitlines():
        if line.startswith(wanted):
            print(line)


if __name__ == "__main__":
    anyio.run(main)
