"""Grey failure with a real Redis: slow, frozen, full, racing, and written by someone else.

Bounds on wall time in this file are the behaviour itself (a page answers by
its deadline). Each allows ``SLACK`` seconds beyond the deadline: the time to
schedule the tasks that end the page on a loaded two-core machine, which
is far below the stuck or doubled latencies these tests catch.
"""

from __future__ import annotations

import time

import anyio
import pytest
import redis.asyncio

from batchpage import (
    Aggregator,
    BreakerPolicy,
    BreakerState,
    CachePolicy,
    CacheStatus,
    LayeredCache,
    MemoryCache,
    RedisCache,
    RequestContext,
    Scope,
    Section,
)
from batchpage.extend import Entry
from helpers import FakeClock, Recorder
from redis_server import RedisServer, calls_between, layered_cache

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

SLACK = 0.15
POLICY = CachePolicy(fresh=10, stale=100, stale_if_error=1000, jitter=0)


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


def info(server: RedisServer, field: str) -> int:
    with server.client() as client:
        value: int = client.info()[field]
    return value


# -- 3. a slow or frozen Redis is a down Redis, and never holds a page ----------


async def test_a_frozen_redis_without_socket_timeouts_cannot_hang_a_page(
    private_redis_server: RedisServer,
) -> None:
    """Redis accepts and never answers; the client has no timeouts: the page still answers."""
    client = redis.asyncio.Redis.from_url(private_redis_server.url)  # no socket timeouts
    cache = LayeredCache(MemoryCache(), RedisCache(client, owns_client=True, hard_timeout=1.0))
    source = Recorder("fresh", delay=0.05)
    section = Section(name="a", source=source, timeout=0.3, cache=POLICY)
    async with Aggregator([section], page="grey-redis", cache=cache, page_timeout=0.5) as agg:
        private_redis_server.freeze()
        try:
            start = time.monotonic()
            page = await agg.fetch()
            elapsed = time.monotonic() - start
        finally:
            private_redis_server.thaw()
    assert page.status_code == 200
    assert page.sections["a"] == "fresh"  # the source got its own time, not Redis's
    assert elapsed < 0.5 + SLACK
    assert cache.redis.stats.slow >= 1
    assert cache.redis.stats.outages == 1


async def test_a_slow_redis_does_not_spend_the_source_timeout(
    private_redis_server: RedisServer,
) -> None:
    """Every Redis call misses its budget; the source is still called and answers."""
    cache = layered_cache(private_redis_server, time.time)
    source = Recorder("fresh", delay=0.2)
    section = Section(name="a", source=source, timeout=0.3, cache=POLICY)
    async with Aggregator([section], page="grey-redis", cache=cache) as agg:
        private_redis_server.freeze()
        try:
            pages = [await agg.fetch(RequestContext(user_id=str(i))) for i in range(3)]
        finally:
            private_redis_server.thaw()
    assert [p.sections["a"] for p in pages] == ["fresh", "fresh", "fresh"]
    assert pages[0].results["a"].cache is CacheStatus.MISS
    assert not cache.redis.available  # marked down: the next pages skip it


async def test_a_command_given_up_on_keeps_its_connection(
    private_redis_server: RedisServer,
) -> None:
    """A page stops waiting for a slow MGET; the command finishes and its connection is reused."""
    cache = RedisCache.from_url(private_redis_server.url, backoff=0.01)
    async with cache:
        await cache.get_many(["k"])  # one pooled connection
        opened = info(private_redis_server, "total_connections_received")
        private_redis_server.freeze()
        try:
            with anyio.move_on_after(0.05):
                await cache.get_many(["k"])
            await anyio.sleep(0.2)
        finally:
            private_redis_server.thaw()
        with anyio.fail_after(5):
            while cache.in_flight:  # noqa: ASYNC110 - the detached command ends on its own
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)  # past the back-off
        assert await cache.get_many(["k"]) == [None]
        # One more: the connection info() itself opens to ask.
        assert info(private_redis_server, "total_connections_received") == opened + 1


