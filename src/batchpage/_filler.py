"""Calling a source on behalf of a cache key: once per key, and in the background.

A missing key is filled by one caller at a time: in this process through
single-flight, across instances through the cache's lock, and the filler
re-reads the key once it holds the lock, in case another instance filled it
meanwhile. A stale key is refreshed by one background task, owned by the
aggregator's task group; its failure keeps the stale value serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio
import anyio.abc
import attrs

from ._breaker import CircuitBreaker
from ._cache import Cache
from ._context import RequestContext
from ._entry import Entry
from ._executor import Attempt, Executor
from ._section import Section
from ._serializer import Serializer
from ._singleflight import SingleFlight
from ._stats import AggregatorStats

logger = logging.getLogger("batchpage")


class Fill:
    """What filling a key gave: the payload to serve, or the error."""

    __slots__ = ("attempt", "payload")

    def __init__(self, payload: bytes | None, attempt: Attempt) -> None:
        self.payload = payload
        self.attempt = attempt


_SHARED = Attempt(None, None, 0.0)


class CacheFiller:
    """Fills and refreshes cache keys by calling their sections' sources."""

    def __init__(
        self,
        *,
        cache: Cache,
        executor: Executor,
        serializer: Serializer,
        breakers: Mapping[str, CircuitBreaker],
        stats: AggregatorStats,
    ) -> None:
        self.cache = cache
        self.executor = executor
        self.serializer = serializer
        self.breakers = breakers
        self.stats = stats
        self._flights: SingleFlight[str, Fill] = SingleFlight()
        self._refreshing: set[str] = set()
        self._idle: anyio.Event | None = None

    def encode(self, section: Section, attempt: Attempt) -> bytes | None:
        """The attempt's value as stored bytes; ``None`` (logged, counted) if it cannot be."""
        try:
            return self.serializer.dumps(attempt.value)
        except Exception:
            self.stats.serialization_errors += 1
            logger.exception("section %r: value is not serializable", section.name)
            return None

    async def call(self, section: Section, ctx: RequestContext) -> Attempt:
        return await self.executor.call(
            section, ctx, breaker=self.breakers.get(section.name), deadline=ctx.deadline
        )

    async def fill(self, section: Section, key: str, ctx: RequestContext) -> Fill:
        """The key's value from one fetch shared by every concurrent caller."""
        fill, shared = await self._flights.do(key, lambda: self._fill(section, key, ctx))
        if shared:
            self.stats.shared_fetches += 1
        return fill

    async def _fill(self, section: Section, key: str, ctx: RequestContext) -> Fill:
        policy = section.cache
        assert policy is not None
        token = await self.cache.try_lock(key, section.timeout)
        if token is None:
            # Another instance is fetching this key: wait for its write.
            entry = await self.cache.wait_for(key, max(0.0, min(section.timeout, ctx.remaining())))
            if entry is not None and not entry.dead(self.cache.clock()):
                return Fill(entry.payload, _SHARED)
        try:
            if token is not None:
                # Another instance may have filled the key between our read and
                # our lock; then its value is ours too.
                fresh = await self._fresh_entry(key)
                if fresh is not None:
                    self.stats.shared_fetches += 1
                    return Fill(fresh.payload, _SHARED)
            attempt = await self.call(section, ctx)
            payload = self.encode(section, attempt) if attempt.ok else None
            if payload is not None:
                await self.cache.set(key, Entry.create(payload, policy, self.cache.clock()))
            return Fill(payload, attempt)
        finally:
            if token is not None:
                with anyio.CancelScope(shield=True):
                    await self.cache.unlock(key, token)

    async def _fresh_entry(self, key: str) -> Entry | None:
        (entry,) = await self.cache.get_many([key])
        if entry is not None and self.cache.clock() < entry.fresh_until:
            return entry
        return None

    def schedule_refresh(
        self, tg: anyio.abc.TaskGroup, section: Section, key: str, ctx: RequestContext
    ) -> None:
        """Refresh a stale key in ``tg``, unless it is being refreshed or filled already."""
        if key in self._refreshing or key in self._flights:
            return
        if not self._refreshing:
            self._idle = anyio.Event()
        self._refreshing.add(key)
        tg.start_soon(self._refresh, section, key, ctx)

    async def _refresh(self, section: Section, key: str, ctx: RequestContext) -> None:
        policy = section.cache
        assert policy is not None
        try:
            token = await self.cache.try_lock(key, section.timeout)
            if token is None:
                self.stats.refreshes_skipped += 1
                return
            try:
                if await self._fresh_entry(key) is not None:  # refreshed meanwhile
                    self.stats.refreshes_skipped += 1
                    return
                self.stats.refreshes += 1
                ctx = attrs.evolve(ctx, deadline=anyio.current_time() + section.timeout)
                attempt = await self.call(section, ctx)
                payload = self.encode(section, attempt) if attempt.ok else None
                if payload is None:
                    self.stats.refresh_failures += 1
                    logger.warning(
                        "section %r: background refresh failed (%s); still serving stale",
                        section.name,
                        attempt.error.code if attempt.error else "SERIALIZATION_ERROR",
                    )
                    return
                await self.cache.set(key, Entry.create(payload, policy, self.cache.clock()))
            finally:
                with anyio.CancelScope(shield=True):
                    await self.cache.unlock(key, token)
        finally:
            self._refreshing.discard(key)
            if not self._refreshing and self._idle is not None:
                self._idle.set()

    async def settle(self) -> None:
        """Wait until the refreshes started so far have finished."""
        while self._refreshing and self._idle is not None:
            await self._idle.wait()
