"""Runs sources concurrently under limits, timeouts and one page deadline.

Every failure mode of a source becomes an :class:`Attempt` value, never an
exception: a page must be assembled whatever its sources do. Only cancellation
from outside (the client went away, the server shuts down) propagates.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any

import anyio
import attrs

from ._breaker import CircuitBreaker
from ._context import RequestContext
from ._eager import Waiting
from ._errors import ErrorCode, SectionError
from ._loop import running_loop, same_loop
from ._section import Section

logger = logging.getLogger("batchpage")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def timeout_error(
    section: Section, start: float, deadline: float, *, abandoned: bool = False
) -> SectionError:
    """The client-safe error of a section cut off at its timeout or the page deadline."""
    if deadline < start + section.timeout:
        left = deadline - start
        if left > 0:
            message = f"page deadline reached after {_ms(left)}"
        else:
            message = "page deadline reached before the source was called"
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
    #: Calls refused because the section's abandoned threads were all still stuck.
    threads_refused: int = 0
    #: Background calls (refreshes) made.
    background_calls: int = 0


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


def circuit_open(section: Section) -> Attempt:
    """The attempt of a call its breaker refused."""
    return Attempt(
        None,
        SectionError(section.name, ErrorCode.CIRCUIT_OPEN, "circuit open: source not called"),
        0.0,
    )


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")


class _Thread:
    """One sync call's worker thread, as seen from both sides (guarded by a lock)."""

    __slots__ = ("abandoned", "done")

    def __init__(self) -> None:
        self.done = False
        self.abandoned = False


