"""The page: sections, an executor and a cache, assembled into one response."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._breaker import BreakerState, CircuitBreaker
from ._cache import Cache
from ._context import RequestContext
from ._eager import Started, start_eagerly
from ._entry import Entry
from ._errors import (
    AggregatorNotRunning,
    ErrorCode,
    InvalidationIncomplete,
    SectionError,
    UnknownSectionError,
    echo,
)
from ._executor import Attempt, Executor, timeout_error
from ._filler import CacheFiller
from ._keys import KeyBuilder, check_part
from ._layered import LayeredCache, LayeredCacheStats
from ._loop import running_loop
from ._memory import MemoryCache
from ._observer import Observer, combined
from ._result import NULL, CacheStatus, PageResult, SectionResult, WarmPage, page_from_view
from ._scope import Scope
from ._section import Section
from ._serializer import JsonSerializer, Serializer, encode_failure
from ._stats import AggregatorStats
from ._units import Seconds, positive_seconds

logger = logging.getLogger("batchpage")

_ANONYMOUS = RequestContext()
# Longer user ids are not memoised: the memo stays small whatever ids come in.
_MEMO_MAX_USER = 128
# Pages whose keys are memoised (per page, user and parameters); then the memo starts over.
_KEY_MEMO_SIZE = 1024


class _Plan:
    """The sections a request asks for, and what is known of them before any request."""

    __slots__ = ("custom", "names", "sections", "viewable")

    def __init__(self, sections: tuple[Section, ...]) -> None:
        self.sections = sections
        self.names = tuple(s.name for s in sections)
        # A cached section's key depends on a scope function: not memoised.
        self.custom = any(s.cache is not None and not isinstance(s.scope, Scope) for s in sections)
        # Its warm pages can be kept as views: every section cached, each key
        # a function of the user and the parameters alone.
        self.viewable = not self.custom and all(s.cache is not None for s in sections)


class _Run:
    """One page's pending work: how to stop it, and why it stopped (fail-fast)."""

    __slots__ = ("fail_fast", "failed", "reported", "stop")

    def __init__(self, fail_fast: bool) -> None:
        self.fail_fast = fail_fast
        self.stop: anyio.CancelScope | None = None
        #: Sections cut short that told the observer themselves.
        self.reported: set[str] = set()
        self.failed: str | None = None  #: the required section whose failure stopped the page


class Aggregator:
    """Fetches a page's sections in parallel, through the cache, as one result.

    Use it as an async context manager: it owns the background tasks that
    refresh stale entries, and they end with it::

        async with Aggregator(sections, page="homepage") as agg:
            page = await agg.fetch(RequestContext(user_id="42", params={"limit": 10}))

    It is entered once at a time (entering it again while it runs is a
    ``RuntimeError``); what the ``async with`` body raises comes out as raised.

    ``page`` names the page in every cache key, and has no default: two
    aggregators left on one default name would read and overwrite each
    other's entries in a shared cache (Redis), and neither would notice.
    Instances serving the same page share its entries by giving the same name.

    ``page_timeout`` (seconds) bounds the whole page: a section still running
    then is cancelled and reported as ``TIMEOUT_ERROR``. ``cache`` defaults to
    a :class:`MemoryCache` and is used only by sections with a ``CachePolicy``.
    With ``fail_fast``, a required section that fails with nothing to stand
    in cancels the sections still running (``CANCELLED``): the page is a 503
    whatever they return, so their work would be wasted.
    """

    def __init__(
        self,
        sections: Iterable[Section],
        *,
        page: str,
        version: str = "v1",
        key_prefix: str = "batchpage",
        page_timeout: Seconds | None = None,
        executor: Executor | None = None,
        cache: Cache | None = None,
        serializer: Serializer | None = None,
        fail_fast: bool = False,
        observers: Sequence[Observer] = (),
    ) -> None:
        if isinstance(sections, Section):
            raise TypeError("sections must be an iterable of Section objects, not one Section")
        check_part(page, "page")
        check_part(version, "version")
        check_part(key_prefix, "key_prefix")
        if page_timeout is not None:
            page_timeout = positive_seconds(page_timeout, name="page_timeout")
        if fail_fast is not True and fail_fast is not False:
            raise TypeError(f"fail_fast must be a bool, not {fail_fast!r}")
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"executor must be an Executor or None, not {executor!r}")
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache must be a Cache (MemoryCache, RedisCache, ...), not {cache!r}")
        if serializer is not None and not isinstance(serializer, Serializer):
            raise TypeError(
                f"serializer must have dumps(value) -> bytes and loads(bytes), not {serializer!r}"
            )
        self.sections: dict[str, Section] = {}
        for section in sections:
            if not isinstance(section, Section):
                raise TypeError(f"sections must be Section objects, not {section!r}")
            if section.name in self.sections:
                raise ValueError(f"duplicate section name: {section.name!r}")
            self.sections[section.name] = section
        if not self.sections:
            raise ValueError("an aggregator needs at least one section")
        self.keys = KeyBuilder(prefix=key_prefix, page=page, version=version)
        self.page_timeout: float | None = page_timeout
        self.executor = executor if executor is not None else Executor()
        self.cache: Cache = cache if cache is not None else MemoryCache()
        self.serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        self.stats = AggregatorStats()
        self.fail_fast = fail_fast
        if isinstance(observers, Observer):
            raise TypeError("observers must be a sequence of Observer objects, not one Observer")
        self._observer: Observer | None = combined(observers)
        self._breakers = {
            s.name: CircuitBreaker(
                s.breaker, anyio.current_time, on_change=self._breaker_hook(s.name)
            )
            for s in self.sections.values()
            if s.breaker is not None
        }
        if self._observer is not None:
            _watch(self.cache, self.executor, self._observer)
        self._required = frozenset(s.name for s in self.sections.values() if s.required)
        self._filler = CacheFiller(
            cache=self.cache,
            executor=self.executor,
            serializer=self.serializer,
            breakers=self._breakers,
            stats=self.stats,
            observer=self._observer,
            page=page,
        )
        self._plans: dict[tuple[str, ...] | None, _Plan] = {}
        # Cache keys per (plan, user, params): building them is most of a warm page.
        self._key_memo: dict[tuple[object, ...], list[str | None]] = {}
        # A warm page read wholly from memory is kept there as a view
        # (``WarmPage``) until one of its entries changes: the next request
        # for it reads one dict. The memory layer, when there is one.
        self._memory: MemoryCache | None = None
        self._layered: LayeredCacheStats | None = None
        if type(self.cache) is MemoryCache:
            self._memory = self.cache
        elif type(self.cache) is LayeredCache:
            self._memory = self.cache.memory
            self._layered = self.cache.stats
        # The freshness clock is the wall clock: its reading is ``generatedAt`` too.
        self._wall_clock = self._memory is not None and self._memory.clock is time.time
        self._tg: anyio.abc.TaskGroup | None = None
        self._entered = False  # from the start of __aenter__ to the end of __aexit__
        self._now: Callable[[], float] = anyio.current_time

    @property
    def version(self) -> str:
        """The version in every key and in each page's metadata; bump it to drop every entry."""
        return self.keys.version

    # -- lifetime ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Checked and marked before the first await: a second entry, nested
        # or from another task, fails here and touches nothing of the first.
        if self._entered:
            raise RuntimeError("this aggregator is already running")
        self._entered = True
        try:
            await self.cache.__aenter__()
            tg = anyio.create_task_group()
            try:
                await tg.__aenter__()
            except BaseException:
                await self.cache.__aexit__(None, None, None)
                raise
        except BaseException:
            self._entered = False
            raise
        self._tg = tg
        _, self._now = running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        assert tg is not None
        try:
            # Background refreshes are an optimisation: shutting down must not
            # wait for a slow source.
            tg.cancel_scope.cancel()
            try:
                await tg.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The task group wraps whatever the ``async with`` body raised;
                # when that is all it holds, the caller gets the exception as
                # raised (returning lets it propagate), not a group.
                if exc is None or len(group.exceptions) != 1 or group.exceptions[0] is not exc:
                    raise
        finally:
            try:
                await self.cache.__aexit__(exc_type, exc, tb)
            finally:
                self._entered = False

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise AggregatorNotRunning(
                "the aggregator is not running: use 'async with Aggregator(...) as agg'"
            )
        return self._tg

    # -- planning ---------------------------------------------------------

    def plan(self, names: Sequence[str] | None = None) -> tuple[Section, ...]:
        """The sections a request asks for, in the page's order; checks the names.

        ``names`` is a sequence of section names, each once (``None``: all of
        them). Checked on a memo miss only: a name set seen before costs one
        dict lookup.
        """
        return self._plan(names).sections

    def _plan(self, names: Sequence[str] | None) -> _Plan:
        items = None
        try:
            if names is not None:
                items = tuple(names)
            plan = self._plans.get(items)
        except TypeError:  # not iterable, or unhashable items: _new_plan says which
            plan = None
        return plan if plan is not None else self._new_plan(names, items)

    def _new_plan(self, names: Sequence[str] | None, items: tuple[object, ...] | None) -> _Plan:
        """Check ``names`` (read once, as ``items``: it may be an iterator) and plan them."""
        if names is None:
            key = None
            plan = _Plan(tuple(self.sections.values()))
        else:
            key = self._check_names(names, items)
            wanted = set(key)
            plan = _Plan(tuple(s for s in self.sections.values() if s.name in wanted))
        # A str's characters make a tuple of one-character names, the key a list
        # of one-letter section names would have: such a key is never memoised,
        # so that a str always reaches the check above.
        memoise = key is None or any(len(n) > 1 for n in key)
        if memoise and len(self._plans) < 256:  # distinct subsets are few; bound anyway
            self._plans[key] = plan
        else:
            plan.viewable = False  # a plan made afresh each time: its views would be lost
        return plan

    def _check_names(self, names: object, items: tuple[object, ...] | None) -> tuple[str, ...]:
        if isinstance(names, str | bytes | bytearray):
            raise TypeError(
                f"sections must be a sequence of section names, not a {type(names).__name__}"
            )
        if items is None:
            raise TypeError(f"sections must be a sequence of section names, not {echo(names)}")
        if not items:
            raise ValueError("sections must name at least one section")
        key: list[str] = []
        seen: set[str] = set()
        for name in items:
            if not isinstance(name, str):
                raise TypeError(f"sections must hold section names (str), not {echo(name)}")
            if name in seen:
                raise ValueError(f"sections must not name a section twice: {echo(name)}")
            seen.add(name)
            key.append(name)
        unknown = [n for n in key if n not in self.sections]
        if unknown:
            raise UnknownSectionError(unknown)
        return tuple(key)  # equal to ``items``: the memo's key

    def key_for(self, section: Section, ctx: RequestContext) -> str:
        """The cache key of ``section`` for this request.

        See :class:`~batchpage.extend.KeyBuilder`, which builds it.
        """
        return self.keys.key_for(section, ctx)

    # -- fetching ---------------------------------------------------------

    async def fetch(
        self, ctx: RequestContext | None = None, *, sections: Sequence[str] | None = None
    ) -> PageResult:
        """Every requested section, fetched or cached, as one :class:`PageResult`.

        The page deadline (``page_timeout``, or the context's own, whichever
        comes first) bounds the whole call, cache work included: a section
        still running then is a ``TIMEOUT_ERROR`` (or its stale value or
        fallback stands in).
        """
        start = self._now()
        if ctx is None:
            ctx = _ANONYMOUS
        elif not isinstance(ctx, RequestContext):
            raise _not_a_context(ctx)
        if self._tg is None:
            self._task_group()
        # _plan(), inlined: this is the warm path.
        items = None
        try:
            if sections is not None:
                items = tuple(sections)
            plan = self._plans.get(items)
        except TypeError:  # not iterable, or unhashable items: _new_plan says which
            plan = None
        if plan is None:
            plan = self._new_plan(sections, items)
        memory = self._memory
        if memory is not None and plan.viewable:
            # A view of this very page is true while memory holds it (a change
            # to any of its entries drops it), and fresh until its ``until``: a
            # page with a stale or expired entry takes the path below.
            params = ctx._params_key  # ctx.params_key, without the property's call
            if params is None:
                params = ctx.params_key
            view: WarmPage | None = memory._views.get((plan, ctx.user_id, params))
            if view is not None:
                now = memory.clock()
                if now < view.until:
                    if not view.touched:
                        memory._touch(view)
                    if self._layered is not None:
                        self._layered.memory_hits += len(view.keys)
                    self.stats.pages += 1
                    page = page_from_view(
                        view,
                        now if self._wall_clock else time.time(),
                        (self._now() - start) * 1000,
                    )
                    if self._observer is not None:
                        self._observe_warm(ctx, page, self._observer)
                    return page
        if self._observer is not None:
            return await self._fetch_observed(ctx, plan, start, self._observer)
        return await self._fetch(ctx, plan, start)

    def _observe_warm(self, ctx: RequestContext, page: PageResult, observer: Observer) -> None:
        """Tell ``observer`` of a page answered from a view, as of any page from the cache."""
        observer.page_from_memory(self.keys.page, ctx, page)

    async def _fetch_observed(
        self, ctx: RequestContext, plan: _Plan, start: float, observer: Observer
    ) -> PageResult:
        token = observer.page_started(self.keys.page, ctx)
        result: PageResult | None = None
        try:
            result = await self._fetch(ctx, plan, start)
            return result
        finally:
            if result is not None:
                observer.page_finished(token, self.keys.page, result)

    async def _fetch(self, ctx: RequestContext, plan: _Plan, start: float) -> PageResult:
        now = self._now
        deadline = self._deadline(ctx, start)
        results: dict[str, SectionResult] = {}
        pending = await self._from_cache(plan, ctx, results, start, deadline)
        if pending:
            ctx = self._with_deadline(ctx, deadline)
            run = _Run(self.fail_fast)
            if deadline == math.inf:
                await self._run_pending(pending, ctx, results, run, None, deadline)
            else:
                # The page deadline, armed when a section first waits (no timer otherwise).
                with anyio.CancelScope() as scope:
                    await self._run_pending(pending, ctx, results, run, scope, deadline)
            if len(results) < len(plan.names):  # cut short: the deadline, or fail-fast
                for section, _, old in pending:
                    if section.name not in results:
                        results[section.name] = self._cut_short(section, old, ctx, start, run)
                        if self._observer is not None and section.name not in run.reported:
                            self._observer.section_finished(
                                None, self.keys.page, results[section.name]
                            )
            results = {name: results[name] for name in plan.names}
        self.stats.pages += 1
        return PageResult(
            results,
            version=self.keys.version,
            generated_at=time.time(),
            total_ms=(now() - start) * 1000,
            required=self._required,
        )

    async def _run_pending(
        self,
        pending: list[tuple[Section, str | None, Entry | None]],
        ctx: RequestContext,
        results: dict[str, SectionResult],
        run: _Run,
        page: anyio.CancelScope | None,
        deadline: float,
    ) -> None:
        """Resolve every pending section concurrently; a task only for those that wait.

        Each section starts in this task (:func:`start_eagerly`): one that
        answers without waiting (a memory hit, a value at hand) costs no
        task. The first that waits goes on in this task; the sections after
        it get a task each, as they always did. So the sources still run
        concurrently, each under its own timeout (the executor's scope, which
        the section enters in its own first step) and the page's deadline
        (the caller's scope ``page``, around all of this, armed with
        ``deadline`` when the first section waits: nothing could be cut before).
        """
        resolve = self._resolve
        held: Started | None = None
        if len(pending) == 1:
            section, key, old = pending[0]
            held = start_eagerly(resolve(section, key, old, ctx, results, run))
            if held is not None:
                if page is not None:
                    page.deadline = deadline
                await held
            return
        async with anyio.create_task_group() as tg:
            run.stop = tg.cancel_scope
            try:
                for section, key, old in pending:
                    if held is not None:
                        tg.start_soon(resolve, section, key, old, ctx, results, run)
                    elif run.failed is None:  # fail-fast: the rest are cut short
                        held = start_eagerly(resolve(section, key, old, ctx, results, run))
                        if held is not None and page is not None:
                            page.deadline = deadline
            except BaseException:
                if held is not None:
                    held.close()
                raise
            if held is not None:
                await held

    async def stream(
        self, ctx: RequestContext | None = None, *, sections: Sequence[str] | None = None
    ) -> AsyncGenerator[SectionResult, None]:
        """Yield each section's result as soon as it is ready, fastest first.

        Cached sections come first. The sources run in tasks owned by the
        aggregator, under the same page deadline and fail-fast rule as
        :meth:`fetch`; closing the iterator early cancels those still running.
        """
        tg = self._task_group()
        if ctx is None:
            ctx = _ANONYMOUS
        elif not isinstance(ctx, RequestContext):
            raise _not_a_context(ctx)
        plan = self._plan(sections)
        start = self._now()
        deadline = self._deadline(ctx, start)
        results: dict[str, SectionResult] = {}
        observer = self._observer
        token = None if observer is None else observer.page_started(self.keys.page, ctx)
        try:
            pending = await self._from_cache(plan, ctx, results, start, deadline)
            for result in list(results.values()):
                yield result
            if not pending:
                return
            ctx = self._with_deadline(ctx, deadline)
            send, receive = anyio.create_memory_object_stream[SectionResult](len(pending))
            scope: anyio.CancelScope = await tg.start(
                self._stream_pending, pending, ctx, send, start
            )
            try:
                async with receive:
                    async for result in receive:
                        results[result.name] = result
                        yield result
            finally:
                scope.cancel()
        finally:
            if observer is not None and len(results) == len(plan.names):
                page = PageResult(
                    {name: results[name] for name in plan.names},
                    version=self.keys.version,
                    generated_at=time.time(),
                    total_ms=(self._now() - start) * 1000,
                    required=self._required,
                )
                observer.page_finished(token, self.keys.page, page)

    async def _stream_pending(
        self,
        pending: list[tuple[Section, str | None, Entry | None]],
        ctx: RequestContext,
        send: MemoryObjectSendStream[SectionResult],
        start: float,
        *,
        task_status: anyio.abc.TaskStatus[anyio.CancelScope],
    ) -> None:
        run = _Run(self.fail_fast)
        with anyio.CancelScope(deadline=ctx.deadline) as scope:
            task_status.started(scope)
            async with send, anyio.create_task_group() as tg:
                run.stop = tg.cancel_scope
                for section, key, old in pending:
                    tg.start_soon(self._resolve_and_send, section, key, old, ctx, send, start, run)

    async def _resolve_and_send(
        self,
        section: Section,
        key: str | None,
        old: Entry | None,
        ctx: RequestContext,
        send: MemoryObjectSendStream[SectionResult],
        start: float,
        run: _Run,
    ) -> None:
        results: dict[str, SectionResult] = {}
        try:
            await self._resolve(section, key, old, ctx, results, run)
        except anyio.get_cancelled_exc_class():
            # The deadline, fail-fast, the consumer leaving or the aggregator
            # shutting down: a listener still gets one entry per section.
            short = self._cut_short(section, old, ctx, start, run)
            if self._observer is not None and section.name not in run.reported:
                self._observer.section_finished(None, self.keys.page, short)
            with contextlib.suppress(
                anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock
            ):
                send.send_nowait(short)
            raise
        # The buffer holds every section, so this never waits (and a fail-fast
        # cancel, raised by this very section, cannot lose its result); the
        # consumer may have stopped listening.
        with contextlib.suppress(
            anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock
        ):
            send.send_nowait(results[section.name])

    def _cut_short(
        self, section: Section, old: Entry | None, ctx: RequestContext, start: float, run: _Run
    ) -> SectionResult:
        """The result of a section cancelled before it had one: why, and what stands in."""
        status = CacheStatus.BYPASS if section.cache is None else CacheStatus.MISS
        now = self._now()
        if run.failed is not None:
            message = f"cancelled: required section {run.failed!r} failed"
            error = SectionError(section.name, ErrorCode.CANCELLED, message)
        elif now >= ctx.deadline:
            error = timeout_error(section, start, ctx.deadline)
        else:
            error = SectionError(section.name, ErrorCode.CANCELLED, "cancelled: shutting down")
        elapsed_ms = (now - start) * 1000
        return self._result(section, Attempt(None, error, 0.0), None, old, status, ctx, elapsed_ms)

    def _deadline(self, ctx: RequestContext, start: float) -> float:
        if self.page_timeout is None:
            return ctx.deadline
        return min(ctx.deadline, start + self.page_timeout)

    def _with_deadline(self, ctx: RequestContext, deadline: float) -> RequestContext:
        if ctx.deadline <= deadline:
            return ctx
        return attrs.evolve(ctx, deadline=deadline)

    def _keys_for(self, plan: _Plan, ctx: RequestContext) -> list[str | None]:
        """Each planned section's cache key (``None`` if not cached), memoised."""
        # The plan's names, not its identity: an unmemoised plan's id may be reused.
        # The params by their key token: typed, and bounded in size.
        user = ctx.user_id
        memo_key = (plan.names, user, ctx.params_key)
        keys = self._key_memo.get(memo_key)
        if keys is not None:
            return keys
        key = self.keys.key
        built = [None if s.cache is None else key(s, ctx) for s in plan.sections]
        if not plan.custom and (user is None or len(user) <= _MEMO_MAX_USER):
            if len(self._key_memo) >= _KEY_MEMO_SIZE:
                self._key_memo.clear()
            self._key_memo[memo_key] = built
        return built

    async def _from_cache(
        self,
        plan: _Plan,
        ctx: RequestContext,
        results: dict[str, SectionResult],
        start: float,
        deadline: float,
    ) -> list[tuple[Section, str | None, Entry | None]]:
        """Fill ``results`` from the cache, in plan order; return what must be fetched.

        This is the warm path: no task, no decoding, one cache call, within
        the page deadline. A page found fresh in memory from end to end is
        kept there as a view, for the next request to read in one lookup.
        """
        keys = self._keys_for(plan, ctx)
        lookup = [k for k in keys if k is not None]
        found: list[Entry | None] = []
        if lookup:
            budget = None if deadline == math.inf else deadline - start
            found = await self.cache.get_many(lookup, budget=budget)
        entries = iter(found)
        now = self.cache.clock()
        lookup_ms = (self._now() - start) * 1000
        decode = self.serializer.loads
        pending: list[tuple[Section, str | None, Entry | None]] = []
        fresh_until = math.inf
        for section, key in zip(plan.sections, keys, strict=True):
            if key is None:
                pending.append((section, None, None))
                continue
            entry = next(entries)
            if entry is None or now >= entry.stale_until:
                pending.append((section, key, entry))
                continue
            if now < entry.fresh_until:
                status = CacheStatus.HIT
                fresh_until = min(fresh_until, entry.fresh_until)
            else:
                status = CacheStatus.STALE
                fresh_until = -math.inf
                self._filler.schedule_refresh(self._task_group(), section, key, ctx)
            results[section.name] = SectionResult(
                section.name, entry.payload, status, lookup_ms, None, False, decode
            )
        if self._observer is not None:
            for result in results.values():
                self._observer.section_finished(None, self.keys.page, result)
        if not pending and now < fresh_until and plan.viewable:
            self._keep_view(plan, ctx, tuple(lookup), found, fresh_until)
        return pending

    def _keep_view(
        self,
        plan: _Plan,
        ctx: RequestContext,
        keys: tuple[str, ...],
        entries: list[Entry | None],
        fresh_until: float,
    ) -> None:
        """Keep this all-HIT page in memory as a view, if memory holds its entries as read."""
        memory = self._memory
        user = ctx.user_id
        if memory is None or (user is not None and len(user) > _MEMO_MAX_USER):
            return
        view = WarmPage(
            keys,
            plan.names,
            tuple(e.payload for e in entries if e is not None),
            version=self.keys.version,
            required=self._required,
            decode=self.serializer.loads,
            until=fresh_until,
        )
        # Entries that came from Redis and were not kept in memory (an
        # invalidation overtook the read) make no view: memory must hold them.
        # The slot names this aggregator (plans are its own), the user and the parameters.
        leaves = memory._keep_view((plan, user, ctx.params_key), view, entries)
        if leaves is not None:
            view.until = min(fresh_until, leaves)

    async def _resolve(
        self,
        section: Section,
        key: str | None,
        old: Entry | None,
        ctx: RequestContext,
        results: dict[str, SectionResult],
        run: _Run,
    ) -> None:
        """Fetch one section that the cache could not answer, and record it.

        With fail-fast, a required section that ends with nothing to show
        cancels the rest of the page: it is a 503 whatever they return.
        """
        observer = self._observer
        token = None if observer is None else observer.section_started(self.keys.page, section.name)
        start = self._now()
        try:
            if key is None:
                # The executor itself, not through the filler: one frame less for
                # every step of the source (the filler's call adds nothing here).
                attempt = await self.executor.call(
                    section, ctx, breaker=self._breakers.get(section.name), deadline=ctx.deadline
                )
                payload = self._filler.encode(section, attempt) if attempt.ok else None
                status = CacheStatus.BYPASS
            else:
                # Bounded by the source's own timeout and by the page's deadline
                # (the caller's scope); a follower of another caller's fetch too.
                fill = await self._filler.fill(section, key, ctx)
                attempt, payload = fill.attempt, fill.payload
                status = CacheStatus.MISS
        except anyio.get_cancelled_exc_class():
            if observer is not None:  # told here, in the section's own task
                run.reported.add(section.name)
                short = self._cut_short(section, old, ctx, start, run)
                observer.section_finished(token, self.keys.page, short)
            raise
        elapsed_ms = (self._now() - start) * 1000
        result = self._result(section, attempt, payload, old, status, ctx, elapsed_ms)
        results[section.name] = result
        if observer is not None:
            observer.section_finished(token, self.keys.page, result)
        if run.fail_fast and section.required and result.unavailable and run.failed is None:
            run.failed = section.name
            if run.stop is not None:  # None: it was the page's only pending section
                run.stop.cancel()

    def _result(
        self,
        section: Section,
        attempt: Attempt,
        payload: bytes | None,
        old: Entry | None,
        status: CacheStatus,
        ctx: RequestContext,
        elapsed_ms: float,
    ) -> SectionResult:
        name = section.name
        decode = self.serializer.loads
        if payload is not None:
            return SectionResult(name, payload, cache=status, elapsed_ms=elapsed_ms, decode=decode)
        error = attempt.error
        if error is None:  # the value could not be encoded
            error = SectionError(name, ErrorCode.SERIALIZATION_ERROR, "value is not serializable")
        if old is not None and old.usable_on_error(self.cache.clock()):
            return SectionResult(
                name,
                old.payload,
                cache=CacheStatus.STALE_IF_ERROR,
                elapsed_ms=elapsed_ms,
                error=error,
                stand_in=True,
                decode=decode,
            )
        if section.has_fallback:
            fallback = self._fallback(section, ctx)
            if fallback is not None:
                return SectionResult(
                    name,
                    fallback,
                    cache=status,
                    elapsed_ms=elapsed_ms,
                    error=error,
                    stand_in=True,
                    decode=decode,
                )
        return SectionResult(
            name, NULL, cache=status, elapsed_ms=elapsed_ms, error=error, decode=decode
        )

    def _fallback(self, section: Section, ctx: RequestContext) -> bytes | None:
        try:
            value = section.fallback(ctx) if callable(section.fallback) else section.fallback
        except Exception:
            logger.exception("section %r: fallback failed", section.name)
            return None
        try:
            return self.serializer.dumps(value)
        except Exception as exc:
            logger.exception("section %r: fallback: %s", section.name, encode_failure(exc))
            return None

    def _breaker_hook(self, section: str) -> Callable[[BreakerState], None] | None:
        observer = self._observer
        if observer is None:
            return None
        page = self.keys.page
        return lambda state: observer.breaker_changed(page, section, state)

    def breaker_state(self, section: str) -> BreakerState:
        """The state of a section's circuit breaker (``CLOSED`` when it has none)."""
        if not isinstance(section, str):
            raise TypeError(f"section must be a section name (str), not {echo(section)}")
        if section not in self.sections:
            raise UnknownSectionError([section])
        breaker = self._breakers.get(section)
        return BreakerState.CLOSED if breaker is None else breaker.state

    @property
    def refreshing(self) -> int:
        """Background refreshes running now (at most the executor's ``max_background``)."""
        return self._filler.refreshing

    async def settle(self) -> None:
        """Wait until the background refreshes started so far have finished.

        For tests, and for a graceful shutdown that lets refreshes land.
        """
        await self._filler.settle()

    # -- invalidation -------------------------------------------------------

    async def invalidate(
        self, section: str, *, user_id: str | None = None, scope: str | None = None
    ) -> None:
        """Drop a section's cached entries: all of them, or one user's, or one scope's.

        ``user_id`` names a personal section's user; ``scope`` is the value a
        custom scope function returned. Other instances learn of it through
        the cache (Redis pub/sub for a layered cache). Raises
        :class:`InvalidationIncomplete` when a layer could not be reached.
        """
        if not isinstance(section, str):
            raise TypeError(f"section must be a section name (str), not {echo(section)}")
        if user_id is not None and not isinstance(user_id, str):
            raise TypeError(f"user_id must be a str or None, not {echo(user_id)}")
        if user_id == "":
            raise ValueError("user_id must not be empty (None means every user)")
        if scope is not None and not isinstance(scope, str):
            raise TypeError(f"scope must be a str or None, not {echo(scope)}")
        if user_id is not None and scope is not None:
            raise ValueError("give user_id or scope, not both")
        target = self.sections.get(section)
        if target is None:
            raise UnknownSectionError([section])
        part: str | None = None
        if user_id is not None:
            if target.scope is not Scope.USER:
                raise ValueError(f"section {section!r} is not personal; user_id does not apply")
            part = self.keys.user_part(user_id)
        elif scope is not None:
            if isinstance(target.scope, Scope):
                raise ValueError(f"section {section!r} has no custom scope")
            part = self.keys.custom_part(scope)
        pattern = self.keys.pattern(section, part)
        if not await self.cache.invalidate(pattern):
            raise InvalidationIncomplete(
                f"invalidation of {pattern.glob()!r} did not reach every cache layer; retry"
            )

    def __repr__(self) -> str:
        return (
            f"Aggregator(page={self.keys.page!r}, version={self.keys.version!r}, "
            f"sections={list(self.sections)})"
        )


def _not_a_context(ctx: object) -> TypeError:
    message = f"ctx must be a RequestContext or None, not {echo(ctx)}"
    if isinstance(ctx, list | tuple | set | frozenset | str):
        message += "; sections are given by keyword: sections=[...]"
    return TypeError(message)


def _watch(cache: Cache, executor: Executor, observer: Observer) -> None:
    """Tell ``observer`` of the cache's health and the executor's abandoned threads."""
    watch = getattr(cache, "watch_health", None)
    if callable(watch):
        watch(observer.cache_health)
    executor.watch_abandoned(observer.thread_abandoned)
