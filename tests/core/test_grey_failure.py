"""Grey failure without servers: slow, stuck and racing sources keep the failure rules.

Each test here reproduces one way the guarantees broke when a dependency was
slow rather than down (issue 7), on a virtual clock where the behaviour is a
matter of time, and on real threads where it is a matter of threads.
"""

from __future__ import annotations

import logging
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from batchpage import (
    Aggregator,
    BreakerPolicy,
    BreakerState,
    CachePolicy,
    CacheStatus,
    ErrorCode,
    Executor,
    MemoryCache,
    RequestContext,
    Scope,
    Section,
)
from helpers import FakeClock, Recorder, run_on_mock_clock

pytestmark = pytest.mark.anyio

POLICY = CachePolicy(fresh=10, stale=100, stale_if_error=0, jitter=0)


class Hang:
    """An async source that never answers (until cancelled); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ctx: RequestContext) -> Any:
        self.calls += 1
        await anyio.sleep_forever()


class Stuck:
    """A sync source that blocks its thread until released; counts calls and live threads."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.live = 0
        self._lock = threading.Lock()

    def __call__(self, ctx: RequestContext) -> str:
        with self._lock:
            self.calls += 1
            self.live += 1
        try:
            self.release.wait(30)  # bounded: released by the test's teardown
            return "late"
        finally:
            with self._lock:
                self.live -= 1


@pytest.fixture
def stuck() -> Iterator[Stuck]:
    source = Stuck()
    yield source
    source.release.set()


def breaker_state(agg: Aggregator, name: str) -> BreakerState:
    return agg._breakers[name].state


# -- 1. a cached section's breaker sees its timeouts ------------------------


def test_a_hanging_cached_source_opens_its_breaker() -> None:
    """8 pages, threshold 2: the source is called twice, then the breaker answers."""

    async def run() -> None:
        source = Hang()
        section = Section(
            name="a",
            source=source,
            timeout=0.1,
            cache=POLICY,
            breaker=BreakerPolicy(failure_threshold=2, reset_timeout=60),
        )
        async with Aggregator([section], page="grey-failure", cache=MemoryCache()) as agg:
            pages = [await agg.fetch() for _ in range(8)]
            assert source.calls == 2
            assert breaker_state(agg, "a") is BreakerState.OPEN
        codes = [p.errors[0].code for p in pages]
        assert codes == [ErrorCode.TIMEOUT_ERROR] * 2 + [ErrorCode.CIRCUIT_OPEN] * 6

    run_on_mock_clock(run)


def test_the_page_deadline_cutting_a_source_counts_for_its_breaker() -> None:
    """A source cut by the page deadline (before its own timeout) is a failure too."""

    async def run() -> None:
        source = Hang()
        section = Section(
            name="a",
            source=source,
            timeout=5,
            cache=POLICY,
            breaker=BreakerPolicy(failure_threshold=2, reset_timeout=60),
        )
        async with Aggregator([section], page="grey-failure", page_timeout=0.2) as agg:
            for _ in range(3):
                page = await agg.fetch()
                assert page.errors[0].code in {ErrorCode.TIMEOUT_ERROR, ErrorCode.CIRCUIT_OPEN}
            assert source.calls == 2
            assert breaker_state(agg, "a") is BreakerState.OPEN

    run_on_mock_clock(run)


async def test_a_stuck_sync_source_holds_a_bounded_number_of_threads(stuck: Stuck) -> None:
    """Each timed-out call abandons a thread; past the bound the source is not called."""
    executor = Executor(max_stuck_threads=3)
    section = Section(name="a", source=stuck, timeout=0.02, cache=POLICY, breaker=None)
    async with Aggregator([section], page="grey-failure", executor=executor) as agg:
        pages = [await agg.fetch() for _ in range(12)]
    assert stuck.calls == 3
    assert stuck.live == 3
    assert executor.stuck_threads("a") == 3
    assert executor.stats.threads_refused == 9
    assert all(p.errors[0].code is ErrorCode.TIMEOUT_ERROR for p in pages)
    assert "worker threads still stuck" in pages[-1].errors[0].message


async def test_stuck_threads_are_counted_down_when_they_return(stuck: Stuck) -> None:
    """A stuck thread that finally returns frees its place: the source is called again."""
    executor = Executor(max_stuck_threads=1)
    section = Section(name="a", source=stuck, timeout=0.02, breaker=None)
    async with Aggregator([section], page="grey-failure", executor=executor) as agg:
        await agg.fetch()
        assert executor.stuck_threads("a") == 1
        stuck.release.set()
        with anyio.fail_after(5):
            # The count drops in the worker thread itself: nothing to await.
            while executor.stuck_threads("a"):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        page = await agg.fetch()
    assert page.sections["a"] == "late"
    assert stuck.calls == 2