async def test_the_page_deadline_bounds_cache_io(private_redis_server: RedisServer) -> None:
    """page_timeout=0.5 with Redis frozen mid-page: the page answers by 0.5 s."""
    cache = layered_cache(private_redis_server, time.time)
    sections = [
        Section(name="a", source=Recorder("a", delay=0.01), timeout=2, cache=POLICY),
        Section(name="b", source=Recorder("b", delay=0.4), timeout=2, cache=POLICY),
    ]
    async with Aggregator(sections, page="grey-redis", cache=cache, page_timeout=0.5) as agg:
        durations = []
        for i in range(4):
            if i == 1:
                private_redis_server.freeze()
            start = time.monotonic()
            page = await agg.fetch(RequestContext(params={"i": i}))
            durations.append(time.monotonic() - start)
            assert page.status_code == 200
            for error in page.errors:
                assert "-" not in error.message  # never a negative time
    private_redis_server.thaw()
    assert max(durations) < 0.5 + SLACK, durations


async def test_a_lock_granted_after_the_caller_gave_up_is_released(
    private_redis_server: RedisServer,
) -> None:
    """The SET NX lands after its budget: nobody holds that lock, so it is deleted at once."""
    cache = RedisCache.from_url(private_redis_server.url, backoff=0.01)
    async with cache:
        private_redis_server.freeze()
        try:
            token = await cache.try_lock("k", 30)
        finally:
            private_redis_server.thaw()
        assert token == "local"  # Redis did not answer in time: fill without it
        with anyio.fail_after(5):
            while cache.in_flight:  # noqa: ASYNC110 - the late unlock ends on its own
                await anyio.sleep(0.01)
        with private_redis_server.client() as client:
            assert client.exists(cache.lock_key("k")) == 0


# -- 4. invalidation wins over a fill in flight, across instances ---------------


async def test_an_invalidation_on_another_instance_beats_an_in_flight_fill(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Instance A reads the old row; B invalidates; A's old value is stored nowhere."""
    row = {"value": "old"}
    started = anyio.Event()

    async def source(ctx: RequestContext) -> str:
        value = row["value"]
        started.set()
        await anyio.sleep(0.3)
        return value

    def instance() -> Aggregator:
        section = Section(name="a", source=source, timeout=5, cache=POLICY, breaker=None)
        return Aggregator([section], page="race", cache=layered_cache(redis_server, fake_clock))

    async with instance() as a, instance() as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.fetch)
            await started.wait()
            row["value"] = "new"
            await b.invalidate("a")
        assert a.stats.writes_dropped == 1
        page_a, page_b = await a.fetch(), await b.fetch()
    assert page_a.sections["a"] == "new"
    assert page_b.sections["a"] == "new"


# -- 5. an open breaker costs a stale page nothing but its read ----------------


