"""Memory in front of Redis: L1 answers a warm page, L2 shares entries between instances."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import attrs

from ._entry import Entry
from ._keys import KeyPattern
from ._memory import MemoryCache
from ._redis import RedisCache, Stored

_EVERY_KEY = KeyPattern.prefix("")


@attrs.define
class LayeredCacheStats:
    """What the layers did for reads; each layer counts its own work too."""

    memory_hits: int = 0  #: keys answered fresh from memory, without Redis
    redis_reads: int = 0  #: ``get_many`` calls that went on to Redis
    memory_fills: int = 0  #: Redis entries copied into memory
    invalidations_received: int = 0  #: patterns dropped on another instance's message
    memory_flushes: int = 0  #: memory emptied after the subscription was lost


class LayeredCache:
    """An in-process :class:`MemoryCache` (L1) over a shared :class:`RedisCache` (L2).

    Reads go to memory first; only keys that memory cannot answer fresh go
    to Redis, in one ``MGET`` per page, and a Redis entry that beats
    memory's is copied into memory. Writes and invalidations go to both;
    locks are Redis's, because they elect one instance among many.

    While entered, a listener on Redis pub/sub drops the memory entries
    that other instances invalidate. Needs asyncio (redis-py's asyncio
    client). Both layers should share one clock: ``clock`` is memory's.
    """

    def __init__(self, memory: MemoryCache, redis: RedisCache) -> None:
        if not isinstance(memory, MemoryCache):
            raise TypeError(f"memory must be a MemoryCache, not {memory!r}")
        if not isinstance(redis, RedisCache):
            raise TypeError(f"redis must be a RedisCache, not {redis!r}")
        self.memory = memory
        self.redis = redis
        self.clock = memory.clock
        self.stats = LayeredCacheStats()
        # Every invalidation, local or from another instance, is recorded in
        # memory's log: a Redis read or a fill that started before one must
        # not put what it got into memory.
        self._log = memory.invalidations
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this cache is already entered")
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.memory)
            await stack.enter_async_context(self.redis)
            tg = await stack.enter_async_context(anyio.create_task_group())
            # Exits run last-in first-out: the listener is told to stop, then awaited.
            stack.callback(tg.cancel_scope.cancel)
            await tg.start(self._listen)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        assert stack is not None
        await stack.__aexit__(exc_type, exc, tb)

    async def _listen(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        await self.redis.listen_invalidations(
            self._on_invalidation, on_resubscribe=self._on_resubscribe, task_status=task_status
        )

    def _on_invalidation(self, pattern: KeyPattern) -> None:
        self._log.record(pattern)
        self.stats.invalidations_received += 1
        self.memory.drop_matching(pattern)

    def _on_resubscribe(self) -> None:
        # Invalidations sent while the subscription was down are lost; memory
        # may hold any of the entries they named.
        self._log.record(_EVERY_KEY)
        self.stats.memory_flushes += 1
        self.memory.drop_matching(_EVERY_KEY)

    def watch_health(self, listener: Callable[[str, bool], object]) -> None:
        """Redis's health (memory is always there): see :meth:`RedisCache.watch_health`."""
        self.redis.watch_health(listener)

    async def get_many(
        self, keys: Sequence[str], /, *, budget: float | None = None
    ) -> list[Entry | None]:
        """Memory's fresh entries; Redis, in one call, for the rest."""
        entries = self.memory.get_many_now(keys)
        now = self.clock()
        wanted = [i for i, e in enumerate(entries) if e is None or now >= e.fresh_until]
        self.stats.memory_hits += len(keys) - len(wanted)
        if not wanted:
            return entries
        mark = self._log.mark()
        self.stats.redis_reads += 1
        remote = await self.redis.get_many([keys[i] for i in wanted], budget=budget)
        now = self.clock()
        log = self._log
        for i, entry in zip(wanted, remote, strict=True):
            if entry is None or entry.dead(now):
                continue
            local = entries[i]
            if local is None or entry.fresh_until > local.fresh_until:
                entries[i] = entry
                if not log.invalidated_since(keys[i], mark):
                    self.memory.put(keys[i], entry)
                    self.stats.memory_fills += 1
        return entries

    async def set(self, key: str, entry: Entry, /, *, token: str | None = None) -> bool:
        """Redis first, then memory, unless an invalidation overtook the fill.

        With a token, Redis stores only while the fill's lock stands, and
        memory only if no invalidation (here, or from another instance) came
        since the lock was granted. Redis unreachable: memory alone.
        """
        if token is None:
            self.memory.put(key, entry)
            return await self.redis.set(key, entry)
        mark, _, redis_token = token.partition("/")
        stored = await self.redis.store(key, entry, token=redis_token)
        if stored is Stored.REFUSED or not self.memory.lease_valid(key, mark):
            return False
        return self.memory.put(key, entry)

    async def invalidate(self, pattern: KeyPattern | str, /) -> bool:
        """Drop what ``pattern`` matches here and in Redis; Redis tells the other instances."""
        pattern = KeyPattern.of(pattern)
        self._log.record(pattern)
        self.memory.drop_matching(pattern)
        return await self.redis.invalidate(pattern)

    async def try_lock(self, key: str, ttl: float, /) -> str | None:
        """Redis's lock; the token also marks the moment, for memory's check on write."""
        mark = self._log.mark()
        token = await self.redis.try_lock(key, ttl)
        return None if token is None else f"{mark}/{token}"

    async def unlock(self, key: str, token: str, /) -> None:
        """Release Redis's lock (in the background, as :meth:`RedisCache.unlock` does)."""
        await self.redis.unlock(key, token.partition("/")[2])

    async def wait_for(self, key: str, wait: float, /) -> Entry | None:
        """Redis's wait; what another instance wrote is kept in memory too."""
        mark = self._log.mark()
        entry = await self.redis.wait_for(key, wait)
        if entry is not None and not self._log.invalidated_since(key, mark):
            self.memory.put(key, entry)
        return entry

    def __repr__(self) -> str:
        return f"LayeredCache(memory={self.memory!r}, redis={self.redis!r})"
