"""LayeredCache on a real redis-server: memory first, one MGET for the rest, pub/sub."""

from __future__ import annotations

import anyio
import pytest

from batchpage import (
    Aggregator,
    CachePolicy,
    CacheStatus,
    InvalidationIncomplete,
    LayeredCache,
    MemoryCache,
    RedisCache,
    RequestContext,
    Scope,
    Section,
)
from batchpage.extend import Entry
from helpers import FakeClock, Recorder
from redis_server import RedisServer, Ticker, calls_between, eventually, layered_cache

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

POLICY = CachePolicy(fresh=10, stale=20, stale_if_error=100, jitter=0)
PREFIX = "bp:{home:v1}:"
K1 = PREFIX + "offers:g:-"
K2 = PREFIX + "events:g:-"
NAMES = ["featuredProducts", "newArrivals", "featuredStores", "featuredEvents", "offers", "flash"]


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


def entry(clock: FakeClock, payload: bytes = b'"v"') -> Entry:
    return Entry.create(payload, POLICY, clock())


def sections(scope: Scope = Scope.GLOBAL) -> list[Section]:
    return [
        Section(
            name=name, source=Recorder([name]), cache=POLICY, scope=scope, breaker=None, timeout=5
        )
        for name in NAMES
    ]


def instance(
    server: RedisServer, clock: FakeClock, parts: list[Section], **redis_options: object
) -> Aggregator:
    """One application instance: an aggregator over its own memory and the shared Redis."""
    return Aggregator(parts, page="home", cache=layered_cache(server, clock, **redis_options))


def layers(agg: Aggregator) -> LayeredCache:
    assert isinstance(agg.cache, LayeredCache)
    return agg.cache


# -- reads --------------------------------------------------------------------


