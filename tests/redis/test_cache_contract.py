"""One behavioural contract, every ``Cache``: memory, Redis, and memory over Redis.

A new backend joins the ``cache`` fixture's parameters and is held to the
same rules (the :class:`batchpage.Cache` docstring lists them). Redis and
memory over Redis run twice: on a single Redis and on a Redis Cluster (3
masters, 3 replicas), each found by ``RedisCache.from_url`` itself. The
``frozen`` tests run with the store not answering at all.

Keys carry a ``{hash tag}``, as every key batchpage builds does: on a
cluster a key and its lock must share a slot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from batchpage import CachePolicy, LayeredCache, MemoryCache, RedisCache
from batchpage.extend import Cache, Entry, KeyPattern
from helpers import FakeClock
from redis_cluster import RedisClusterServer
from redis_server import RedisServer

pytestmark = pytest.mark.anyio

POLICY = CachePolicy(fresh=10, stale=20, stale_if_error=0, jitter=0)
_REDIS = pytest.mark.redis
_CLUSTER = (pytest.mark.redis, pytest.mark.cluster)
KINDS = [
    pytest.param("memory"),
    pytest.param("redis", marks=_REDIS),
    pytest.param("layered", marks=_REDIS),
    pytest.param("redis-cluster", marks=_CLUSTER),
    pytest.param("layered-cluster", marks=_CLUSTER),
]
#: Hash tags whose slots lie on every master of a three-master cluster.
TAGS = ("a", "b", "c", "d", "e", "f")
#: A store that does not answer costs a call at most this long (seconds):
#: the command budget (0.1 s) plus scheduling on a loaded machine.
BUDGET_BOUND = 0.1 + 0.15


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


def _build(
    kind: str, server: RedisServer | RedisClusterServer | None, clock: Callable[[], float]
) -> Cache:
    if kind == "memory":
        return MemoryCache(clock=clock)
    assert server is not None
    redis = RedisCache.from_url(server.url, clock=clock, backoff=0.05)
    if kind.startswith("redis"):
        return redis
    return LayeredCache(MemoryCache(clock=clock), redis)


def _redis_of(cache: Cache) -> RedisCache | None:
    if isinstance(cache, LayeredCache):
        return cache.redis
    return cache if isinstance(cache, RedisCache) else None


async def _connected(cache: Cache) -> None:
    """Connected, so that the first call of a test is not the one that finds the cluster."""
    redis = _redis_of(cache)
    if redis is not None:
        with anyio.fail_after(10):
            while not await redis.connect():  # noqa: ASYNC110 - backed off: poll
                await anyio.sleep(0.05)


def _server(request: pytest.FixtureRequest, kind: str) -> RedisServer | RedisClusterServer | None:
    if kind == "memory":
        return None
    if kind.endswith("cluster"):
        server: RedisServer | RedisClusterServer = request.getfixturevalue("redis_cluster")
    else:
        server = request.getfixturevalue("redis_server")
    return server


@pytest.fixture(params=KINDS)
async def cache(request: pytest.FixtureRequest, fake_clock: FakeClock) -> AsyncIterator[Cache]:
    async with _build(request.param, _server(request, request.param), fake_clock) as built:
        await _connected(built)
        redis = _redis_of(built)
        assert redis is None or redis.cluster is request.param.endswith("cluster")
        yield built


def k(name: str, tag: str = "t") -> str:
    """A contract key: ``c:{tag}:name``."""
    return f"c:{{{tag}}}:{name}"


def entry(clock: FakeClock, payload: bytes = b'{"v":1}') -> Entry:
    return Entry.create(payload, POLICY, clock.now)


def shared(cache: Cache) -> bool:
    """Whether the cache's locks are shared by processes (else every lock is granted)."""
    return not isinstance(cache, MemoryCache)


async def test_get_many_answers_each_key_in_order(cache: Cache, fake_clock: FakeClock) -> None:
    """One result per key, in the keys' order; a missing key is None."""
    await cache.set(k("a"), entry(fake_clock, b"1"))
    await cache.set(k("c", "other"), entry(fake_clock, b"3"))
    got = await cache.get_many([k("a"), k("b"), k("c", "other")])
    assert [None if e is None else e.payload for e in got] == [b"1", None, b"3"]


async def test_an_entry_keeps_its_payload_and_windows(cache: Cache, fake_clock: FakeClock) -> None:
    """What is read is what was written: bytes and every window."""
    written = entry(fake_clock, b'{"a":[1,2,3]}')
    assert await cache.set(k("k"), written) is True
    (read,) = await cache.get_many([k("k")])
    assert read is not None
    assert read.payload == written.payload
    assert (read.fresh_until, read.stale_until, read.error_until) == (
        written.fresh_until,
        written.stale_until,
        written.error_until,
    )


async def test_a_write_under_a_lock_is_stored(cache: Cache, fake_clock: FakeClock) -> None:
    """A fill that holds its lock stores its value."""
    token = await cache.try_lock(k("k"), 5)
    assert token is not None
    assert await cache.set(k("k"), entry(fake_clock), token=token) is True
    await cache.unlock(k("k"), token)
    (read,) = await cache.get_many([k("k")])
    assert read is not None


async def test_invalidation_wins_over_a_fill_in_flight(cache: Cache, fake_clock: FakeClock) -> None:
    """Lock, invalidate, then write: the write is refused and nothing is stored."""
    token = await cache.try_lock(k("s:k"), 5)
    assert token is not None
    assert await cache.invalidate(k("s:")) is True
    assert await cache.set(k("s:k"), entry(fake_clock), token=token) is False
    await cache.unlock(k("s:k"), token)
    assert await cache.get_many([k("s:k")]) == [None]


async def test_a_pattern_invalidation_wins_over_a_fill_in_flight(
    cache: Cache, fake_clock: FakeClock
) -> None:
    """The same for a pattern across hash tags: it deletes the lock too."""
    token = await cache.try_lock(k("s:k", "x"), 5)
    assert token is not None
    assert await cache.invalidate(KeyPattern(("c:{", "}:s:"))) is True
    assert await cache.set(k("s:k", "x"), entry(fake_clock), token=token) is False
    await cache.unlock(k("s:k", "x"), token)
    assert await cache.get_many([k("s:k", "x")]) == [None]


async def test_an_unrelated_invalidation_does_not_refuse_a_write(
    cache: Cache, fake_clock: FakeClock
) -> None:
    """Only an invalidation covering the key overtakes its fill."""
    token = await cache.try_lock(k("s:k"), 5)
    assert token is not None
    assert await cache.invalidate(k("other:")) is True
    assert await cache.invalidate(KeyPattern(("c:{", "}:other:"))) is True
    assert await cache.set(k("s:k"), entry(fake_clock), token=token) is True
    await cache.unlock(k("s:k"), token)


async def test_invalidate_drops_the_prefix_only(cache: Cache, fake_clock: FakeClock) -> None:
    """Keys under the prefix go; the others stay."""
    for key in (k("a:1"), k("a:2"), k("b:1"), k("a:1", "other")):
        await cache.set(key, entry(fake_clock))
    assert await cache.invalidate(k("a:")) is True
    got = await cache.get_many([k("a:1"), k("a:2"), k("b:1"), k("a:1", "other")])
    assert [e is not None for e in got] == [False, False, True, True]


async def test_invalidate_drops_what_the_pattern_matches(
    cache: Cache, fake_clock: FakeClock
) -> None:
    """A pattern reaches every hash tag (every master of a cluster), and only its keys."""
    doomed = [k("s:1", tag) for tag in TAGS]
    kept = [k("o:1", tag) for tag in TAGS] + ["d:{a}:s:1", "c:{a}:so:1"]
    for key in doomed + kept:
        await cache.set(key, entry(fake_clock))
    assert await cache.invalidate(KeyPattern(("c:{", "}:s:"))) is True
    got = await cache.get_many(doomed + kept)
    assert [e is not None for e in got] == [False] * len(doomed) + [True] * len(kept)


async def test_a_shared_lock_has_one_holder(cache: Cache) -> None:
    """Across processes one filler at a time; a process-local cache grants every lock."""
    first = await cache.try_lock(k("k"), 5)
    second = await cache.try_lock(k("k"), 5)
    assert first is not None
    if shared(cache):
        assert second is None
        await cache.unlock(k("k"), first)
        with anyio.fail_after(5):
            # The unlock runs in the background: poll for the lock.
            while (again := await cache.try_lock(k("k"), 5)) is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert again is not None
    else:
        assert second is not None


async def test_wait_for_ends_when_nobody_fills(cache: Cache) -> None:
    """No lock held and nothing written: waiting ends at once, empty-handed."""
    start = time.monotonic()
    assert await cache.wait_for(k("nobody"), 5) is None
    assert time.monotonic() - start < 1


async def test_the_clock_judges_entries(cache: Cache, fake_clock: FakeClock) -> None:
    """An entry past all its windows is not served."""
    await cache.set(k("k"), entry(fake_clock))
    fake_clock.advance(POLICY.retention + 1)
    (read,) = await cache.get_many([k("k")])
    assert read is None or read.dead(fake_clock.now)


# -- a store that does not answer -----------------------------------------------


@pytest.fixture(params=KINDS[1:])
async def frozen(request: pytest.FixtureRequest, fake_clock: FakeClock) -> AsyncIterator[Cache]:
    """A shared cache whose Redis (every node of a cluster) accepts connections, never answers."""
    server: RedisServer | RedisClusterServer
    if request.param.endswith("cluster"):
        server = request.getfixturevalue("redis_cluster")
    else:
        server = request.getfixturevalue("private_redis_server")
    async with _build(request.param, server, fake_clock) as built:
        await _connected(built)
        await built.get_many([k("warm")])  # a pooled connection, as in a running service
        server.freeze()
        try:
            yield built
        finally:
            server.thaw()


async def _timed(call: Any) -> float:
    start = time.monotonic()
    await call
    return time.monotonic() - start


async def test_a_frozen_store_costs_each_call_its_budget_at_most(
    frozen: Cache, fake_clock: FakeClock
) -> None:
    """Every method returns within the command budget, failing open."""
    times = {
        "get_many": await _timed(frozen.get_many([k("k")])),
        "set": await _timed(frozen.set(k("k"), entry(fake_clock))),
        "try_lock": await _timed(frozen.try_lock(k("k"), 5)),
        "unlock": await _timed(frozen.unlock(k("k"), "token")),
        "wait_for": await _timed(frozen.wait_for(k("k"), 5)),
    }
    assert max(times.values()) < BUDGET_BOUND, times
    assert await frozen.get_many([k("never-written")]) == [None]


async def test_a_frozen_store_grants_a_local_lock(frozen: Cache) -> None:
    """Better one fill per instance than none: the lock is granted locally."""
    assert await frozen.try_lock(k("k"), 5) is not None


async def test_a_frozen_store_reports_an_incomplete_invalidation(frozen: Cache) -> None:
    """An invalidation that could not reach the store says so."""
    with anyio.fail_after(5):
        assert await frozen.invalidate("c:") is False
