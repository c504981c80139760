"""The seed scenario and the executor's own overhead."""

from __future__ import annotations

from typing import Any

import anyio
from examples.features.seed_page import SECTIONS, SEED_LATENCIES_MS

from batchpage import Aggregator, RequestContext, Section

from ._common import Row, at_least, at_most, info, median_time

CTX = RequestContext(params={"limit": 3})


async def _noop(ctx: RequestContext) -> int:
    return 1


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

    noop_sections = [Section(name=f"s{i}", source=_noop, breaker=None) for i in range(6)]
    async with Aggregator(noop_sections, page="noop") as agg:
        inner = 200 if quick else 1000
        ours = await median_time(lambda: agg.fetch(CTX), repeat=repeat, inner=inner)

    async def bare() -> None:
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await _noop(CTX)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)

    base = await median_time(bare, repeat=repeat, inner=inner)
    rows.append(
        Row(
            "executor: six no-op sources, batchpage / bare anyio task group",
            ours / base,
            at_most(1.3),
        )
    )
    rows.append(
        Row(
            "executor: overhead per page over the bare task group",
            (ours - base) * 1e6,
            info("microseconds"),
            unit="us",
        )
    )
    return rows