async def test_stuck_threads_never_starve_a_healthy_sync_section(stuck: Stuck) -> None:
    """50 pages with a hung cached sync source: the healthy sync section answers on each."""

    def healthy(ctx: RequestContext) -> str:
        return "fine"

    sections = [
        Section(name="stuck", source=stuck, timeout=0.02, cache=POLICY, breaker=None),
        Section(name="healthy", source=healthy, timeout=1.0),
    ]
    async with Aggregator(sections, page="grey-failure") as agg:
        pages = [await agg.fetch() for _ in range(50)]
        assert breaker_state(agg, "healthy") is BreakerState.CLOSED
    assert all(p.status_code == 200 for p in pages)
    assert all(p.results["healthy"].error is None for p in pages)
    assert stuck.live <= agg.executor.max_stuck_threads


# -- 2. background refreshes are bounded and keep off the foreground ---------


def test_thousands_of_stale_entries_do_not_starve_a_page() -> None:
    """2,000 stale personal entries, then a page: its healthy section answers at once."""

    async def run() -> None:
        clock = FakeClock()
        personal = Recorder("mine", delay=0.2)
        healthy = Recorder("ok", delay=0.01)
        sections = [
            Section(name="mine", source=personal, timeout=0.3, cache=POLICY, scope=Scope.USER),
            Section(name="healthy", source=healthy, timeout=0.3),
        ]
        executor = Executor(max_concurrency=50, max_background=10)
        cache = MemoryCache(max_entries=5000, clock=clock)
        async with Aggregator(sections, page="grey-failure", cache=cache, executor=executor) as agg:
            users = [f"u{i}" for i in range(2000)]
            for user in users:
                await agg.fetch(RequestContext(user_id=user), sections=["mine"])
            clock.advance(11)  # every entry is stale now
            for user in users:
                page = await agg.fetch(RequestContext(user_id=user), sections=["mine"])
                assert page.results["mine"].cache is CacheStatus.STALE
            page = await agg.fetch(RequestContext(user_id="u0"))
            assert page.status_code == 200
            assert page.results["healthy"].error is None
            assert agg.stats.refreshes_dropped == 2000 - 10
            await agg.settle()
            assert breaker_state(agg, "mine") is BreakerState.CLOSED
            assert agg.stats.refresh_failures == 0

    run_on_mock_clock(run)


def test_an_open_breaker_skips_the_refresh_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Stale pages of a section whose breaker is open start no refresh and log nothing."""

    async def run() -> None:
        clock = FakeClock()
        source = Recorder("v", delay=0.01)
        section = Section(
            name="a",
            source=source,
            timeout=0.1,
            cache=POLICY,
            breaker=BreakerPolicy(failure_threshold=1, reset_timeout=600),
        )
        async with Aggregator(
            [section], page="grey-failure", cache=MemoryCache(clock=clock)
        ) as agg:
            await agg.fetch()
            clock.advance(11)
            source.fail = True
            await agg.fetch()  # stale: the refresh fails and opens the breaker
            await agg.settle()
            assert breaker_state(agg, "a") is BreakerState.OPEN
            calls = source.calls
            caplog.clear()
            for _ in range(20):
                page = await agg.fetch()
                assert page.results["a"].cache is CacheStatus.STALE
            await agg.settle()
            assert source.calls == calls
            assert agg.stats.refreshes_skipped == 20
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

    with caplog.at_level(logging.WARNING, logger="batchpage"):
        run_on_mock_clock(run)


# -- 3. the page deadline bounds the page --------------------------------------


def test_the_deadline_message_is_never_negative() -> None:
    """A section cut by the page deadline says how long the page had, never less than 0."""

    async def run() -> None:
        sections = [
            Section(name="slow", source=Hang(), timeout=2, cache=POLICY),
            Section(name="fast", source=Recorder("ok"), timeout=2),
        ]
        async with Aggregator(sections, page="grey-failure", page_timeout=0.3) as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            assert anyio.current_time() - start == pytest.approx(0.3)
        (error,) = page.errors
        assert error.message == "page deadline reached after 300 ms"

    run_on_mock_clock(run)


# -- 4. invalidation wins over a fill in flight ---------------------------------


def test_an_invalidation_during_a_fill_wins() -> None:
    """The source read the old row; invalidate() ran; the fill's old value is not kept."""

    async def run() -> None:
        row = {"value": "old"}

        async def source(ctx: RequestContext) -> str:
            value = row["value"]
            await anyio.sleep(1)
            return value

        section = Section(name="a", source=source, timeout=5, cache=POLICY)
        async with Aggregator([section], page="grey-failure") as agg:
            async with anyio.create_task_group() as tg:
                tg.start_soon(agg.fetch)
                await anyio.sleep(0.5)
                row["value"] = "new"
                await agg.invalidate("a")
            page = await agg.fetch()
            assert agg.stats.writes_dropped == 1
        assert page.results["a"].cache is CacheStatus.MISS
        assert page.sections["a"] == "new"

    run_on_mock_clock(run)


