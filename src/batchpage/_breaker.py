"""A circuit breaker per section: stop calling a source that keeps failing.

After ``failure_threshold`` consecutive failures the breaker *opens*: calls
answer ``CIRCUIT_OPEN`` at once for ``reset_timeout`` seconds. Then it lets one
trial call through (*half-open*); its outcome closes or re-opens the breaker.
Concurrent callers during the trial are refused rather than piling onto a
source that is probably still down.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from ._units import Seconds, positive_seconds


def _threshold(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"failure_threshold must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"failure_threshold must be at least 1, got {value!r}")
    return value


def _reset_timeout(value: Seconds) -> float:
    return positive_seconds(value, name="reset_timeout")


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """When a section's breaker opens, and for how long (seconds or ``timedelta``)."""

    failure_threshold: int = attrs.field(default=5, converter=_threshold)
    reset_timeout: float = attrs.field(default=30.0, converter=_reset_timeout)


class BreakerState(enum.Enum):
    """Where a section's circuit breaker stands (:meth:`Aggregator.breaker_state`)."""

    CLOSED = "closed"  #: calls go through; failures are counted
    OPEN = "open"  #: calls answer ``CIRCUIT_OPEN`` at once until ``reset_timeout`` ends
    HALF_OPEN = "half-open"  #: one trial call may go through; its outcome decides


class CircuitBreaker:
    """The mutable state of one section's breaker; time comes from ``clock``."""

    __slots__ = ("_clock", "_failures", "_on_change", "_opened_at", "_trial_running", "policy")

    def __init__(
        self,
        policy: BreakerPolicy,
        clock: Callable[[], float],
        *,
        on_change: Callable[[BreakerState], object] | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        #: Told of each transition: opened, half-open (a trial call let through), closed.
        self._on_change = on_change
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.policy.reset_timeout:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allows(self) -> bool:
        """Would a call go through now? Takes nothing: callers skip cache work on a no."""
        if self._opened_at is None:
            return True
        return self.state is BreakerState.HALF_OPEN and not self._trial_running

    def try_acquire(self) -> bool:
        """May a call go through now? In half-open state only the first may."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._trial_running:
            return False
        self._trial_running = True
        if self._on_change is not None:
            self._on_change(BreakerState.HALF_OPEN)
        return True

    def record_success(self) -> None:
        was_open = self._opened_at is not None
        self._failures = 0
        self._opened_at = None
        self._trial_running = False
        if was_open and self._on_change is not None:
            self._on_change(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self.policy.failure_threshold:
            self._opened_at = self._clock()
            if self._on_change is not None:
                self._on_change(BreakerState.OPEN)
        self._trial_running = False

    def release(self) -> None:
        """A call ended without a verdict (it was cancelled): free the trial slot."""
        self._trial_running = False
