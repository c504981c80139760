"""Sections start in the page's task; a task is made only for those after the first that waits.

Whatever path a section takes (answered in its first step, raised there,
went on in the page's task, got a task of its own), every failure rule
holds: its timeout counts from its call and feeds its breaker, the page
deadline cuts it, an exception stays in its section, and cancellation from
outside goes through cleanly and leaves nothing held.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpage import (
    Aggregator,
    BreakerPolicy,
    BreakerState,
    CachePolicy,
    ErrorCode,
    Executor,
    RequestContext,
    Section,
)
from batchpage._eager import start_eagerly
from helpers import Recorder, run_on_mock_clock

pytestmark = pytest.mark.anyio

TRIP = BreakerPolicy(failure_threshold=1, reset_timeout=60)


class TaskSpy:
    """An async source that notes the task it runs in, waits ``waits`` times, then answers."""

    def __init__(self, value: Any, *, waits: int = 0) -> None:
        self.value = value
        self.waits = waits
        self.tasks: list[int] = []

    async def __call__(self, ctx: RequestContext) -> Any:
        self.tasks.append(anyio.get_current_task().id)
        for _ in range(self.waits):
            await anyio.lowlevel.checkpoint()
        return self.value


def _borrowed(executor: Executor) -> float:
    return executor._limiter.statistics().borrowed_tokens


async def test_sources_that_answer_at_once_cost_no_task() -> None:
    """Six sources that do not wait all run in the caller's task, and the page is whole."""
    spies = [TaskSpy(i) for i in range(6)]
    sections = [Section(name=f"s{i}", source=spy) for i, spy in enumerate(spies)]
    async with Aggregator(sections, page="eager") as agg:
        page = await agg.fetch()
    me = anyio.get_current_task().id
    assert [spy.tasks for spy in spies] == [[me]] * 6
    assert page.sections == {f"s{i}": i for i in range(6)}
    assert page.status_code == 200


async def test_the_first_section_that_waits_goes_on_here_and_the_rest_get_tasks() -> None:
    """Sections before and including the first that waits run here; those after, in tasks."""
    spies = [TaskSpy("a"), TaskSpy("b", waits=2), TaskSpy("c"), TaskSpy("d", waits=1)]
    sections = [Section(name=n, source=s) for n, s in zip("abcd", spies, strict=True)]
    async with Aggregator(sections, page="eager") as agg:
        page = await agg.fetch()
    me = anyio.get_current_task().id
    assert spies[0].tasks == spies[1].tasks == [me]
    assert me not in spies[2].tasks + spies[3].tasks
    assert spies[2].tasks != spies[3].tasks
    assert page.sections == {"a": "a", "b": "b", "c": "c", "d": "d"}


async def test_a_source_that_raises_at_once_fails_only_its_section() -> None:
    """An exception in a first step is that section's SOURCE_ERROR, counted by its breaker."""

    async def broken(ctx: RequestContext) -> None:
        raise KeyError("no such collection")

    sections = [
        Section(name="broken", source=broken, breaker=TRIP),
        Section(name="fine", source=Recorder("ok")),
        Section(name="later", source=TaskSpy("later", waits=1)),
    ]
    async with Aggregator(sections, page="eager") as agg:
        page = await agg.fetch()
        assert agg.breaker_state("broken") is BreakerState.OPEN
    assert page.status_code == 200
    assert [(e.section, e.code) for e in page.errors] == [("broken", ErrorCode.SOURCE_ERROR)]
    assert page.sections == {"broken": None, "fine": "ok", "later": "later"}


async def test_sections_after_an_eager_failure_still_run() -> None:
    """A failure in the caller's task does not stop the sections started after it."""
    sections = [
        Section(name="a", source=Recorder(fail=True)),
        Section(name="b", source=TaskSpy("b", waits=1)),
        Section(name="c", source=Recorder(fail=True)),
        Section(name="d", source=TaskSpy("d", waits=1)),
    ]
    async with Aggregator(sections, page="eager") as agg:
        page = await agg.fetch()
    assert page.sections == {"a": None, "b": "b", "c": None, "d": "d"}
    assert [e.section for e in page.errors] == ["a", "c"]


def test_a_waiting_source_times_out_at_its_own_timeout_on_either_path() -> None:
    """The source kept in the caller's task and one in a task of its own stop at their timeout."""

    async def run() -> None:
        sections = [
            Section(name="here", source=Recorder(delay=60), timeout=0.05, breaker=TRIP),
            Section(name="task", source=Recorder(delay=60), timeout=0.1, breaker=TRIP),
            Section(name="fast", source=Recorder("ok", delay=0.01)),
        ]
        async with Aggregator(sections, page="eager") as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            assert anyio.current_time() - start == pytest.approx(0.1)
            assert agg.breaker_state("here") is BreakerState.OPEN
            assert agg.breaker_state("task") is BreakerState.OPEN
            assert agg.executor.stats.timeouts == 2
        messages = {e.section: (e.code, e.message) for e in page.errors}
        assert messages == {
            "here": (ErrorCode.TIMEOUT_ERROR, "timed out after 50 ms"),
            "task": (ErrorCode.TIMEOUT_ERROR, "timed out after 100 ms"),
        }
        assert page.sections["fast"] == "ok"
        assert page.metadata["timingsMs"]["here"] == pytest.approx(50, abs=0.1)

    run_on_mock_clock(run)


def test_the_page_deadline_cuts_the_section_kept_in_the_callers_task() -> None:
    """At the page deadline the waiting source in the caller's task stops too, and it counts."""

    async def run() -> None:
        sections = [
            Section(name="here", source=Recorder(delay=60), timeout=10, breaker=TRIP),
            Section(name="task", source=Recorder(delay=60), timeout=10, breaker=TRIP),
        ]
        async with Aggregator(sections, page="eager", page_timeout=0.05) as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            assert anyio.current_time() - start == pytest.approx(0.05)
            assert agg.breaker_state("here") is BreakerState.OPEN
            assert agg.breaker_state("task") is BreakerState.OPEN
            assert _borrowed(agg.executor) == 0
        assert {e.message for e in page.errors} == {"page deadline reached after 50 ms"}

    run_on_mock_clock(run)


async def test_real_clock_timeouts_on_either_path() -> None:
    """On the backend's own clock too: both waiting paths time out, the others answer."""
    sections = [
        Section(name="here", source=Recorder(delay=30), timeout=0.05),
        Section(name="now", source=Recorder("now")),
        Section(name="task", source=Recorder(delay=30), timeout=0.05),
    ]
    async with Aggregator(sections, page="eager") as agg:
        with anyio.fail_after(5):
            page = await agg.fetch()
    assert page.sections == {"here": None, "now": "now", "task": None}
    assert {e.section: e.code for e in page.errors} == {
        "here": ErrorCode.TIMEOUT_ERROR,
        "task": ErrorCode.TIMEOUT_ERROR,
    }


async def test_cancellation_from_outside_goes_through_and_releases_every_slot() -> None:
    """A caller cancelled mid-page is cancelled; slots, breakers and tasks are all let go."""
    sections = [
        Section(name="now", source=Recorder("now"), breaker=TRIP),
        Section(name="here", source=Recorder(delay=30), timeout=60, breaker=TRIP),
        Section(name="task", source=Recorder(delay=30), timeout=60, breaker=TRIP),
    ]
    async with Aggregator(sections, page="eager") as agg:
        with anyio.move_on_after(0.05) as scope:
            await agg.fetch()
            pytest.fail("the fetch should have been cancelled")
        assert scope.cancelled_caught
        assert _borrowed(agg.executor) == 0
        # Cancelled from outside is no verdict on the source: the breakers stay closed.
        assert {agg.breaker_state(n) for n in ("now", "here", "task")} == {BreakerState.CLOSED}
        # The aggregator still serves.
        assert (await agg.fetch(sections=["now"])).sections == {"now": "now"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # task enumeration is asyncio's
async def test_nothing_outlives_a_cancelled_fetch() -> None:
    """After a fetch cancelled from outside, no task of the page is left."""
    sections = [Section(name=n, source=Recorder(delay=30), timeout=60) for n in "abc"]
    async with Aggregator(sections, page="eager") as agg:
        before = len(asyncio.all_tasks())
        with anyio.move_on_after(0.02):
            await agg.fetch()
        assert len(asyncio.all_tasks()) == before


async def test_task_bound_constructs_work_on_either_path() -> None:
    """Cancel scopes and locks entered in a first step are exited in the task they belong to."""
    lock = anyio.Lock()
    seen: list[str] = []

    class Scoped:
        def __init__(self, name: str) -> None:
            self.name = name

        async def __call__(self, ctx: RequestContext) -> str:
            with anyio.fail_after(5):
                await anyio.sleep(0.01)
            async with lock:
                await anyio.lowlevel.checkpoint()
                seen.append(self.name)
            return "done"

    names = ["one", "two", "three"]
    sections = [Section(name=n, source=Scoped(n), timeout=2) for n in names]
    async with Aggregator(sections, page="eager") as agg:
        page = await agg.fetch()
    assert page.errors == []
    assert page.sections == dict.fromkeys(names, "done")
    assert sorted(seen) == sorted(names)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_timeout_in_a_first_step_cancels_only_its_source() -> None:
    """An ``asyncio.timeout`` entered in the caller's task fires into that source alone."""

    async def bounded(ctx: RequestContext) -> str:
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(30)
        except TimeoutError:
            return "gave up"
        return "slept"

    sections = [
        Section(name="here", source=bounded),
        Section(name="task", source=bounded),
        Section(name="slow", source=Recorder("ok", delay=0.05)),
    ]
    async with Aggregator(sections, page="eager") as agg:
        page = await agg.fetch()
    assert page.sections == {"here": "gave up", "task": "gave up", "slow": "ok"}


_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


async def test_a_context_variable_set_by_a_source_stays_in_its_section() -> None:
    """Each section runs in a copy of the caller's context, as it would in a task."""
    seen: dict[str, str] = {}

    async def setter(ctx: RequestContext) -> str:
        seen["setter saw"] = _var.get()
        _var.set("set by a source")
        return "set"

    async def reader(ctx: RequestContext) -> str:
        return _var.get()

    _var.set("the caller's")
    sections = [Section(name="setter", source=setter), Section(name="reader", source=reader)]
    async with Aggregator(sections, page="eager") as agg:
        page = await agg.fetch()
    assert seen == {"setter saw": "the caller's"}
    assert page.sections == {"setter": "set", "reader": "the caller's"}
    assert _var.get() == "the caller's"


async def test_a_source_may_fetch_another_page_through_the_same_executor() -> None:
    """Slots are borrowed per call: a page inside a source, on the same executor, works."""
    executor = Executor(max_concurrency=4)
    inner = Aggregator(
        [Section(name=n, source=Recorder(n)) for n in ("x", "y")], page="inner", executor=executor
    )

    async def nested(ctx: RequestContext) -> Any:
        return (await inner.fetch()).sections

    sections = [
        Section(name="nested", source=nested),
        Section(name="plain", source=Recorder("plain")),
    ]
    async with inner, Aggregator(sections, page="outer", executor=executor) as outer:
        page = await outer.fetch()
        assert _borrowed(executor) == 0
    assert page.errors == []
    assert page.sections == {"nested": {"x": "x", "y": "y"}, "plain": "plain"}


async def test_fail_fast_on_a_failure_in_the_callers_task_starts_nothing_more() -> None:
    """A required section that fails at once ends the page: later sources are never called."""
    later = Recorder("later")
    sections = [
        Section(name="must", source=Recorder(fail=True), required=True),
        Section(name="later", source=later, fallback="stand-in"),
    ]
    async with Aggregator(sections, page="eager", fail_fast=True) as agg:
        page = await agg.fetch()
    assert later.calls == 0
    assert {e.section: e.code for e in page.errors} == {
        "must": ErrorCode.SOURCE_ERROR,
        "later": ErrorCode.CANCELLED,
    }
    assert page.sections == {"must": None, "later": "stand-in"}
    assert page.status_code == 503


async def test_cached_sections_answered_at_once_are_stored() -> None:
    """A cold cached page on memory is filled without a task, and is warm next time."""
    spies = [TaskSpy(i) for i in range(3)]
    sections = [
        Section(name=f"s{i}", source=spy, cache=CachePolicy()) for i, spy in enumerate(spies)
    ]
    async with Aggregator(sections, page="eager") as agg:
        cold = await agg.fetch()
        warm = await agg.fetch()
    assert set(cold.metadata["cache"].values()) == {"MISS"}
    assert set(warm.metadata["cache"].values()) == {"HIT"}
    assert [len(spy.tasks) for spy in spies] == [1, 1, 1]


async def test_start_eagerly_gives_what_to_await_only_for_a_coroutine_that_waits() -> None:
    """``None`` for a coroutine done in its first step; an awaitable that finishes it otherwise."""
    done: list[str] = []

    async def at_once() -> None:
        done.append("at once")

    async def waits() -> None:
        await anyio.lowlevel.checkpoint()
        done.append("waited")

    assert start_eagerly(at_once()) is None
    held = start_eagerly(waits())
    assert held is not None
    assert done == ["at once"]
    await held
    assert done == ["at once", "waited"]


async def test_start_eagerly_propagates_an_exception_from_the_first_step() -> None:
    """What a coroutine raises before it waits comes out of ``start_eagerly``."""

    async def broken() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        start_eagerly(broken())


async def test_a_held_coroutine_closed_unfinished_runs_its_cleanup() -> None:
    """Closing what ``start_eagerly`` returned runs the coroutine's ``finally`` blocks."""
    cleaned: list[bool] = []

    async def waits() -> None:
        try:
            await anyio.sleep(30)
        finally:
            cleaned.append(True)

    held = start_eagerly(waits())
    assert held is not None
    held.close()
    assert cleaned == [True]


# -- every path, every behaviour: a property on a virtual clock -------------

DELAYS = (0.01, 0.03, 0.07)  # never equal to a timeout or a page deadline below
TIMEOUTS = (0.02, 0.05, 0.1)
PAGE_TIMEOUTS = (None, 0.04, 0.08)

behaviours = st.one_of(
    st.just(("now", 0.0)),
    st.just(("raise", 0.0)),
    st.tuples(st.just("wait"), st.sampled_from(DELAYS)),
    st.tuples(st.just("wait-raise"), st.sampled_from(DELAYS)),
    st.just(("hang", math.inf)),
)


def _source(kind: str, delay: float) -> Any:
    async def source(ctx: RequestContext) -> str:
        if kind == "raise":
            raise RuntimeError("at once")
        if delay:
            await anyio.sleep(delay if delay != math.inf else 1e6)
        if kind == "wait-raise":
            raise RuntimeError("after waiting")
        return kind

    return source


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(behaviours, st.sampled_from(TIMEOUTS)), min_size=1, max_size=7),
    st.sampled_from(PAGE_TIMEOUTS),
)
def test_every_section_keeps_the_failure_rules_whatever_path_it_takes(
    specs: list[tuple[tuple[str, float], float]], page_timeout: float | None
) -> None:
    """Value, error, breaker verdict and page time follow from each source alone."""
    page_limit = math.inf if page_timeout is None else page_timeout
    sections = [
        Section(name=f"s{i}", source=_source(kind, delay), timeout=timeout, breaker=TRIP)
        for i, ((kind, delay), timeout) in enumerate(specs)
    ]

    async def run() -> None:
        async with Aggregator(sections, page="eager", page_timeout=page_timeout) as agg:
            start = anyio.current_time()
            page = await agg.fetch()
            elapsed = anyio.current_time() - start
            errors = {e.section: e for e in page.errors}
            finish = 0.0
            for i, ((kind, delay), timeout) in enumerate(specs):
                name = f"s{i}"
                limit = min(timeout, page_limit)
                if delay >= limit:  # late: cut at its timeout or the page deadline
                    assert errors[name].code is ErrorCode.TIMEOUT_ERROR, (name, errors)
                    finish = max(finish, limit)
                elif kind in ("raise", "wait-raise"):
                    assert errors[name].code is ErrorCode.SOURCE_ERROR
                    finish = max(finish, delay)
                else:
                    assert name not in errors
                    assert page.sections[name] == kind
                    finish = max(finish, delay)
                # Every failure, timeouts included, reached the section's breaker.
                expected = BreakerState.OPEN if name in errors else BreakerState.CLOSED
                assert agg.breaker_state(name) is expected
            assert elapsed == pytest.approx(finish)
            assert list(page.results) == [s.name for s in sections]
            assert _borrowed(agg.executor) == 0

    run_on_mock_clock(run)
