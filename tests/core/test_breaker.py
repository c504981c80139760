"""A section's circuit breaker stops calls to a source that keeps failing."""

from __future__ import annotations

import anyio
import pytest

from batchpage import Aggregator, BreakerPolicy, BreakerState, ErrorCode, RequestContext, Section
from batchpage._breaker import CircuitBreaker
from helpers import Recorder, run_on_mock_clock

pytestmark = pytest.mark.anyio


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so mypy does not narrow the property


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    """Closed → open after N failures → one trial after the cool-down."""
    clock = Ticker()
    b = CircuitBreaker(BreakerPolicy(failure_threshold=3, reset_timeout=10), clock)
    for _ in range(2):
        assert b.try_acquire()
        b.record_failure()
    assert state(b) is BreakerState.CLOSED
    assert b.try_acquire()
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    assert not b.try_acquire()
    clock.now = 10
    assert state(b) is BreakerState.HALF_OPEN
    assert b.try_acquire()  # the trial
    assert not b.try_acquire()  # everyone else waits for its verdict
    b.record_success()
    assert state(b) is BreakerState.CLOSED


def test_failed_trial_reopens_at_once() -> None:
    """One failure in half-open state re-opens the breaker for a full cool-down."""
    clock = Ticker()
    b = CircuitBreaker(BreakerPolicy(failure_threshold=1, reset_timeout=5), clock)
    b.try_acquire()
    b.record_failure()
    clock.now = 5
    assert b.try_acquire()
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    clock.now = 9.9
    assert not b.try_acquire()


def test_success_resets_the_failure_count() -> None:
    """Failures must be consecutive to open the breaker."""
    b = CircuitBreaker(BreakerPolicy(failure_threshold=2), Ticker())
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert state(b) is BreakerState.CLOSED


def test_open_circuit_answers_at_once_with_fallback() -> None:
    """After N failures the source is not called; the page answers CIRCUIT_OPEN at once."""

    async def run() -> None:
        source = Recorder(fail=True)
        section = Section(
            name="a",
            source=source,
            fallback=[],
            breaker=BreakerPolicy(failure_threshold=2, reset_timeout=30),
        )
        async with Aggregator(
            [section, Section(name="b", source=Recorder())], page="breaker"
        ) as agg:
            for _ in range(2):
                page = await agg.fetch()
                assert page.errors[0].code is ErrorCode.SOURCE_ERROR
            start = anyio.current_time()
            page = await agg.fetch()
            assert anyio.current_time() == start
            assert source.calls == 2
            assert page.errors[0].code is ErrorCode.CIRCUIT_OPEN
            assert page.sections["a"] == []
            await anyio.sleep(30)
            source.fail = False
            page = await agg.fetch()  # the trial call succeeds and closes the circuit
            assert page.errors == []
            assert source.calls == 3

    run_on_mock_clock(run)


async def test_breaker_can_be_turned_off() -> None:
    """``breaker=None`` calls the source every time."""
    source = Recorder(fail=True)
    async with Aggregator([Section(name="a", source=source, breaker=None)], page="breaker") as agg:
        for _ in range(8):
            await agg.fetch()
    assert source.calls == 8


async def test_timeouts_count_as_failures() -> None:
    """A source that keeps timing out opens its breaker too."""
    source = Recorder(delay=30)
    section = Section(
        name="a", source=source, timeout=0.01, breaker=BreakerPolicy(failure_threshold=1)
    )
    async with Aggregator([section], page="breaker") as agg:
        await agg.fetch(RequestContext())
        page = await agg.fetch(RequestContext())
    assert page.errors[0].code is ErrorCode.CIRCUIT_OPEN
    assert source.calls == 1
