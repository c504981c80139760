"""A warm page from Redis: one round trip per page, and no slower than raw redis-py.

A real ``redis-server`` on loopback holds six sections of ten documents.
batchpage serves the page through a :class:`RedisCache` alone; the baseline
is what a hand-written handler would do with redis-py on the same server
and the very same client: one ``MGET`` of six keys holding JSON, a
``json.loads`` of each, and a ``json.dumps`` of the assembled page.
Both run on asyncio (redis-py's asyncio client needs it), interleaved.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import redis
import redis.asyncio

from batchpage import Aggregator, CachePolicy, RedisCache, RequestContext, Section

from ._common import Row, at_most, exactly, info
from ._payloads import SECTION_NAMES, VALUES
from ._servers import redis_server

CTX = RequestContext(params={"limit": 10})
RAW_KEYS = [f"raw:{name}:limit=10" for name in SECTION_NAMES]
#: The benchmark stops with an error rather than run longer than this (seconds).
TIME_LIMIT = 120.0

# Commands the inspecting client sends itself: INFO to read the statistics.
_INSPECTION = frozenset({"info"})


def _page(sections: dict[str, Any]) -> bytes:
    return json.dumps(
        {"sections": sections, "errors": [], "metadata": {"partialFailure": False}},
        separators=(",", ":"),
    ).encode()


def _source(name: str) -> Any:
    async def source(ctx: RequestContext) -> Any:
        return VALUES[name]

    return source


def _command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``), without the inspection's own."""
    stats = client.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }
    return {name: n for name, n in calls.items() if name not in _INSPECTION}


async def _interleaved(
    a: Callable[[], Awaitable[object]],
    b: Callable[[], Awaitable[object]],
    *,
    repeat: int,
    inner: int,
) -> tuple[float, float]:
    """Median seconds per call of ``a`` and of ``b``, batches alternating (ABBA...)."""
    samples: tuple[list[float], list[float]] = ([], [])
    for r in range(repeat):
        order = ((0, a), (1, b)) if r % 2 == 0 else ((1, b), (0, a))
        for index, fn in order:
            start = time.perf_counter()
            for _ in range(inner):
                await fn()
            samples[index].append((time.perf_counter() - start) / inner)
    return statistics.median(samples[0]), statistics.median(samples[1])


async def run(quick: bool) -> list[Row]:
    repeat, inner = (7, 300) if quick else (15, 1000)
    counted = 200 if quick else 1000
    with redis_server() as url, anyio.fail_after(TIME_LIMIT):
        return await _measure(url, repeat=repeat, inner=inner, counted=counted)


async def _measure(url: str, *, repeat: int, inner: int, counted: int) -> list[Row]:
    # The cache is a RedisCache alone, not a LayeredCache: with no memory layer
    # in front, every page is served by Redis, and the page's cost is only the
    # Redis path (one MGET, entry parsing, assembly). A LayeredCache whose memory
    # were cleared before each page would add the clearing and the memory fills
    # of every entry, which no warm-from-Redis page pays twice in production.
    cache = RedisCache.from_url(url)
    # The baseline uses that very client: same pool, timeouts, retries, parser.
    client: redis.asyncio.Redis = cache.client
    sections = [
        Section(name=n, source=_source(n), cache=CachePolicy(fresh=3600)) for n in SECTION_NAMES
    ]
    with redis.Redis.from_url(url, socket_timeout=5.0) as inspector:
        async with Aggregator(sections, page="homepage", cache=cache) as agg:
            await agg.fetch(CTX)  # cold: fills Redis
            await client.mset(
                {
                    k: json.dumps(VALUES[n]).encode()
                    for n, k in zip(SECTION_NAMES, RAW_KEYS, strict=True)
                }
            )

            async def ours() -> bytes:
                return (await agg.fetch(CTX)).to_json()

            async def raw() -> bytes:
                values = cast(list[bytes], await client.mget(RAW_KEYS))
                return _page({n: json.loads(v) for n, v in zip(SECTION_NAMES, values, strict=True)})

            warm = json.loads(await ours())
            assert warm["metadata"]["cache"] == dict.fromkeys(SECTION_NAMES, "HIT"), warm
            assert warm["sections"] == VALUES
            assert json.loads(await raw())["sections"] == VALUES

            before = _command_calls(inspector)
            for _ in range(counted):
                await ours()
            after = _command_calls(inspector)
            delta = {c: n - before.get(c, 0) for c, n in after.items() if n != before.get(c, 0)}
            assert cache.stats.corrupt == cache.stats.errors == 0, cache.stats

            t_ours, t_raw = await _interleaved(ours, raw, repeat=repeat, inner=inner)

    per_page = sum(delta.values()) / counted
    commands = ", ".join(f"{c} {n / counted:g}" for c, n in sorted(delta.items())) or "none"
    return [
        Row(
            f"warm page (redis): round trips per page ({commands})",
            per_page,
            exactly(1, "mget only"),
            unit="",
        ),
        Row(
            "warm page (redis): batchpage / raw redis-py",
            t_ours / t_raw,
            at_most(1.0, "raw: one MGET, json.loads of each, json.dumps of the page"),
        ),
        Row("warm page (redis): batchpage per page", t_ours * 1e6, info("microseconds"), unit="us"),
        Row(
            "warm page (redis): raw redis-py per page", t_raw * 1e6, info("microseconds"), unit="us"
        ),
    ]