async def test_a_stale_page_with_an_open_breaker_is_one_redis_command(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """No lock, no re-read, no unlock for a refresh that would not be made."""
    source = Recorder("v")
    section = Section(
        name="a",
        source=source,
        cache=POLICY,
        breaker=BreakerPolicy(failure_threshold=1, reset_timeout=600),
    )
    cache = RedisCache.from_url(redis_server.url, clock=fake_clock)
    async with Aggregator([section], page="grey-redis", cache=cache) as agg:
        await agg.fetch()
        fake_clock.advance(11)
        source.fail = True
        await agg.fetch()
        await agg.settle()
        with anyio.fail_after(5):
            while cache.in_flight:  # noqa: ASYNC110 - the refresh's unlock ends on its own
                await anyio.sleep(0.01)
        assert agg._breakers["a"].state is BreakerState.OPEN
        before = redis_server.data_calls()
        for _ in range(10):
            page = await agg.fetch()
            assert page.results["a"].cache is CacheStatus.STALE
        await agg.settle()
        assert calls_between(before, redis_server.data_calls()) == {"mget": 10}


# -- 6. a refused write does not stop reads --------------------------------------


async def test_a_full_redis_still_serves_what_it_holds(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Under maxmemory + noeviction writes fail; a stored user still gets 50 hits in 50."""
    source = Recorder("v")
    section = Section(name="a", source=source, cache=POLICY, scope=Scope.USER, breaker=None)
    cache = RedisCache.from_url(private_redis_server.url, clock=fake_clock)
    async with Aggregator([section], page="grey-redis", cache=cache) as agg:
        await agg.fetch(RequestContext(user_id="stored"))
        with private_redis_server.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", max(1, int(client.info()["used_memory"]) - 10_000))
        statuses = []
        for i in range(50):
            await agg.fetch(RequestContext(user_id=f"new{i}"))  # a miss whose write fails
            page = await agg.fetch(RequestContext(user_id="stored"))
            statuses.append(page.results["a"].cache)
        with private_redis_server.client() as client:
            client.config_set("maxmemory", 0)
    assert statuses == [CacheStatus.HIT] * 50
    assert cache.stats.refused >= 1
    assert cache.stats.outages == 0


# -- 7. a waiter polls the lock, not the value ------------------------------------


async def test_a_waiter_does_not_download_the_value_on_every_poll(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """A 1 MiB expired entry sits in Redis while another instance holds the lock."""
    payload = b'"' + b"x" * (1 << 20) + b'"'
    entry = Entry(
        payload,
        stored_at=fake_clock.now - 100,
        fresh_until=fake_clock.now - 50,
        stale_until=fake_clock.now - 40,
        error_until=fake_clock.now + 1000,
    )
    async with (
        RedisCache.from_url(redis_server.url, clock=fake_clock) as holder,
        RedisCache.from_url(redis_server.url, clock=fake_clock) as waiter,
    ):
        await holder.set("big", entry)
        token = await holder.try_lock("big", 30)
        assert token is not None
        sent = info(redis_server, "total_net_output_bytes")
        assert await waiter.wait_for("big", 0.5) is None  # the holder never wrote
        pulled = info(redis_server, "total_net_output_bytes") - sent
    assert pulled < 64_000, f"{pulled} bytes sent to a waiter of a 1 MiB value"


# -- 10. bytes from the shared store are checked before they enter a page ---------


async def test_a_forged_payload_cannot_write_into_the_page(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """A Redis value that closes its section early is refused, counted, and refetched."""
    source = Recorder({"ok": True})
    section = Section(name="a", source=source, cache=POLICY)
    cache = RedisCache.from_url(redis_server.url, clock=fake_clock)
    async with Aggregator([section], page="forge", cache=cache) as agg:
        key = agg.key_for(section, RequestContext())
        now = fake_clock.now
        forged = b'bp1 %r %r %r %r\n1},"injected":{"admin":true' % (
            now,
            now + 60,
            now + 60,
            now + 60,
        )
        with redis_server.client() as client:
            client.set(key, forged)
        page = await agg.fetch()
    body = page.to_json()
    assert b"injected" not in body
    assert page.results["a"].cache is CacheStatus.MISS
    assert page.sections["a"] == {"ok": True}
    assert cache.stats.corrupt >= 1  # the page's read, and the fill's read under its lock


@pytest.mark.parametrize(
    "payload",
    [b"1}", b'{"a":1', b"NaN", b"1 2", b"\xff", b"", b'"unterminated', b"[" * 100_000],
)
def test_an_entry_with_a_payload_that_is_not_one_json_value_is_refused(payload: bytes) -> None:
    """The shared-store format checks the payload, whatever else is right."""
    data = b"bp1 1.0 2.0 3.0 4.0\n" + payload
    with pytest.raises((ValueError, RecursionError)):
        Entry.loads(data)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the loop's exception handler is asyncio's
async def test_a_detached_command_that_fails_leaves_no_unretrieved_exception() -> None:
    """An unlock nobody awaits that fails (Redis went away) is retrieved, not left to asyncio's
    "Task exception was never retrieved" when the task is collected."""
    import asyncio
    import gc

    from batchpage._redis import _retrieved

    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:

        async def unlock() -> None:
            raise ConnectionError("Connection closed by server.")

        task = loop.create_task(unlock())
        task.add_done_callback(_retrieved)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert task.done()
        del task
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
