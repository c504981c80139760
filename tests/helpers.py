"""Sources for tests: each records its calls and behaves as told."""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import trio.testing

from batchpage import RequestContext


class Recorder:
    """An async source that sleeps ``delay`` (virtual) seconds, then answers or fails."""

    def __init__(self, value: Any = "ok", *, delay: float = 0.0, fail: bool = False) -> None:
        self.value = value
        self.delay = delay
        self.fail = fail
        self.calls = 0
        self.contexts: list[RequestContext] = []

    async def __call__(self, ctx: RequestContext) -> Any:
        self.calls += 1
        self.contexts.append(ctx)
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("db at 10.0.0.7:27017 refused password=hunter2")
        return self.value


def run_on_mock_clock(fn: Any) -> Any:
    """Run ``fn()`` on trio with a virtual clock that jumps whenever all tasks wait."""
    return anyio.run(
        fn, backend="trio", backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)}
    )


def wall_sleep(seconds: float) -> None:
    time.sleep(seconds)


INF = math.inf


class FakeClock:
    """A wall clock that only moves when told to (seconds); the ``fake_clock`` fixture."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
