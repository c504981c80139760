"""Runs sources concurrently under limits, timeouts and one page deadline.

Every failure mode of a source becomes an :class:`Attempt` value, never an
exception: a page must be assembled whatever its sources do. Only cancellation
from outside (the client went away, the server shuts down) propagates.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs

from ._breaker import CircuitBreaker
from ._context import RequestContext
from ._errors import ErrorCode, SectionError
from ._loop import running_loop
from ._section import Section

logger = logging.getLogger("batchpage")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def timeout_error(
    section: Section, start: float, deadline: float, *, abandoned: bool = False
) -> SectionError:
    """The client-safe error of a section cut off at its timeout or the page deadline."""
    if deadline < start + section.timeout:
        message = f"page deadline reached after {_ms(deadline - start)}"
    else:
        message = f"timed out after {_ms(section.timeout)}"
    if abandoned:
        message += " (worker thread abandoned)"
    return SectionError(section.name, ErrorCode.TIMEOUT_ERROR, message)


@attrs.define
class ExecutorStats:
    """Counters an operator wants on a dashboard."""

    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    circuit_open: int = 0
    #: Worker threads that outlived their timeout and were left to finish alone.
    threads_abandoned: int = 0


class Attempt:
    """What one call of a source gave: a value, or a client-safe error."""

    __slots__ = ("elapsed", "error", "value")

    def __init__(self, value: Any, error: SectionError | None, elapsed: float) -> None:
        self.value = value
        self.error = error
        self.elapsed = elapsed

    @property
    def ok(self) -> bool:
        return self.error is None


def _check_concurrency(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_concurrency must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {value!r}")


class Executor:
    """Calls sections' sources: concurrency limit, timeouts, threads, breakers.

    ``max_concurrency`` bounds the sources running at once across every page
    this executor serves (the seed's pool of 50 database connections); a
    source waiting for a slot is already on its clock.
    """

    def __init__(self, *, max_concurrency: int = 50) -> None:
        _check_concurrency(max_concurrency)
        self.max_concurrency = max_concurrency
        self._loop: object = None
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._now: Callable[[], float] = anyio.current_time
        self.stats = ExecutorStats()

    def _bind(self) -> anyio.CapacityLimiter:
        # A limiter belongs to one event loop; an executor may outlive it
        # (a test, a worker restarting its loop), so bind to the running one.
        loop, now = running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
            self._now = now
        return self._limiter

    async def call(
        self,
        section: Section,
        ctx: RequestContext,
        *,
        breaker: CircuitBreaker | None = None,
        deadline: float = math.inf,
    ) -> Attempt:
        """Call ``section``'s source once, by ``deadline`` and its own timeout."""
        name = section.name
        limiter = self._bind()
        now = self._now
        start = now()
        self.stats.calls += 1
        if breaker is not None and not breaker.try_acquire():
            self.stats.circuit_open += 1
            return Attempt(
                None,
                SectionError(name, ErrorCode.CIRCUIT_OPEN, "circuit open: source not called"),
                0.0,
            )
        own_deadline = start + section.timeout
        abandoned = [False]
        verdict: bool | None = None
        try:
            with anyio.CancelScope(deadline=min(own_deadline, deadline)):
                # Take a free slot without yielding to the loop: most calls find one.
                try:
                    limiter.acquire_nowait()
                except anyio.WouldBlock:
                    await limiter.acquire()
                try:
                    value = await self._invoke(section, ctx, abandoned)
                finally:
                    limiter.release()
                verdict = True
                return Attempt(value, None, now() - start)
            # Only reached when our own scope cancelled the call: it was late.
            verdict = False
            self.stats.timeouts += 1
            error = timeout_error(section, start, deadline, abandoned=abandoned[0])
            return Attempt(None, error, now() - start)
        except Exception as exc:
            verdict = False
            self.stats.failures += 1
            elapsed = now() - start
            if isinstance(exc, TimeoutError):
                self.stats.timeouts += 1
                logger.warning("section %r: source timed out", name, exc_info=exc)
                return Attempt(
                    None,
                    SectionError(name, ErrorCode.TIMEOUT_ERROR, "source timed out"),
                    elapsed,
                )
            logger.error("section %r: source failed", name, exc_info=exc)
            return Attempt(
                None,
                SectionError(name, ErrorCode.SOURCE_ERROR, f"source failed ({type(exc).__name__})"),
                elapsed,
            )
        finally:
            if breaker is not None:
                if verdict is True:
                    breaker.record_success()
                elif verdict is False:
                    breaker.record_failure()
                else:
                    breaker.release()

    async def _invoke(self, section: Section, ctx: RequestContext, abandoned: list[bool]) -> Any:
        if section.is_async:
            return await section.source(ctx)
        done = [False]
        source = section.source

        def work() -> Any:
            try:
                result = source(ctx)
                # Boxed: trio refuses a worker thread that returns a coroutine.
                return _Awaitable(result) if inspect.isawaitable(result) else result
            finally:
                done[0] = True

        try:
            result = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            if not done[0]:
                # The thread cannot be interrupted; it finishes on its own, and
                # its result is dropped. Count it so a leak shows on a dashboard.
                abandoned[0] = True
                self.stats.threads_abandoned += 1
                logger.warning("section %r: worker thread abandoned after timeout", section.name)
            raise
        if isinstance(result, _Awaitable):
            # A plain function that returned a coroutine (``lambda ctx: fetch(ctx)``).
            return await result.awaitable
        return result


class _Awaitable:
    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable
