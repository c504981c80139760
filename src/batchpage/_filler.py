"""Calling a source on behalf of a cache key: once per key, and in the background.

A missing key is filled by one caller at a time: in this process through
single-flight, across instances through the cache's lock, and the filler
re-reads the key once it holds the lock, in case another instance filled it
meanwhile. The write is made under the lock's token, so an invalidation that
landed while the source was being read wins: the older value is not stored.

A stale key is refreshed by one background task, owned by the aggregator's
task group. Refreshes are bounded (the executor's ``max_background``): one
that does not fit, or whose breaker is open, is skipped and counted, and
the stale value keeps serving. A failed refresh keeps it serving too.
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
from ._errors import ErrorCode, SectionError
from ._executor import Attempt, Executor, circuit_open
from ._observer import Observer, RefreshOutcome
from ._section import Section
from ._serializer import Serializer, encode_failure
from ._singleflight import SingleFlight
from ._stats import AggregatorStats

logger = logging.getLogger("batchpage")

#: A lock outlives its section's timeout by this much (seconds): the time for
#: the cache work around the source call. A holder that died frees the key then.
LOCK_GRACE = 1.0


class Fill:
    """What filling a key gave: the payload to serve, or the error."""

    __slots__ = ("attempt", "payload")

    def __init__(self, payload: bytes | None, attempt: Attempt) -> None:
        self.payload = payload
        self.attempt = attempt


_SHARED = Attempt(None, None, 0.0)


def lock_ttl(section: Section) -> float:
    """How long a fill's lock lives: the source's timeout plus the cache work around it."""
    return section.timeout + LOCK_GRACE


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
        observer: Observer | None = None,
        page: str = "",
    ) -> None:
        self.cache = cache
        self.executor = executor
        self.serializer = serializer
        self.breakers = breakers
        self.stats = stats
        self.observer = observer
        self.page = page
        self._flights: SingleFlight[str, Fill] = SingleFlight()
        self._refreshing: set[str] = set()
        self._idle: anyio.Event | None = None

    @property
    def refreshing(self) -> int:
        """Background refreshes running now."""
        return len(self._refreshing)

    def encode(self, section: Section, attempt: Attempt) -> bytes | None:
        """The attempt's value as stored bytes; ``None`` (logged, counted) if it cannot be."""
        try:
            return self.serializer.dumps(attempt.value)
        except Exception as exc:
            self.stats.serialization_errors += 1
            # "section 'x': cannot encode a Foo (app.Foo) value"
            logger.exception("section %r: %s", section.name, encode_failure(exc))
            return None

    async def call(
        self, section: Section, ctx: RequestContext, *, background: bool = False
    ) -> Attempt:
        return await self.executor.call(
            section,
            ctx,
            breaker=self.breakers.get(section.name),
            deadline=ctx.deadline,
            background=background,
        )

    def _refused(self, section: Section) -> Attempt | None:
        """A ``CIRCUIT_OPEN`` attempt if the breaker would refuse the call: no cache work then."""
        breaker = self.breakers.get(section.name)
        if breaker is None or breaker.allows():
            return None
        self.executor.stats.circuit_open += 1
        return circuit_open(section)

    async def fill(self, section: Section, key: str, ctx: RequestContext) -> Fill:
        """The key's value from one fetch shared by every concurrent caller."""
        fill, shared = await self._flights.do(key, lambda: self._fill(section, key, ctx))
        if shared:
            self.stats.shared_fetches += 1
        return fill

    async def _fill(self, section: Section, key: str, ctx: RequestContext) -> Fill:
        refused = self._refused(section)
        if refused is not None:
            return Fill(None, refused)
        cache = self.cache
        token = await cache.try_lock(key, lock_ttl(section))
        if token is None:
            return await self._fill_behind_another(section, key, ctx)
        try:
            # Another instance may have filled the key between our read and
            # our lock; then its value is ours too.
            fresh = await self._fresh_entry(key)
            if fresh is not None:
                self.stats.shared_fetches += 1
                return Fill(fresh.payload, _SHARED)
            attempt = await self.call(section, ctx)
            payload = self.encode(section, attempt) if attempt.ok else None
            if payload is not None:
                await self._store(section, key, payload, token)
            return Fill(payload, attempt)
        finally:
            with anyio.CancelScope(shield=True):
                await cache.unlock(key, token)

    async def _fill_behind_another(self, section: Section, key: str, ctx: RequestContext) -> Fill:
        """Another instance holds the key's lock: wait for its write, within our time.

        At most the section's timeout: a live holder has answered by then, and
        one that died (its lock outlives it) must not cost the page more, so
        the rest of the page's time goes to fetching without it.
        """
        cache = self.cache
        entry = await cache.wait_for(key, min(section.timeout, ctx.remaining()))
        if entry is not None and not entry.dead(cache.clock()):
            return Fill(entry.payload, _SHARED)
        if ctx.remaining() <= 0:
            error = SectionError(
                section.name, ErrorCode.TIMEOUT_ERROR, "page deadline reached while waiting"
            )
            return Fill(None, Attempt(None, error, 0.0))
        # The holder gave up without writing (or the cache is unreachable):
        # fetch for this page. Without the lock, the value is not stored.
        attempt = await self.call(section, ctx)
        return Fill(self.encode(section, attempt) if attempt.ok else None, attempt)

    async def _store(self, section: Section, key: str, payload: bytes, token: str) -> None:
        policy = section.cache
        assert policy is not None
        entry = Entry.create(payload, policy, self.cache.clock())
        if not await self.cache.set(key, entry, token=token):
            self.stats.writes_dropped += 1

    async def _fresh_entry(self, key: str) -> Entry | None:
        (entry,) = await self.cache.get_many([key])
        if entry is not None and self.cache.clock() < entry.fresh_until:
            return entry
        return None

    def schedule_refresh(
        self, tg: anyio.abc.TaskGroup, section: Section, key: str, ctx: RequestContext
    ) -> None:
        """Refresh a stale key in ``tg``, unless it is being refreshed or filled already.

        Skipped (and counted) when the section's breaker is open or the
        background is full: serving stale goes on, and the next stale read
        tries again.
        """
        if key in self._refreshing or key in self._flights:
            return
        breaker = self.breakers.get(section.name)
        if breaker is not None and not breaker.allows():
            self.stats.refreshes_skipped += 1
            self._tell(section, RefreshOutcome.SKIPPED)
            return
        if len(self._refreshing) >= self.executor.max_background:
            self.stats.refreshes_dropped += 1
            self._tell(section, RefreshOutcome.DROPPED)
            return
        if not self._refreshing:
            self._idle = anyio.Event()
        self._refreshing.add(key)
        tg.start_soon(self._refresh, section, key, ctx)

    async def _refresh(self, section: Section, key: str, ctx: RequestContext) -> None:
        try:
            token = await self.cache.try_lock(key, lock_ttl(section))
            if token is None:
                self.stats.refreshes_skipped += 1
                self._tell(section, RefreshOutcome.SKIPPED)
                return
            try:
                if await self._fresh_entry(key) is not None:  # refreshed meanwhile
                    self.stats.refreshes_skipped += 1
                    self._tell(section, RefreshOutcome.SKIPPED)
                    return
                self.stats.refreshes += 1
                self._tell(section, RefreshOutcome.STARTED)
                ctx = attrs.evolve(ctx, deadline=anyio.current_time() + section.timeout)
                attempt = await self.call(section, ctx, background=True)
                payload = self.encode(section, attempt) if attempt.ok else None
                if payload is None:
                    self.stats.refresh_failures += 1
                    self._tell(section, RefreshOutcome.FAILED)
                    logger.warning(
                        "section %r: background refresh failed (%s); still serving stale",
                        section.name,
                        attempt.error.code if attempt.error else "SERIALIZATION_ERROR",
                    )
                    return
                await self._store(section, key, payload, token)
                self._tell(section, RefreshOutcome.REFRESHED)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.cache.unlock(key, token)
        finally:
            self._refreshing.discard(key)
            if not self._refreshing and self._idle is not None:
                self._idle.set()

    def _tell(self, section: Section, outcome: RefreshOutcome) -> None:
        if self.observer is not None:
            self.observer.refresh(self.page, section.name, outcome)

    async def settle(self) -> None:
        """Wait until the refreshes started so far have finished."""
        while self._refreshing and self._idle is not None:
            await self._idle.wait()
