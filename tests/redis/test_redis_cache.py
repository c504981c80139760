"""RedisCache on a real redis-server: one round trip per page, locks, failing open."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from batchpage import CachePolicy, RedisCache
from batchpage.extend import Entry, KeyPattern
from helpers import FakeClock
from redis_server import RedisServer, Ticker, calls_between, eventually

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

POLICY = CachePolicy(fresh=10, stale=20, stale_if_error=100, jitter=0)
KEY = "bp:{home:v1}:offers:g:-"


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


def entry(clock: FakeClock, payload: bytes = b'["v"]') -> Entry:
    return Entry.create(payload, POLICY, clock())


async def test_entry_round_trips_through_redis(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """What ``set`` writes, ``get_many`` reads back: payload and windows intact."""
    written = entry(fake_clock, b'{"a": [1, 2]}')
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        await cache.set(KEY, written)
        [read] = await cache.get_many([KEY])
    assert read is not None
    assert read.payload == written.payload
    assert (read.fresh_until, read.stale_until, read.error_until) == (
        written.fresh_until,
        written.stale_until,
        written.error_until,
    )


async def test_a_page_of_keys_is_one_mget(redis_server: RedisServer, fake_clock: FakeClock) -> None:
    """Six keys, hits and misses mixed, cost one MGET and no other command."""
    keys = [f"bp:{{home:v1}}:s{i}:g:-" for i in range(6)]
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        for key in keys[:3]:
            await cache.set(key, entry(fake_clock))
        before = redis_server.data_calls()
        entries = await cache.get_many(keys)
        after = redis_server.data_calls()
    assert [e is not None for e in entries] == [True] * 3 + [False] * 3
    assert calls_between(before, after) == {"mget": 1}


async def test_expiry_is_the_entry_remaining_usefulness(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Redis keeps an entry for its longest window (here stale-if-error), no longer."""
    written = entry(fake_clock)  # fresh 10 s, stale until 30 s, usable on error until 110 s
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        await cache.set(KEY, written)
    with redis_server.client() as client:
        ttl_ms = client.pttl(KEY)
    assert 100_000 < ttl_ms <= 110_000


