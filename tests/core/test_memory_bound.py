"""Memory stays within its bound whatever the number of users.

A ``MemoryCache(max_bytes=...)`` counts each entry's payload, key and a fixed
overhead for its bookkeeping; these tests hold that count to what Python
really allocates (tracemalloc), and drive many distinct signed-in users
through a personal section to show that the cache keeps its bound and that
nothing else kept per key (the key memo, views, single-flight, the
invalidation log, breakers) grows with the number of users.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import anyio.lowlevel
import pytest

from batchpage import Aggregator, CachePolicy, MemoryCache, RequestContext, Scope, Section
from batchpage.extend import Entry

POLICY = CachePolicy(fresh=60, stale=60, jitter=0)

#: What the structures around the cache may hold at most, whatever the number
#: of users: the key memo (1,024 pages' keys, about 0.5 MB), the views (256
#: pages, about 0.3 MB, and the bodies they keep: 1 MiB at most) and the dicts'
#: own tables (``python -m benchmarks --only cache`` states the same bound).
FIXED_OVERHEAD = 2_500_000


@pytest.fixture
def traced() -> Iterator[None]:
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _key(i: int) -> str:
    return f"batchpage:{{homepage:v1:u-v-user-{i:07d}}}:recommended:v-limit=i.10"


def _payload(i: int) -> bytes:
    return b'[{"id":"p%07d","name":"a lamp","price":19.9}]' % i


def test_the_byte_count_covers_what_entries_really_take(traced: None) -> None:
    """Under churn, what the process holds for the cache stays under what max_bytes counts."""
    max_bytes = 2_000_000
    cache = MemoryCache(max_entries=1_000_000, max_bytes=max_bytes)
    base = tracemalloc.get_traced_memory()[0]
    worst = 0
    for i in range(60_000):
        now = cache.clock()
        cache.put(_key(i), Entry.create(_payload(i), POLICY, now))
        if i % 500 == 0:
            held = tracemalloc.get_traced_memory()[0] - base
            # The counted bytes, plus the dict's table when it has just grown.
            worst = max(worst, held - cache.size_bytes)
    assert cache.size_bytes <= max_bytes
    assert len(cache) < 60_000  # it did evict
    assert worst <= 100_000, f"held {worst} bytes more than counted"


class _Personal:
    """A user's recommendations: small, different for each user."""

    async def __call__(self, ctx: RequestContext) -> list[dict[str, Any]]:
        return [{"id": f"p-{ctx.user_id}", "name": "a lamp", "price": 19.9}]


async def _global(ctx: RequestContext) -> list[str]:
    return ["the same for everyone"] * 5


def _aggregator(cache: MemoryCache) -> Aggregator:
    sections = [
        Section(name="featured", source=_global, cache=POLICY),
        Section(name="recommended", source=_Personal(), cache=POLICY, scope=Scope.USER),
    ]
    return Aggregator(sections, page="homepage", cache=cache)


def _per_key_sizes(agg: Aggregator, cache: MemoryCache) -> dict[str, int]:
    return {
        "key memo": len(agg._key_memo),
        "views": len(cache._views),
        "view index": len(cache._viewing),
        "touched": len(cache._touched),
        "single-flight": len(agg._filler._flights),
        "refreshing": agg.refreshing,
        "invalidation log": len(cache.invalidations._recent),
        "breakers": len(agg._breakers),
        "stuck threads": len(agg.executor._stuck),
    }


@pytest.mark.anyio
async def test_many_signed_in_users_keep_memory_within_the_bound(traced: None) -> None:
    """5,000 users, each twice: the cache holds its bound and nothing grows with the users.

    (``python -m benchmarks --only cache`` drives 100,000 and prints the figures.)
    """
    max_bytes = 200_000
    cache = MemoryCache(max_entries=100_000, max_bytes=max_bytes)
    async with _aggregator(cache) as agg:
        await agg.fetch(RequestContext(user_id="warm-up"))
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        held = []
        for i in range(5_000):
            ctx = RequestContext(user_id=f"user-{i}", params={"limit": 10})
            page = await agg.fetch(ctx)
            assert page.errors == []
            await agg.fetch(ctx)  # warm: a view of this user's page is kept
            if i % 1_000 == 999:
                held.append(tracemalloc.get_traced_memory()[0] - base)
        peak = tracemalloc.get_traced_memory()[1] - base
        sizes = _per_key_sizes(agg, cache)
        assert cache.size_bytes <= max_bytes
    assert peak <= max_bytes + FIXED_OVERHEAD, (peak, sizes)
    # Past the first few thousand users nothing grows any more.
    assert max(held[1:]) - min(held[1:]) <= 0.1 * (max_bytes + FIXED_OVERHEAD), held
    assert sizes["key memo"] <= 1024
    assert sizes["views"] <= 256
    assert sizes["view index"] <= 2 * 256
    assert sizes["touched"] <= 256
    assert sizes["single-flight"] == sizes["refreshing"] == 0
    assert sizes["breakers"] == 2
    assert sizes["stuck threads"] == 0


@pytest.mark.anyio
async def test_invalidating_many_users_keeps_the_log_bounded() -> None:
    """One invalidation per user, for many users: the log remembers the last 1,024."""
    cache = MemoryCache()
    async with _aggregator(cache) as agg:
        for i in range(3_000):
            await agg.invalidate("recommended", user_id=f"user-{i}")
            if i % 1_000 == 0:
                await anyio.lowlevel.checkpoint()
        assert len(cache.invalidations._recent) == 1024
        page = await agg.fetch(RequestContext(user_id="user-1"))
    assert page.errors == []
