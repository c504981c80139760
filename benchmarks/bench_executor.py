"""The seed scenario and the executor's own overhead.

The overhead figure: six sections whose sources return at once, uncached
(``cache=None``, so no cache is read or written), fetched as a page by
batchpage, against a bare anyio task group that runs the same six sources
and collects their results in a dict. batchpage's page also includes what
every cold page does: each section's timeout and breaker bookkeeping, the
concurrency limit, encoding each value to JSON bytes (``JsonSerializer``)
and building the ``PageResult`` (its ``to_json()`` is not called). The two
are measured in interleaved batches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
from examples.features.seed_page import SECTIONS, SEED_LATENCIES_MS

from batchpage import Aggregator, RequestContext, Section

from ._common import Row, at_least, at_most, info, interleaved, median_time

CTX = RequestContext(params={"limit": 3})


async def _noop(ctx: RequestContext) -> int:
    return 1


async def _waits_once(ctx: RequestContext) -> int:
    await anyio.lowlevel.checkpoint()
    return 1


def _bare(source: Callable[[RequestContext], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    """A bare anyio task group running six of ``source`` and collecting their results."""

    async def bare() -> None:
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await source(CTX)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)

    return bare


async def run(quick: bool) -> list[Row]:
    repeat = 7 if quick else 21
    rows = []
    slowest = max(SEED_LATENCIES_MS.values()) / 1000
    async with Aggregator(SECTIONS, page="homepage") as agg:
        batch = await median_time(lambda: agg.fetch(CTX), repeat=repeat)

        async def sequential() -> None:
            for section in SECTIONS:
                await section.source(CTX)

        seq = await median_time(sequential, repeat=max(3, repeat // 3))
    rows.append(
        Row("seed scenario: batch time / slowest section (80 ms)", batch / slowest, at_most(1.03))
    )
    rows.append(Row("seed scenario: sequential / batch", seq / batch, at_least(4.85)))

    inner = 200 if quick else 1000
    noop_sections = [Section(name=f"s{i}", source=_noop, breaker=None) for i in range(6)]
    async with Aggregator(noop_sections, page="noop") as agg:
        page = await agg.fetch(CTX)
        assert page.sections == {f"s{i}": 1 for i in range(6)}, page.to_dict()
        assert set(page.metadata["cache"].values()) == {"BYPASS"}  # nothing cached, nothing read
        ours, base = await interleaved(
            lambda: agg.fetch(CTX), _bare(_noop), repeat=2 * repeat, inner=inner // 2
        )
    # The same with sources that wait once: then every section after the first
    # gets a task, as in the bare group, and the difference is the executor's
    # own work (scopes, slots, breakers, encoding).
    waiting_sections = [Section(name=f"s{i}", source=_waits_once, breaker=None) for i in range(6)]
    async with Aggregator(waiting_sections, page="waits") as agg:
        ours_waiting, base_waiting = await interleaved(
            lambda: agg.fetch(CTX), _bare(_waits_once), repeat=2 * repeat, inner=inner // 2
        )
    rows.append(
        Row(
            "executor: six no-op sources, batchpage / bare anyio task group",
            ours / base,
            at_most(1.3, "uncached; batchpage's page includes encoding and the PageResult"),
        )
    )
    rows.append(
        Row(
            "executor: overhead per page over the bare task group",
            (ours - base) * 1e6,
            info(f"microseconds; bare task group {base * 1e6:.1f} us"),
            unit="us",
        )
    )
    rows.append(
        Row(
            "executor: six sources that wait once, batchpage / bare anyio task group",
            ours_waiting / base_waiting,
            info(f"{(ours_waiting - base_waiting) * 1e6:.0f} us over {base_waiting * 1e6:.0f} us"),
        )
    )
    return rows