def test_an_invalidation_during_a_refresh_wins() -> None:
    """The same race on the background path: the refresh's older value is dropped."""

    async def run() -> None:
        clock = FakeClock()
        row = {"value": "v1"}

        async def source(ctx: RequestContext) -> str:
            value = row["value"]
            await anyio.sleep(1)
            return value

        section = Section(name="a", source=source, timeout=5, cache=POLICY)
        async with Aggregator(
            [section], page="grey-failure", cache=MemoryCache(clock=clock)
        ) as agg:
            await agg.fetch()
            clock.advance(11)
            row["value"] = "v2"
            stale = await agg.fetch()  # starts a refresh that reads v2
            await anyio.sleep(0.5)
            row["value"] = "v3"
            await agg.invalidate("a")
            await agg.settle()
            page = await agg.fetch()
        assert stale.sections["a"] == "v1"
        assert page.sections["a"] == "v3"

    run_on_mock_clock(run)


# -- 8. parameters in keys are typed, and the key memo holds no request data ---


async def test_parameter_types_are_part_of_the_key(fake_clock: FakeClock) -> None:
    """flag=True is not flag=1, and "10" is not 10: each has its own entry."""
    seen: list[object] = []

    async def source(ctx: RequestContext) -> str:
        value = next(iter(ctx.params.values()))
        seen.append(value)
        return repr(value)

    section = Section(name="a", source=source, cache=POLICY)
    async with Aggregator(
        [section], page="grey-failure", cache=MemoryCache(clock=fake_clock)
    ) as agg:
        for value in (1, True, 1.0, "1", 1, True):
            page = await agg.fetch(RequestContext(params={"flag": value}))
            assert page.sections["a"] == repr(value)
    assert seen == [1, True, 1.0, "1"]


async def test_the_key_memo_does_not_keep_request_parameters() -> None:
    """1,000 pages with 100 KB of parameters each: memory stays near the cache's bound."""

    async def source(ctx: RequestContext) -> str:
        return "v"

    section = Section(name="a", source=source, cache=POLICY)
    async with Aggregator([section], page="grey-failure", cache=MemoryCache(max_entries=10)) as agg:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(1000):
                await agg.fetch(RequestContext(params={"q": f"{i}-" + "x" * 100_000}))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert grown < 5_000_000, f"{grown / 1e6:.1f} MB kept after 1,000 pages"


# -- 9. stream() keeps fail_fast -------------------------------------------------


def test_stream_fails_fast_like_fetch() -> None:
    """A required section failing ends the stream at once; the slow one is CANCELLED."""

    async def run() -> None:
        sections = [
            Section(name="required", source=Recorder(fail=True), required=True, breaker=None),
            Section(name="slow", source=Recorder("late", delay=10), timeout=20),
        ]
        async with Aggregator(sections, page="grey-failure", fail_fast=True) as agg:
            start = anyio.current_time()
            results = {r.name: r async for r in agg.stream()}
            assert anyio.current_time() - start < 0.001
        assert results["required"].error is not None
        assert results["required"].error.code is ErrorCode.SOURCE_ERROR
        slow = results["slow"].error
        assert slow is not None
        assert slow.code is ErrorCode.CANCELLED
        assert slow.message == "cancelled: required section 'required' failed"

    run_on_mock_clock(run)


def test_stream_keeps_the_page_deadline() -> None:
    """A streamed page ends at its deadline, the late section as TIMEOUT_ERROR."""

    async def run() -> None:
        sections = [
            Section(name="fast", source=Recorder("ok", delay=0.01)),
            Section(name="slow", source=Hang(), timeout=5, cache=POLICY),
        ]
        async with Aggregator(sections, page="grey-failure", page_timeout=0.25) as agg:
            start = anyio.current_time()
            results = [r async for r in agg.stream()]
            assert anyio.current_time() - start == pytest.approx(0.25)
        assert [r.name for r in results] == ["fast", "slow"]
        error = results[1].error
        assert error is not None
        assert error.code is ErrorCode.TIMEOUT_ERROR

    run_on_mock_clock(run)


# -- edges of the request context -----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"user_id": 42}, TypeError, "user_id must be a str or None"),
        ({"user_id": ""}, ValueError, "user_id must not be empty"),
        ({"params": [1]}, TypeError, "params must be a mapping"),
        ({"params": {1: "a"}}, TypeError, "parameter name must be a str"),
        ({"params": {"q": object()}}, TypeError, "params['q'] must be"),
        ({"params": {"q": {"nested": 1}}}, TypeError, "params['q'] must be"),
        ({"deadline": "soon"}, TypeError, "deadline must be a time on anyio's clock"),
        ({"deadline": float("nan")}, ValueError, "deadline must not be NaN"),
    ],
)
def test_a_bad_request_context_is_refused_at_once(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A context that would fail deep in key building is refused where it is made."""
    with pytest.raises(error, match=message.replace("[", r"\[")):
        RequestContext(**kwargs)
