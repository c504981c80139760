"""Two aggregators with their own memory on one Redis: two instances of an application."""

from __future__ import annotations

import anyio
import pytest

from batchpage import (
    Aggregator,
    CachePolicy,
    CacheStatus,
    LayeredCache,
    PageResult,
    RequestContext,
    Section,
)
from helpers import FakeClock, Recorder
from redis_server import RedisServer, calls_between, eventually, layered_cache

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

POLICY = CachePolicy(fresh=10, stale=20, stale_if_error=100, jitter=0)
NAMES = ["featuredProducts", "newArrivals", "featuredStores", "featuredEvents", "offers", "flash"]


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


def sources(delay: float = 0.0) -> dict[str, Recorder]:
    return {name: Recorder([name], delay=delay) for name in NAMES}


def sections(recorders: dict[str, Recorder]) -> list[Section]:
    """The page's definition, shared by both instances (and so are the call counters)."""
    return [
        Section(name=name, source=source, cache=POLICY, breaker=None, timeout=10)
        for name, source in recorders.items()
    ]


def instance(server: RedisServer, clock: FakeClock, parts: list[Section]) -> Aggregator:
    return Aggregator(parts, page="home", cache=layered_cache(server, clock))


def statuses(page: PageResult) -> set[CacheStatus]:
    return {r.cache for r in page.results.values()}


async def both(one: Aggregator, other: Aggregator) -> tuple[PageResult, PageResult]:
    """The same page requested on both instances at once."""
    pages: dict[int, PageResult] = {}

    async def fetch(i: int, agg: Aggregator) -> None:
        pages[i] = await agg.fetch(RequestContext())

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch, 0, one)
        tg.start_soon(fetch, 1, other)
    return pages[0], pages[1]


async def test_a_cold_page_on_two_instances_calls_each_source_once(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Concurrent cold pages: one instance fetches each section, the other waits for it."""
    recorders = sources(delay=0.5)
    parts = sections(recorders)
    async with (
        instance(redis_server, fake_clock, parts) as one,
        instance(redis_server, fake_clock, parts) as other,
    ):
        first, second = await both(one, other)
    assert first.sections == second.sections == {name: [name] for name in NAMES}
    assert statuses(first) == statuses(second) == {CacheStatus.MISS}
    assert {name: r.calls for name, r in recorders.items()} == dict.fromkeys(NAMES, 1)


async def test_the_waiting_instance_keeps_what_it_waited_for(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """After a shared cold fill, both instances answer the page from memory."""
    parts = sections(sources(delay=0.5))
    async with (
        instance(redis_server, fake_clock, parts) as one,
        instance(redis_server, fake_clock, parts) as other,
    ):
        await both(one, other)
        before = redis_server.data_calls()
        again = await both(one, other)
        after = redis_server.data_calls()
    assert all(statuses(p) == {CacheStatus.HIT} for p in again)
    assert calls_between(before, after) == {}


async def test_a_stale_entry_is_refreshed_once_across_instances(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Both instances serve STALE at once; only one of them calls the source."""
    recorders = sources(delay=0.5)
    parts = sections(recorders)
    async with (
        instance(redis_server, fake_clock, parts) as one,
        instance(redis_server, fake_clock, parts) as other,
    ):
        await one.fetch()
        await other.fetch()  # from Redis, into its memory
        fake_clock.advance(15)  # stale on both
        first, second = await both(one, other)
        with anyio.fail_after(10):
            await one.settle()
            await other.settle()
        refreshed = await other.fetch()
    assert statuses(first) == statuses(second) == {CacheStatus.STALE}
    assert one.stats.refreshes + other.stats.refreshes == len(NAMES)
    assert one.stats.refreshes_skipped + other.stats.refreshes_skipped == len(NAMES)
    assert {name: r.calls for name, r in recorders.items()} == dict.fromkeys(NAMES, 2)
    assert statuses(refreshed) == {CacheStatus.HIT}


async def test_stale_if_error_works_across_instances(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """An entry one instance wrote stands in on the other when the source fails."""
    recorders = sources()
    parts = sections(recorders)
    async with (
        instance(redis_server, fake_clock, parts) as one,
        instance(redis_server, fake_clock, parts) as other,
    ):
        await one.fetch()
        fake_clock.advance(50)  # past fresh + stale (30 s), within stale-if-error (110 s)
        for recorder in recorders.values():
            recorder.fail = True
        page = await other.fetch()
    assert page.status_code == 200
    assert statuses(page) == {CacheStatus.STALE_IF_ERROR}
    assert page.sections == {name: [name] for name in NAMES}
    assert all(r.stand_in for r in page.results.values())


async def test_an_invalidation_on_one_instance_refetches_on_the_other(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """After one instance invalidates a section, the other fetches it anew."""
    recorders = sources()
    parts = sections(recorders)
    async with (
        instance(redis_server, fake_clock, parts) as one,
        instance(redis_server, fake_clock, parts) as other,
    ):
        await one.fetch()
        await other.fetch()
        cache = other.cache
        assert isinstance(cache, LayeredCache)
        key = other.key_for(parts[0], RequestContext())
        await one.invalidate(NAMES[0])
        await eventually(lambda: cache.memory.get(key) is None)
        page = await other.fetch()
    assert page.results[NAMES[0]].cache is CacheStatus.MISS
    assert recorders[NAMES[0]].calls == 2
