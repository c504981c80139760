"""Hooks for metrics, traces and logs: what the aggregator does, as it does it.

An :class:`Observer` is told when a page starts and ends, when each section
ends (and, for sections that go to their source, when they start), what
background refreshes do, when a breaker changes state, when a cache layer
is lost or back, and when a worker thread is abandoned. Every method is a
no-op: subclass and override what you need (``batchpage.contrib.prometheus``
and ``batchpage.contrib.otel`` are two such subclasses).

Hooks run synchronously, in the task doing the work, so a tracer can make its
span current for the section's source. They must be quick and must not
raise: an exception is logged and ignored, never failing a page.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._breaker import BreakerState
    from ._context import RequestContext
    from ._result import PageResult, SectionResult

logger = logging.getLogger("batchpage.observer")


class RefreshOutcome(enum.Enum):
    """What became of a stale entry's background refresh."""

    STARTED = "started"  #: the source is being called
    REFRESHED = "refreshed"  #: a new value was stored
    FAILED = "failed"  #: the source failed: the stale value keeps serving
    SKIPPED = "skipped"  #: another instance held the lock, refreshed first, or the breaker was open
    DROPPED = "dropped"  #: the background bound was full


class Observer:
    """Override the hooks you need; the others do nothing. Tokens are yours.

    ``page_started`` and ``section_started`` return a token (a span, a
    start time, ``None``) that comes back in the matching ``*_finished``
    call. A section answered from the cache gets only ``section_finished``,
    with the token ``None``.
    """

    def page_started(self, page: str, ctx: RequestContext) -> object:
        """A page is asked for; what this returns comes back to :meth:`page_finished`."""
        return None

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        """The page is assembled (not called for one cancelled or closed before its end)."""

    def section_started(self, page: str, section: str) -> object:
        """A section goes to its source (a cache hit skips this), in the section's task."""
        return None

    def page_from_memory(self, page: str, ctx: RequestContext, result: PageResult) -> None:
        """A page answered whole from memory, every section a fresh HIT.

        By default the hooks of any page read from the cache, in turn:
        :meth:`page_started`, :meth:`section_finished` for each section (token
        ``None``), :meth:`page_finished`. On a warm page those calls are most
        of the aggregator's own work: override this to count such a page at once.
        """
        token = self.page_started(page, ctx)
        for section in result.results.values():
            self.section_finished(None, page, section)
        self.page_finished(token, page, result)

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        """A section has its result, cached or fetched; ``token`` is ``None`` for a hit."""

    def refresh(self, page: str, section: str, outcome: RefreshOutcome) -> None:
        """A stale entry's background refresh started, ended, or did not run."""

    def breaker_changed(self, page: str, section: str, state: BreakerState) -> None:
        """A section's circuit breaker opened, let a trial through, or closed."""

    def cache_health(self, layer: str, healthy: bool) -> None:
        """A shared cache layer (``"redis"``) was lost (``False``) or is back."""

    def thread_abandoned(self, section: str) -> None:
        """A sync source's worker thread outlived its timeout and was left to finish."""


class Observers(Observer):
    """Several observers as one; one that raises is logged and skipped."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        for observer in observers:
            if not isinstance(observer, Observer):
                raise TypeError(f"observers must be Observer objects, not {observer!r}")
        self.observers = tuple(observers)

    def page_started(self, page: str, ctx: RequestContext) -> object:
        return tuple(_safely(o.page_started, page, ctx) for o in self.observers)

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        assert isinstance(token, tuple)
        for o, t in zip(self.observers, token, strict=True):
            _safely(o.page_finished, t, page, result)

    def section_started(self, page: str, section: str) -> object:
        return tuple(_safely(o.section_started, page, section) for o in self.observers)

    def page_from_memory(self, page: str, ctx: RequestContext, result: PageResult) -> None:
        for o in self.observers:
            _safely(o.page_from_memory, page, ctx, result)

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        tokens = token if isinstance(token, tuple) else (None,) * len(self.observers)
        for o, t in zip(self.observers, tokens, strict=True):
            _safely(o.section_finished, t, page, result)

    def refresh(self, page: str, section: str, outcome: RefreshOutcome) -> None:
        for o in self.observers:
            _safely(o.refresh, page, section, outcome)

    def breaker_changed(self, page: str, section: str, state: BreakerState) -> None:
        for o in self.observers:
            _safely(o.breaker_changed, page, section, state)

    def cache_health(self, layer: str, healthy: bool) -> None:
        for o in self.observers:
            _safely(o.cache_health, layer, healthy)

    def thread_abandoned(self, section: str) -> None:
        for o in self.observers:
            _safely(o.thread_abandoned, section)


class GuardedObserver(Observer):
    """One observer, each hook guarded as :class:`Observers` guards them, without the fan-out.

    Most aggregators have one observer; on a warm page its hooks are most of
    the aggregator's own work, so they are called directly.
    """

    def __init__(self, observer: Observer) -> None:
        if not isinstance(observer, Observer):
            raise TypeError(f"observers must be Observer objects, not {observer!r}")
        self.observer = observer

    def page_started(self, page: str, ctx: RequestContext) -> object:
        return _safely(self.observer.page_started, page, ctx)

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        _safely(self.observer.page_finished, token, page, result)

    def section_started(self, page: str, section: str) -> object:
        return _safely(self.observer.section_started, page, section)

    def page_from_memory(self, page: str, ctx: RequestContext, result: PageResult) -> None:
        _safely(self.observer.page_from_memory, page, ctx, result)

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        _safely(self.observer.section_finished, token, page, result)

    def refresh(self, page: str, section: str, outcome: RefreshOutcome) -> None:
        _safely(self.observer.refresh, page, section, outcome)

    def breaker_changed(self, page: str, section: str, state: BreakerState) -> None:
        _safely(self.observer.breaker_changed, page, section, state)

    def cache_health(self, layer: str, healthy: bool) -> None:
        _safely(self.observer.cache_health, layer, healthy)

    def thread_abandoned(self, section: str) -> None:
        _safely(self.observer.thread_abandoned, section)


def combined(observers: Sequence[Observer]) -> Observer | None:
    """``observers`` as one guarded observer; ``None`` for none."""
    if not observers:
        return None
    if len(observers) == 1:
        return GuardedObserver(observers[0])
    return Observers(observers)


def _safely(hook: Callable[..., object], *args: object) -> object:
    try:
        return hook(*args)
    except Exception:
        logger.exception("observer hook %s failed", getattr(hook, "__qualname__", hook))
        return None