async def test_a_useless_entry_is_not_written(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """An entry past all its windows is skipped, not written with a bogus expiry."""
    old = entry(fake_clock)
    fake_clock.advance(110)
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        await cache.set(KEY, old)
    with redis_server.client() as client:
        assert client.exists(KEY) == 0


async def test_garbage_bytes_are_a_counted_miss(
    redis_server: RedisServer, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not an entry read as a miss, logged without the bytes."""
    with redis_server.client() as client:
        client.set(KEY, b"\x80\x04secret-garbage\nnot an entry")
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        with caplog.at_level(logging.WARNING, logger="batchpage.redis"):
            assert await cache.get_many([KEY]) == [None]
    assert (cache.stats.corrupt, cache.stats.errors, cache.stats.outages) == (1, 0, 0)
    assert len(caplog.records) == 1
    assert "secret-garbage" not in caplog.text


async def test_a_value_of_another_type_is_a_miss(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """A list where an entry should be reads as a miss and does not stop Redis use."""
    with redis_server.client() as client:
        client.rpush(KEY, "x")
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        assert await cache.get_many([KEY, KEY + "x"]) == [None, None]
        await cache.set(KEY, entry(fake_clock))  # SET replaces the list
        [read] = await cache.get_many([KEY])
    assert read is not None
    assert cache.stats.errors == 0


async def test_a_decoding_client_is_refused(redis_server: RedisServer) -> None:
    """Entries are bytes: a client that decodes replies to str is a configuration error."""
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisCache(client)
    finally:
        await client.aclose()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_another_event_loop_is_refused_on_entry(redis_server: RedisServer) -> None:
    """On trio, entering says RedisCache needs asyncio instead of failing open for ever."""
    cache = RedisCache.from_url(redis_server.url)
    with pytest.raises(RuntimeError, match="needs asyncio"):
        async with cache:
            pass


async def test_a_sync_client_is_refused() -> None:
    """A synchronous redis-py client is a type error, not a cache that always misses."""
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        RedisCache(redis.Redis())  # type: ignore[arg-type]


async def test_configuration_errors_name_the_field(redis_server: RedisServer) -> None:
    """A bad back-off is refused at construction, and the message says which argument."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        with pytest.raises(ValueError, match="backoff must be positive"):
            RedisCache(client, backoff=0)
    finally:
        await client.aclose()


async def test_lock_is_exclusive(redis_server: RedisServer, fake_clock: FakeClock) -> None:
    """While one caller holds a key's lock, another gets ``None``."""
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        token = await cache.try_lock(KEY, 5.0)
        second = await cache.try_lock(KEY, 5.0)
    assert token is not None
    assert token != "local"
    assert second is None


async def test_unlock_with_a_foreign_token_keeps_the_lock(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Compare-and-delete: only the holder's token releases the lock."""
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        token = await cache.try_lock(KEY, 5.0)
        assert token is not None
        await cache.unlock(KEY, "someone-else")
        assert await cache.try_lock(KEY, 5.0) is None
        await cache.unlock(KEY, token)
        assert await cache.try_lock(KEY, 5.0) is not None


async def test_lock_lives_in_the_key_slot_and_expires(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """The lock key shares the key's hash tag (one Cluster slot) and has the lock's TTL."""
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        await cache.try_lock(KEY, 2.0)
    lock_key = RedisCache.lock_key(KEY)
    assert key_slot(lock_key.encode()) == key_slot(KEY.encode())
    with redis_server.client() as client:
        assert 0 < client.pttl(lock_key) <= 2000


async def test_wait_for_returns_the_holder_write(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """A waiter gets the entry the lock holder writes."""
    written = entry(fake_clock, b'"filled"')
    async with (
        RedisCache.from_url(redis_server.url, clock=fake_clock) as holder,
        RedisCache.from_url(redis_server.url, clock=fake_clock) as waiter,
    ):
        token = await holder.try_lock(KEY, 10.0)
        assert token is not None
        got: list[Entry | None] = []

        async def wait() -> None:
            got.append(await waiter.wait_for(KEY, 10.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await holder.set(KEY, written)
            await holder.unlock(KEY, token)
    assert got[0] is not None
    assert got[0].payload == b'"filled"'


async def test_wait_for_stops_when_the_lock_goes_without_a_write(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """If the holder gives up, the waiter gets ``None`` and fetches itself."""
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        token = await cache.try_lock(KEY, 10.0)
        assert token is not None
        result: list[Entry | None] = []

        async def wait() -> None:
            result.append(await cache.wait_for(KEY, 10.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await cache.unlock(KEY, token)
    assert result == [None]


async def test_wait_for_ignores_the_expired_entry_being_replaced(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """The expired entry still kept for stale-if-error is not what a waiter waits for."""
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        await cache.set(KEY, entry(fake_clock))
        fake_clock.advance(50)  # past stale (30 s), within stale-if-error (110 s)
        assert await cache.wait_for(KEY, 10.0) is None  # no lock: nobody is writing


async def test_invalidate_deletes_the_prefix_only(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Every key under the prefix goes; its neighbours stay."""
    doomed = [f"bp:{{home:v1}}:offers:u{i}:-" for i in range(25)]
    kept = ["bp:{home:v1}:offersX:g:-", "bp:{home:v2}:offers:g:-"]
    async with RedisCache.from_url(redis_server.url, clock=fake_clock, scan_count=10) as cache:
        for key in doomed + kept:
            await cache.set(key, entry(fake_clock))
        await cache.invalidate("bp:{home:v1}:offers:")
    with redis_server.client() as client:
        assert sorted(k.decode() for k in client.keys("*")) == sorted(kept)


async def test_invalidate_treats_glob_characters_literally(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """``* ? [ ] \\`` in a prefix match themselves, not other keys."""
    prefix = "t:a*b?[c]\\:"
    keys = [prefix + "1", "t:aXXbY[c]\\:2", "t:a*b?c\\:3", "t:a*b?[c]:4"]
    async with RedisCache.from_url(redis_server.url, clock=fake_clock) as cache:
        for key in keys:
            await cache.set(key, entry(fake_clock))
        await cache.invalidate(prefix)
    with redis_server.client() as client:
        assert sorted(k.decode() for k in client.keys("t:*")) == sorted(keys[1:])


async def test_invalidate_publishes_the_prefix(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """Other instances hear of an invalidation on the channel."""
    listener = redis.asyncio.Redis.from_url(redis_server.url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe("test:invalidate")
        async with RedisCache.from_url(
            redis_server.url, clock=fake_clock, channel="test:invalidate"
        ) as cache:
            await cache.invalidate("bp:{home:v1}:offers:")
        message = None
        for _ in range(100):  # skips the subscription's confirmation
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                break
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
    assert message is not None
    # The pattern as a Redis glob: what SCAN MATCH used, and what the listeners match.
    assert message["data"] == b"bp:{home:v1}:offers:*"


async def test_every_method_fails_open_when_redis_is_down(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """No method raises: misses, no-ops, and a local lock so the caller still fetches."""
    cache = RedisCache.from_url(private_redis_server.url, clock=fake_clock)
    private_redis_server.stop()
    async with cache:
        assert await cache.get_many([KEY]) == [None]
        await cache.set(KEY, entry(fake_clock))
        token = await cache.try_lock(KEY, 1.0)
        await cache.unlock(KEY, "local")
        assert await cache.wait_for(KEY, 1.0) is None
        await cache.invalidate("bp:")
    assert token == "local"
    # set, try_lock, wait_for, invalidate skipped; unlocking "local" needs no Redis.
    assert (cache.stats.errors, cache.stats.outages, cache.stats.skipped) == (1, 1, 4)


async def test_back_off_keeps_requests_off_the_network(
    private_redis_server: RedisServer, fake_clock: FakeClock, ticker: Ticker
) -> None:
    """After a failure, Redis is not contacted until the back-off ends, even if it is back."""
    cache = RedisCache.from_url(
        private_redis_server.url, clock=fake_clock, backoff=5.0, monotonic=ticker
    )
    async with cache:
        private_redis_server.stop()
        assert await cache.get_many([KEY]) == [None]
        private_redis_server.start()  # back, but the cache does not know yet
        await cache.set(KEY, entry(fake_clock))
        assert await cache.get_many([KEY]) == [None]
        assert private_redis_server.data_calls() == {}
        assert not cache.available
        ticker.advance(5.0)
        await cache.set(KEY, entry(fake_clock))
        [read] = await cache.get_many([KEY])
    assert read is not None
    assert (cache.stats.errors, cache.stats.skipped) == (1, 2)
    assert private_redis_server.data_calls() == {"set": 1, "mget": 1}


async def test_one_probe_after_the_back_off(
    private_redis_server: RedisServer, fake_clock: FakeClock, ticker: Ticker
) -> None:
    """When the back-off ends, one call tries Redis; concurrent ones keep skipping."""
    cache = RedisCache.from_url(
        private_redis_server.url, clock=fake_clock, backoff=5.0, monotonic=ticker
    )
    private_redis_server.stop()
    async with cache:
        await cache.get_many([KEY])
        ticker.advance(5.0)
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(cache.get_many, [KEY])
    assert (cache.stats.errors, cache.stats.skipped) == (2, 19)


async def test_a_hung_redis_times_out_and_fails_open(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """A Redis that accepts but never answers costs one short timeout, then a miss."""
    async with RedisCache.from_url(
        private_redis_server.url, clock=fake_clock, socket_timeout=0.1
    ) as cache:
        await cache.set(KEY, entry(fake_clock))  # connected while it was well
        private_redis_server.freeze()
        try:
            assert await cache.get_many([KEY]) == [None]
        finally:
            private_redis_server.thaw()
    assert (cache.stats.errors, cache.stats.outages) == (1, 1)


async def test_cancellation_is_not_swallowed(
    private_redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """A caller's cancel scope cancels a Redis call; it is not turned into an error."""
    async with RedisCache.from_url(
        private_redis_server.url, clock=fake_clock, socket_timeout=30
    ) as cache:
        await cache.get_many([KEY])  # connected while it was well
        private_redis_server.freeze()
        try:
            with anyio.move_on_after(0.05) as scope:
                await cache.get_many([KEY])
        finally:
            private_redis_server.thaw()
    assert scope.cancelled_caught
    assert (cache.stats.errors, cache.stats.skipped) == (0, 0)


async def test_invalidation_listener_delivers_prefixes(
    redis_server: RedisServer, fake_clock: FakeClock
) -> None:
    """``listen_invalidations`` hands every published pattern to its callback."""
    heard: list[KeyPattern] = []
    async with (
        RedisCache.from_url(redis_server.url, clock=fake_clock) as listener,
        RedisCache.from_url(redis_server.url, clock=fake_clock) as sender,
        anyio.create_task_group() as tg,
    ):
        await tg.start(listener.listen_invalidations, heard.append)
        await sender.invalidate("bp:{home:v1}:offers:")
        await eventually(lambda: bool(heard))
        tg.cancel_scope.cancel()
    assert heard == [KeyPattern.prefix("bp:{home:v1}:offers:")]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"clock": 5}, TypeError, "clock must be callable"),
        ({"monotonic": "now"}, TypeError, "monotonic must be callable"),
        ({"channel": ""}, ValueError, "channel must be a non-empty str"),
        ({"scan_count": 0}, ValueError, "scan_count must be a positive int"),
        ({"command_timeout": 0}, ValueError, "command_timeout must be positive"),
        ({"command_timeout": 2, "hard_timeout": 1}, ValueError, "hard_timeout must be at least"),
    ],
)
async def test_every_setting_is_checked_naming_it(
    redis_server: RedisServer, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """A RedisCache that could not work is refused at construction."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        with pytest.raises(error, match=match):
            RedisCache(client, **kwargs)
    finally:
        await client.aclose()


async def test_closing_ends_the_commands_nobody_waits_for(
    private_redis_server: RedisServer,
) -> None:
    """A command still running (Redis frozen) is ended with the cache: nothing outlives it."""
    cache = RedisCache.from_url(private_redis_server.url, socket_timeout=30)
    async with cache:
        await cache.get_many(["k"])
        private_redis_server.freeze()
        try:
            assert await cache.get_many(["k"]) == [None]  # over budget: given up on
            assert cache.in_flight == 1
        finally:
            closing_started = anyio.current_time()
    private_redis_server.thaw()
    assert cache.in_flight == 0
    assert anyio.current_time() - closing_started < 5
