"""A sync source: a blocking function runs in a worker thread, under its timeout.

A plain ``def`` source (a blocking driver, a library without async) runs in
a worker thread, so it cannot stall the event loop or the other sections.
A thread cannot be interrupted: one that outlives its timeout is abandoned
(its result dropped) and counted, and once ``max_stuck_threads`` of a
section's threads are stuck, the section is not called again until one
returns: a hung function cannot take every thread.
Run: ``python -m examples.features.sync_source``.
"""

from __future__ import annotations

import threading
import time

import anyio

from batchpage import Aggregator, Executor, RequestContext, Section

release = threading.Event()


def report(ctx: RequestContext) -> dict[str, int]:
    """A blocking call that answers in 50 ms."""
    time.sleep(0.05)
    return {"orders": 42}


def hung(ctx: RequestContext) -> str:
    """A blocking call that hangs until released (a lost connection, say)."""
    release.wait(10)
    return "too late"


SECTIONS = [
    Section(name="report", source=report, timeout=0.5),
    # No breaker here, to show the stuck-thread bound on its own.
    Section(name="hung", source=hung, timeout=0.1, fallback=None, breaker=None),
]


async def main() -> None:
    executor = Executor(max_stuck_threads=2)
    async with Aggregator(SECTIONS, page="reports", executor=executor) as agg:
        for attempt in range(1, 5):
            page = await agg.fetch(RequestContext())
            error = page.results["hung"].error
            assert error is not None
            print(f"page {attempt}: {page.status_code} {page.sections}  hung: {error.message}")
        abandoned, refused = executor.stats.threads_abandoned, executor.stats.threads_refused
        print(f"threads abandoned: {abandoned}, calls refused: {refused}")
        print(f"hung threads still stuck: {executor.stuck_threads('hung')}")
        release.set()  # the hung calls return at last; their results are dropped
        # The count drops in the worker threads: nothing here to wait on but the count.
        while executor.stuck_threads("hung"):  # noqa: ASYNC110
            await anyio.sleep(0.01)
        print(f"after they return: {executor.stuck_threads('hung')} stuck")


if __name__ == "__main__":
    anyio.run(main)
