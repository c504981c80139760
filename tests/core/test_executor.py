"""The executor turns every way a source can fail into an error value."""

from __future__ import annotations

import logging
import threading

import anyio
import pytest

from batchpage import ErrorCode, Executor, RequestContext, Section
from helpers import Recorder, run_on_mock_clock

pytestmark = pytest.mark.anyio

CTX = RequestContext()


async def test_async_source_value_is_returned() -> None:
    """A source that answers gives its value and no error."""
    attempt = await Executor().call(Section(name="a", source=Recorder([1, 2])), CTX)
    assert attempt.ok
    assert attempt.value == [1, 2]


async def test_sync_source_runs_in_a_worker_thread() -> None:
    """Plain functions run off the event loop thread."""
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def blocking(ctx: RequestContext) -> str:
        seen.append(threading.get_ident())
        return "done"

    attempt = await Executor().call(Section(name="a", source=blocking), CTX)
    assert attempt.value == "done"
    assert seen
    assert seen[0] != loop_thread


async def test_source_error_is_client_safe_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The message names only the exception type; the log has the full traceback."""
    caplog.set_level(logging.ERROR, "batchpage")
    attempt = await Executor().call(Section(name="a", source=Recorder(fail=True)), CTX)
    assert attempt.error is not None
    assert attempt.error.code is ErrorCode.SOURCE_ERROR
    assert attempt.error.message == "source failed (RuntimeError)"
    assert "10.0.0.7" not in attempt.error.message
    assert "hunter2" not in attempt.error.message
    assert "hunter2" in caplog.text  # the operator still sees everything
    assert caplog.records[0].exc_info is not None


async def test_slow_source_times_out() -> None:
    """A source slower than its timeout is cancelled and reported."""
    source = Recorder(delay=30)
    attempt = await Executor().call(Section(name="a", source=source, timeout=0.05), CTX)
    assert attempt.error is not None
    assert attempt.error.code is ErrorCode.TIMEOUT_ERROR
    assert attempt.error.message == "timed out after 50 ms"


async def test_source_raising_timeout_error_is_a_timeout() -> None:
    """A driver's own TimeoutError is reported as a timeout, not a crash."""

    async def driver_timeout(ctx: RequestContext) -> None:
        raise TimeoutError("socket timed out talking to 10.1.2.3")

    attempt = await Executor().call(Section(name="a", source=driver_timeout), CTX)
    assert attempt.error is not None
    assert attempt.error.code is ErrorCode.TIMEOUT_ERROR
    assert "10.1.2.3" not in attempt.error.message


async def test_page_deadline_bounds_the_section() -> None:
    """When the page deadline comes first, the message says so."""
    section = Section(name="a", source=Recorder(delay=30), timeout=10)
    attempt = await Executor().call(section, CTX, deadline=anyio.current_time() + 0.05)
    assert attempt.error is not None
    assert attempt.error.code is ErrorCode.TIMEOUT_ERROR
    assert attempt.error.message.startswith("page deadline reached")


async def test_hung_thread_is_abandoned_and_counted() -> None:
    """A sync source stuck past its timeout is left behind, not waited for."""
    release = threading.Event()

    def stuck(ctx: RequestContext) -> str:
        release.wait(10)
        return "late"

    executor = Executor()
    try:
        attempt = await executor.call(Section(name="a", source=stuck, timeout=0.05), CTX)
    finally:
        release.set()
    assert attempt.error is not None
    assert attempt.error.code is ErrorCode.TIMEOUT_ERROR
    assert "worker thread abandoned" in attempt.error.message
    assert executor.stats.threads_abandoned == 1


async def test_sync_source_returning_a_coroutine_is_awaited() -> None:
    """``lambda ctx: fetch(ctx)`` works like ``fetch`` itself."""
    inner = Recorder("v")
    attempt = await Executor().call(Section(name="a", source=lambda ctx: inner(ctx)), CTX)
    assert attempt.value == "v"


def test_concurrency_limit_queues_sources() -> None:
    """With one slot, three 10 ms sources take 30 ms; with three slots, 10 ms."""

    async def run(limit: int) -> float:
        executor = Executor(max_concurrency=limit)
        section = Section(name="a", source=Recorder(delay=0.01))
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(executor.call, section, CTX)
        return anyio.current_time() - start

    assert run_on_mock_clock(lambda: run(1)) == pytest.approx(0.03)
    assert run_on_mock_clock(lambda: run(3)) == pytest.approx(0.01)


def test_waiting_for_a_slot_counts_against_the_timeout() -> None:
    """A queued source times out by its own clock, not after it got a slot."""

    async def run() -> list[ErrorCode | None]:
        executor = Executor(max_concurrency=1)
        section = Section(name="a", source=Recorder(delay=0.1), timeout=0.15)
        codes: list[ErrorCode | None] = []

        async def one() -> None:
            a = await executor.call(section, CTX)
            codes.append(a.error.code if a.error else None)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        return codes

    assert sorted(run_on_mock_clock(run), key=str) == [None, ErrorCode.TIMEOUT_ERROR]


def test_max_concurrency_is_validated() -> None:
    """Zero slots is a configuration error."""
    with pytest.raises(ValueError, match="max_concurrency"):
        Executor(max_concurrency=0)


async def test_outside_cancellation_propagates() -> None:
    """A cancelled caller is cancelled: the executor swallows only its own timeouts."""
    section = Section(name="a", source=Recorder(delay=30), timeout=60)
    with anyio.move_on_after(0.05) as scope:
        await Executor().call(section, CTX)
        pytest.fail("the call should have been cancelled")
    assert scope.cancelled_caught
