"""Layered Redis: two instances, each with its memory in front of one shared Redis.

What one instance fetches, the other reads from Redis (one ``MGET`` per page)
and keeps in its own memory; an invalidation on one reaches the other's
memory through Redis pub/sub. Both instances are in this one process here;
in production each is a worker or a server. Needs a Redis it may write to
(it writes and then drops keys under ``batchpage:{layered-demo:v1}``):

    REDIS_URL=redis://localhost:6379/0 python -m examples.features.layered_redis

(``pip install 'batchpage[redis]'``; redis-py's asyncio client runs on asyncio.)
"""

from __future__ import annotations

import os

import anyio

from batchpage import (
    Aggregator,
    CachePolicy,
    LayeredCache,
    MemoryCache,
    RedisCache,
    RequestContext,
    Section,
)

fetches = 0


async def products(ctx: RequestContext) -> list[str]:
    """Counts its calls: one fetch serves both instances."""
    global fetches
    fetches += 1
    return ["lamp", "chair"]


SECTIONS = [Section(name="products", source=products, cache=CachePolicy(fresh=60))]


def layered(url: str) -> LayeredCache:
    """One application instance's cache: its own memory over the shared Redis."""
    return LayeredCache(MemoryCache(max_entries=1000), RedisCache.from_url(url))


async def main(url: str) -> None:
    cache_a, cache_b = layered(url), layered(url)
    a = Aggregator(SECTIONS, page="layered-demo", cache=cache_a)
    b = Aggregator(SECTIONS, page="layered-demo", cache=cache_b)
    async with a, b:
        for name, agg in [("A", a), ("B", b), ("B", b)]:
            page = await agg.fetch(RequestContext())
            print(f"instance {name}: {page.results['products'].cache.value}")
        print(f"source calls: {fetches}; B read Redis {cache_b.stats.redis_reads} time(s)")

        await a.invalidate("products")  # deletes in Redis, then tells every instance
        with anyio.fail_after(5):
            # B's listener counts the message it hears: nothing here to wait on but that.
            while not cache_b.stats.invalidations_received:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        page = await b.fetch(RequestContext())
        print(f"instance B after A invalidated: {page.results['products'].cache.value}")
        print(f"source calls: {fetches}")
        await a.invalidate("products")  # leave nothing behind in that Redis


if __name__ == "__main__":
    url = os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit(
            "layered_redis needs a Redis it may write to: "
            "REDIS_URL=redis://localhost:6379/0 python -m examples.features.layered_redis"
        )
    anyio.run(main, url)