async def test_fresh_memory_entries_make_no_redis_call(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Keys memory answers fresh are not looked up in Redis at all."""
    async with layered_cache(redis_server, fake_clock) as cache:
        await cache.set(K1, entry(fake_clock))
        before = redis_server.data_calls()
        [got] = await cache.get_many([K1])
        after = redis_server.data_calls()
    assert got is not None
    assert calls_between(before, after) == {}


async def test_only_what_memory_cannot_answer_goes_to_redis(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """One MGET, for the keys memory misses, not for the ones it has fresh."""
    async with layered_cache(redis_server, fake_clock) as cache:
        cache.memory.put(K1, entry(fake_clock))
        before = redis_server.data_calls()
        await cache.get_many([K1, K2])
        after = redis_server.data_calls()
    assert calls_between(before, after) == {"mget": 1}
    assert cache.redis.stats.hits + cache.redis.stats.misses == 1


async def test_a_redis_hit_fills_memory(redis_server: RedisServer, fake_clock: FakeClock) -> None:
    """An entry found in Redis is kept in memory, so the next read needs no Redis."""
    async with (
        layered_cache(redis_server, fake_clock) as writer,
        layered_cache(redis_server, fake_clock) as reader,
    ):
        await writer.set(K1, entry(fake_clock, b'"shared"'))
        [first] = await reader.get_many([K1])
        before = redis_server.data_calls()
        [second] = await reader.get_many([K1])
        after = redis_server.data_calls()
    assert first is not None
    assert second is not None
    assert second.payload == b'"shared"'
    assert calls_between(before, after) == {}
    assert reader.stats.memory_fills == 1


async def test_a_fresher_redis_entry_replaces_a_stale_memory_one(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """When memory is stale and Redis has a newer entry, the newer one wins."""
    async with (
        layered_cache(redis_server, fake_clock) as writer,
        layered_cache(redis_server, fake_clock) as reader,
    ):
        reader.memory.put(K1, entry(fake_clock, b'"old"'))
        fake_clock.advance(15)  # the old entry is stale
        await writer.set(K1, entry(fake_clock, b'"new"'))
        [got] = await reader.get_many([K1])
        kept = reader.memory.get(K1)
    assert got is not None
    assert got.payload == b'"new"'
    assert kept is not None
    assert kept.payload == b'"new"'


async def test_a_stale_memory_entry_beats_nothing_in_redis(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """If Redis has nothing better, the stale memory entry is still served."""
    async with layered_cache(redis_server, fake_clock) as cache:
        cache.memory.put(K1, entry(fake_clock, b'"old"'))
        fake_clock.advance(15)
        [got] = await cache.get_many([K1])
    assert got is not None
    assert got.payload == b'"old"'


async def test_writes_go_to_both_layers(redis_server: RedisServer, fake_clock: FakeClock) -> None:
    """``set`` stores in memory and in Redis."""
    async with layered_cache(redis_server, fake_clock) as cache:
        await cache.set(K1, entry(fake_clock))
    assert cache.memory.get(K1) is not None
    with redis_server.client() as client:
        assert client.exists(K1) == 1


async def test_entering_with_redis_down_still_serves_memory(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """A down Redis neither blocks start-up nor loses what memory holds."""
    cache = layered_cache(private_redis_server, fake_clock)
    private_redis_server.stop()
    with anyio.fail_after(10):
        async with cache:
            await cache.set(K1, entry(fake_clock))
            got = await cache.get_many([K1, K2])
    assert got[0] is not None
    assert got[1] is None


# -- invalidation through pub/sub ---------------------------------------------


async def test_invalidation_reaches_another_instance_memory(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Invalidating on one instance deletes in Redis and drops the other's memory entry."""
    async with (
        layered_cache(redis_server, fake_clock) as one,
        layered_cache(redis_server, fake_clock) as other,
    ):
        await one.set(K1, entry(fake_clock))
        await other.get_many([K1])  # now in the other's memory
        other.memory.put(K2, entry(fake_clock))  # not under the prefix
        assert other.memory.get(K1) is not None
        await one.invalidate(PREFIX + "offers:")
        await eventually(lambda: other.memory.get(K1) is None)
        assert other.memory.get(K2) is not None
    with redis_server.client() as client:
        assert client.exists(K1) == 0


async def test_the_listener_survives_a_redis_restart(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """After Redis comes back, invalidations reach the other instance again."""
    async with (
        layered_cache(private_redis_server, fake_clock, backoff=0.05) as one,
        layered_cache(private_redis_server, fake_clock, backoff=0.05) as other,
    ):
        private_redis_server.stop()
        private_redis_server.start()
        await eventually(lambda: other.redis.stats.resubscribes >= 1)
        other.memory.put(K1, entry(fake_clock))
        await eventually(lambda: one.redis.available)
        await one.invalidate(PREFIX + "offers:")
        await eventually(lambda: other.memory.get(K1) is None)


async def test_a_lost_subscription_empties_memory(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Invalidations sent while unsubscribed are lost, so memory is dropped on return."""
    async with layered_cache(redis_server, fake_clock, backoff=0.05) as cache:
        cache.memory.put(K1, entry(fake_clock))
        with redis_server.client() as client:
            client.client_kill_filter(_type="pubsub")
        await eventually(lambda: cache.stats.memory_flushes == 1)
        assert len(cache.memory) == 0


async def test_exit_closes_the_subscription(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """The listener lives only while the cache is entered."""

    def subscribers() -> int:
        with redis_server.client() as client:
            [(_, count)] = client.pubsub_numsub("batchpage:invalidate")
        return int(count)

    async with layered_cache(redis_server, fake_clock):
        assert subscribers() == 1
    await eventually(lambda: subscribers() == 0)


# -- through an aggregator ----------------------------------------------------


async def test_a_warm_page_from_redis_is_one_mget(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Six sections in Redis, none in memory: one MGET and no other data command."""
    parts = sections()
    async with (
        instance(redis_server, fake_clock, parts) as one,
        instance(redis_server, fake_clock, parts) as other,
    ):
        await one.fetch()
        before = redis_server.data_calls()
        page = await other.fetch()
        after = redis_server.data_calls()
    assert {r.cache for r in page.results.values()} == {CacheStatus.HIT}
    assert page.sections == {name: [name] for name in NAMES}
    assert calls_between(before, after) == {"mget": 1}


async def test_a_warm_page_from_memory_makes_no_redis_command(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Once memory holds every section fresh, a page costs Redis nothing."""
    async with instance(redis_server, fake_clock, sections()) as agg:
        await agg.fetch()
        before = redis_server.data_calls()
        page = await agg.fetch()
        after = redis_server.data_calls()
    assert {r.cache for r in page.results.values()} == {CacheStatus.HIT}
    assert calls_between(before, after) == {}


async def test_a_page_answered_from_its_view_counts_memory_hits_and_costs_redis_nothing(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """The third warm page comes from the view kept in memory: no command, hits counted."""
    async with instance(redis_server, fake_clock, sections()) as agg:
        await agg.fetch()
        await agg.fetch()  # every entry fresh in memory: a view is kept
        hits = layers(agg).stats.memory_hits
        before = redis_server.data_calls()
        page = await agg.fetch()
        after = redis_server.data_calls()
    assert page._warm is not None  # answered from the view
    assert calls_between(before, after) == {}
    assert layers(agg).stats.memory_hits == hits + len(NAMES)
    assert page.sections == {name: [name] for name in NAMES}


async def test_another_instances_invalidation_drops_the_view(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Pub/sub drops the memory entry, and with it the view: the next page fetches again."""
    parts = sections()
    async with (
        instance(redis_server, fake_clock, parts) as one,
        instance(redis_server, fake_clock, parts) as other,
    ):
        for _ in range(3):
            viewed = await one.fetch()
        assert viewed._warm is not None
        await other.invalidate(NAMES[0])
        key = one.key_for(parts[0], RequestContext())
        await eventually(lambda: layers(one).memory.get(key) is None)
        page = await one.fetch()
    assert page._warm is None
    assert page.results[NAMES[0]].cache is CacheStatus.MISS
    assert {page.results[n].cache for n in NAMES[1:]} == {CacheStatus.HIT}


async def test_corrupt_and_wrong_type_entries_are_misses(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Garbage bytes and a list at a section's key: fetched from the source and rewritten."""
    parts = sections()
    agg = instance(redis_server, fake_clock, parts)
    garbage, listed = (agg.key_for(s, RequestContext()) for s in parts[:2])
    with redis_server.client() as client:
        client.set(garbage, b"\x00\xffnot json, not an entry")
        client.rpush(listed, "x")
    async with agg:
        page = await agg.fetch()
    assert page.status_code == 200
    assert page.sections == {name: [name] for name in NAMES}
    assert {page.results[s.name].cache for s in parts[:2]} == {CacheStatus.MISS}
    # Read twice: by the page, and again by the filler once it holds the lock.
    assert layers(agg).redis.stats.corrupt == 2
    with redis_server.client() as client:
        assert client.type(listed) == b"string"
        raw = client.get(garbage)
    assert raw is not None
    assert Entry.loads(raw).payload == b'["featuredProducts"]'


async def test_pages_are_served_through_a_redis_outage(
    private_redis_server: RedisServer, fake_clock: FakeClock, ticker: Ticker
) -> None:
    """Redis stopped: 50 pages are served from memory and sources for one counted error."""
    parts = sections(Scope.USER)
    async with instance(private_redis_server, fake_clock, parts, monotonic=ticker) as agg:
        await agg.fetch(RequestContext(user_id="known"))
        private_redis_server.stop()
        pages = [await agg.fetch(RequestContext(user_id=f"u{i}")) for i in range(50)]
        known = await agg.fetch(RequestContext(user_id="known"))
    assert all(p.status_code == 200 and not p.errors for p in pages)
    assert all(p.sections == {name: [name] for name in NAMES} for p in pages)
    assert {r.cache for r in known.results.values()} == {CacheStatus.HIT}
    assert layers(agg).redis.stats.errors == 1


async def test_redis_is_used_again_after_the_back_off(
    private_redis_server: RedisServer, fake_clock: FakeClock, ticker: Ticker
) -> None:
    """During the back-off Redis is not contacted even if it is back; after it, it is."""
    parts = sections(Scope.USER)
    async with instance(
        private_redis_server, fake_clock, parts, monotonic=ticker, backoff=5.0
    ) as agg:
        private_redis_server.stop()
        await agg.fetch(RequestContext(user_id="a"))
        private_redis_server.start()
        await agg.fetch(RequestContext(user_id="b"))
        assert private_redis_server.data_calls() == {}
        ticker.advance(5.0)
        await agg.fetch(RequestContext(user_id="c"))
    calls = private_redis_server.data_calls()
    # The page's read, then one re-read per section by its filler once it holds the lock.
    assert calls["mget"] == 1 + len(NAMES)
    assert calls["set"] == 2 * len(NAMES)  # a lock and an entry per section
    with private_redis_server.client() as client:
        assert client.exists(agg.key_for(parts[0], RequestContext(user_id="c"))) == 1


async def test_user_input_cannot_reach_another_key(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """User ids with ``*``, ``:`` or ``{`` get keys of their own, and only theirs is dropped."""
    parts = sections(Scope.USER)[:1]
    users = ["alice", "*", "a:b", "{home:v1}", "alice*"]
    async with instance(redis_server, fake_clock, parts) as agg:
        for user in users:
            await agg.fetch(RequestContext(user_id=user))
        keys = {u: agg.key_for(parts[0], RequestContext(user_id=u)) for u in users}
        await agg.invalidate(parts[0].name, user_id="*")
    assert len(set(keys.values())) == len(users)
    for key in keys.values():
        assert key.startswith("batchpage:{home:v1:u")
        assert key.count("{") == key.count("}") == 1
        assert key.count(":") == 5  # prefix, tag (page:version:scope), section, params
        assert "*" not in key
    with redis_server.client() as client:
        left = {k.decode() for k in client.keys("batchpage:*")}
    assert left == {keys[u] for u in users if u != "*"}


async def test_invalidation_that_misses_redis_is_reported(
    private_redis_server: RedisServer, fake_clock: FakeClock, ticker: Ticker
) -> None:
    """With Redis down, invalidate drops memory and raises, so the caller can retry."""
    parts = sections()
    async with instance(private_redis_server, fake_clock, parts, monotonic=ticker) as agg:
        await agg.fetch()
        private_redis_server.stop()
        with pytest.raises(InvalidationIncomplete, match="retry"):
            await agg.invalidate(NAMES[0])
        assert layers(agg).memory.get(agg.key_for(parts[0], RequestContext())) is None
        private_redis_server.start()
        ticker.advance(60)
        await agg.invalidate(NAMES[0])  # reaches Redis again: no error


async def test_a_redis_restart_is_not_an_outage(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Pooled connections that died with a restart are replaced at once, without an error."""
    parts = sections()
    async with instance(private_redis_server, fake_clock, parts) as agg:
        await agg.fetch()
        private_redis_server.stop()
        private_redis_server.start()
        fake_clock.advance(3600)  # every entry expired: the page must read and write Redis
        page = await agg.fetch()
        stats = layers(agg).redis.stats
    assert page.status_code == 200
    assert (stats.errors, stats.outages) == (0, 0)
    assert private_redis_server.data_calls()["mget"] >= 1


async def test_memory_ttl_sends_reads_back_to_redis(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Past the memory layer's ttl, a fresh entry is read from Redis again and refills memory."""
    memory = MemoryCache(ttl=1, clock=fake_clock)
    redis = RedisCache.from_url(redis_server.url, clock=fake_clock)
    async with LayeredCache(memory, redis) as cache:
        await cache.set(K1, entry(fake_clock))
        fake_clock.advance(2)  # still fresh by its policy, gone from memory by the ttl
        assert memory.get(K1) is None
        before = redis_server.data_calls()
        [got] = await cache.get_many([K1])
        after = redis_server.data_calls()
    assert got is not None
    assert calls_between(before, after) == {"mget": 1}
    assert memory.get(K1) is not None


async def test_prometheus_reports_the_cache_layers_and_redis_health(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """At scrape time: each layer's own counters, and whether Redis is reachable."""
    from prometheus_client import CollectorRegistry

    from batchpage import Aggregator, CachePolicy, Section
    from batchpage.contrib.prometheus import PrometheusObserver

    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry=registry)
    cache = layered_cache(private_redis_server, fake_clock, backoff=60)
    section = Section(name="a", source=Recorder(1), cache=CachePolicy(fresh=10))
    async with Aggregator([section], page="ops", cache=cache, observers=[metrics]) as agg:
        metrics.watch(agg)
        await agg.fetch()
        assert registry.get_sample_value("batchpage_cache_up", {"layer": "redis"}) == 1
        writes = {"layer": "redis", "result": "writes"}
        assert registry.get_sample_value("batchpage_cache_operations_total", writes) == 1
        fills = {"layer": "layered", "result": "redis_reads"}
        assert (registry.get_sample_value("batchpage_cache_operations_total", fills) or 0) >= 1
        private_redis_server.stop()
        await agg.fetch(RequestContext(params={"p": 1}))  # a miss: Redis is gone
        assert registry.get_sample_value("batchpage_cache_up", {"layer": "redis"}) == 0