class Executor:
    """Calls sections' sources: concurrency limits, timeouts, threads, breakers.

    ``max_concurrency`` bounds the sources running at once for pages across
    every page this executor serves (the seed's pool of 50 database
    connections); a source waiting for a slot is already on its clock.
    ``max_background`` is a separate, smaller bound for background refreshes,
    so that they never take a page's slot; a refresh that does not fit is
    skipped (and the stale value keeps serving).

    A sync source runs in a worker thread, which cannot be interrupted: at its
    timeout it is abandoned and finishes alone. A section whose abandoned
    threads are still stuck ``max_stuck_threads`` deep is not called again
    until one of them returns (``TIMEOUT_ERROR``, counted by its breaker), so a
    hung sync source cannot take an unbounded number of threads.
    """

    def __init__(
        self, *, max_concurrency: int = 50, max_background: int = 10, max_stuck_threads: int = 4
    ) -> None:
        _check_count(max_concurrency, "max_concurrency")
        _check_count(max_background, "max_background")
        _check_count(max_stuck_threads, "max_stuck_threads")
        self.max_concurrency = max_concurrency
        self.max_background = max_background
        self.max_stuck_threads = max_stuck_threads
        self._loop: object = None
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._background = anyio.CapacityLimiter(max_background)
        # Our own thread limiter: stuck sources must not exhaust the
        # application's default one (anyio's 40 threads), nor it ours.
        self._threads = anyio.CapacityLimiter(max_concurrency + max_background)
        self._now: Callable[[], float] = anyio.current_time
        self._scope: Callable[..., anyio.CancelScope] = anyio.CancelScope
        self._stuck: dict[str, int] = {}
        self._stuck_lock = threading.Lock()
        self._abandoned_listeners: list[Callable[[str], object]] = []
        self.stats = ExecutorStats()

    def watch_abandoned(self, listener: Callable[[str], object]) -> None:
        """Call ``listener(section)`` each time a worker thread is abandoned."""
        if listener not in self._abandoned_listeners:
            self._abandoned_listeners.append(listener)

    def _bind(self) -> None:
        # A limiter belongs to one event loop; an executor may outlive it
        # (a test, a worker restarting its loop), so bind to the running one.
        if same_loop(self._loop):
            return
        loop, now = running_loop()
        self._loop = loop
        self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        self._background = anyio.CapacityLimiter(self.max_background)
        self._threads = anyio.CapacityLimiter(self.max_concurrency + self.max_background)
        self._now = now
        # The backend's own cancel scope class: ``anyio.CancelScope(...)``
        # looks the backend up on every call, and a page makes one per source.
        self._scope = _scope_class()

    def stuck_threads(self, section: str) -> int:
        """Abandoned worker threads of ``section`` that have not returned yet."""
        return self._stuck.get(section, 0)

    async def call(
        self,
        section: Section,
        ctx: RequestContext,
        *,
        breaker: CircuitBreaker | None = None,
        deadline: float = math.inf,
        background: bool = False,
    ) -> Attempt:
        """Call ``section``'s source once, by ``deadline`` and its own timeout.

        The timeout counts from this call: cache work before it is not the
        source's time. Whatever cancels the call, if the source's own
        deadline has passed by then its breaker counts a timeout.
        """
        name = section.name
        self._bind()
        limiter = self._background if background else self._limiter
        now = self._now
        start = now()
        stats = self.stats
        stats.calls += 1
        if background:
            stats.background_calls += 1
        if breaker is not None and not breaker.try_acquire():
            stats.circuit_open += 1
            return circuit_open(section)
        is_async = section.is_async
        if not is_async and self._stuck.get(name, 0) >= self.max_stuck_threads:
            stats.threads_refused += 1
            if breaker is not None:
                breaker.record_failure()
            stuck = self._stuck.get(name, 0)
            message = f"source not called: {stuck} worker threads still stuck"
            return Attempt(None, SectionError(name, ErrorCode.TIMEOUT_ERROR, message), 0.0)
        timeout = start + section.timeout
        limit = timeout if timeout < deadline else deadline
        # The source's timeout counts from ``start``, but the scope's deadline
        # is armed only once the source (or the wait for a slot) first waits:
        # cancellation can reach a task only where it waits, so a source that
        # answers in its first step is not cut either way, and it costs no
        # timer (on asyncio, a handle left in the loop's heap until it is due).
        scope = self._scope()
        # The slot is borrowed by this call, not by the task: a task may make
        # several calls in turn (a page's sections started eagerly), or a
        # source may fetch another page through the same executor.
        borrower = scope
        abandoned = [False]
        verdict: bool | None = None
        try:
            with scope:
                # Take a free slot without yielding to the loop: most calls find one.
                try:
                    limiter.acquire_on_behalf_of_nowait(borrower)
                except anyio.WouldBlock:
                    scope.deadline = limit
                    await limiter.acquire_on_behalf_of(borrower)
                try:
                    if not is_async:
                        scope.deadline = limit
                        value = await self._invoke(section, ctx, abandoned)
                    else:
                        coro = section.source(ctx)
                        if type(coro) is not CoroutineType:  # an awaitable of another kind
                            scope.deadline = limit
                            value = await coro
                        else:
                            try:
                                yielded = coro.send(None)
                            except StopIteration as done:
                                value = done.value
                            else:
                                scope.deadline = limit
                                value = await Waiting(coro, yielded)
                finally:
                    limiter.release_on_behalf_of(borrower)
                verdict = True
                return Attempt(value, None, now() - start)
            # Only reached when our own scope cancelled the call: it was late.
            verdict = False
            stats.timeouts += 1
            error = timeout_error(section, start, deadline, abandoned=abandoned[0])
            return Attempt(None, error, now() - start)
        except Exception as exc:
            verdict = False
            stats.failures += 1
            elapsed = now() - start
            if isinstance(exc, TimeoutError):
                stats.timeouts += 1
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
            if verdict is None and scope.cancel_called:
                # An outer scope with the same deadline (the page's) delivered
                # the cancellation; it is still this source's timeout.
                verdict = False
                stats.timeouts += 1
            if breaker is not None:
                if verdict is True:
                    breaker.record_success()
                elif verdict is False:
                    breaker.record_failure()
                else:
                    breaker.release()

    async def _invoke(self, section: Section, ctx: RequestContext, abandoned: list[bool]) -> Any:
        """Call a sync source in a worker thread, abandoned (and counted) at its timeout."""
        thread = _Thread()
        source = section.source
        name = section.name
        lock = self._stuck_lock
        stuck = self._stuck

        def work() -> Any:
            try:
                result = source(ctx)
                # Boxed: trio refuses a worker thread that returns a coroutine.
                return _Awaitable(result) if inspect.isawaitable(result) else result
            finally:
                with lock:
                    thread.done = True
                    if thread.abandoned:
                        stuck[name] -= 1

        try:
            result = await anyio.to_thread.run_sync(
                work, abandon_on_cancel=True, limiter=self._threads
            )
        except anyio.get_cancelled_exc_class():
            with lock:
                if not thread.done:
                    # The thread cannot be interrupted; it finishes on its own,
                    # and its result is dropped. Counted, and bounded per section.
                    thread.abandoned = True
                    stuck[name] = stuck.get(name, 0) + 1
            if thread.abandoned:
                abandoned[0] = True
                self.stats.threads_abandoned += 1
                logger.warning("section %r: worker thread abandoned after timeout", name)
                for listener in self._abandoned_listeners:
                    listener(name)
            raise
        if isinstance(result, _Awaitable):
            # A plain function that returned a coroutine (``lambda ctx: fetch(ctx)``).
            return await result.awaitable
        return result


def _scope_class() -> Callable[..., anyio.CancelScope]:
    """The running backend's cancel scope class (trio's own under trio)."""
    scope = anyio.CancelScope()
    if type(scope).__module__.startswith("anyio._backends._trio"):
        import trio

        return trio.CancelScope  # type: ignore[return-value]  # the same interface
    return type(scope)


class _Awaitable:
    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable
