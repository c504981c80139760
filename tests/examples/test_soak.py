"""A soak of the FastAPI example through a bad day: 10,000 requests, nothing accumulates.

The server runs as users run it (uvicorn, one worker) with Redis behind a
:class:`FaultProxy` adding 200 ms to every round trip, one section that never
answers (``flashSales=hang``), and an editor invalidating sections at random
from another aggregator on the same Redis. Every response must be a 200 by
the page deadline (0.8 s) plus ``TOLERANCE``; the worker's tasks, threads,
sockets and memory (``/debug/vitals``) are read before, between the two
halves of the load, and after: the first half may grow connection pools to
their working size under the fault (bounded by the concurrency); the second
half must add nothing.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from examples.homepage.mongo import POOL_SIZE, connect
from examples.homepage.sources import SECTION_NAMES, build_sections

from batchpage import Aggregator, LayeredCache, MemoryCache, RedisCache
from fault_proxy import FaultProxy
from http_servers import AppServer, app_environment, running_servers
from mongo_server import SeededMongo
from redis_server import RedisServer

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.http,
    pytest.mark.mongo,
    pytest.mark.redis,
    pytest.mark.fault,
]

REQUESTS = 10_000
CONCURRENCY = 16
PAGE_TIMEOUT = 0.8  # the example's default
#: HTTP on top of the page deadline: parsing, the response, and waiting for a
#: turn among 16 connections on a two-core machine that also runs the load.
TOLERANCE = 0.4
REPORT_ENV = "BATCHPAGE_RELIABILITY_REPORT"
VITALS = ("tasks", "threads", "sockets", "connections", "fds", "rssBytes")


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def soak_server(
    homepage_mongo: SeededMongo, tmp_path: Path
) -> Iterator[tuple[AppServer, RedisServer, FaultProxy]]:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    proxy = FaultProxy("127.0.0.1", redis_server.port).start()
    try:
        env = app_environment(
            homepage_mongo,
            REDIS_URL=proxy.url_for("redis"),
            BATCHPAGE_DEBUG_VITALS="1",
            BATCHPAGE_EXAMPLE_FAULTS="flashSales=hang",
        )
        server = AppServer("fastapi", env, tmp_path, label="soak")
        with running_servers([server]):
            yield server, redis_server, proxy
    finally:
        proxy.close()
        redis_server.stop()


def _urls(rng: random.Random) -> list[str]:
    urls = []
    for _ in range(REQUESTS):
        limit = rng.randint(1, 20)
        path = "/homepage/stream" if rng.random() < 0.05 else "/homepage"
        urls.append(f"{path}?limit={limit}")
    return urls


#: Of the 16 connections, these are signed in (each as its own user); the rest anonymous.
SIGNED_IN = 11


async def test_ten_thousand_requests_through_a_bad_day(
    soak_server: tuple[AppServer, RedisServer, FaultProxy], homepage_mongo: SeededMongo
) -> None:
    """Slow Redis, a hung section, random invalidations: all 200, in time, nothing kept."""
    server, redis_server, proxy = soak_server
    rng = random.Random(7)
    urls = _urls(rng)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=10.0))
        # A client per connection, each with its own cookie jar (its own sign-in).
        clients = []
        for i in range(CONCURRENCY):
            one = await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.url, timeout=10.0)
            )
            if i < SIGNED_IN:
                assert (await one.post("/session", json={"userId": f"u{i}"})).status_code == 200
            clients.append(one)
        times: list[float] = []
        statuses: dict[int, int] = {}

        async def client(queue: Iterator[str], http: httpx.AsyncClient) -> None:
            for url in queue:
                start = time.monotonic()
                response = await http.get(url)
                times.append(time.monotonic() - start)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if url.startswith("/homepage/stream"):
                    last = json.loads(response.content.splitlines()[-1])
                    assert last["status"] == 200

        # Warm-up at the same concurrency: connection pools reach their working
        # size, the hung section's breaker opens. Then the "before" reading.
        warm = iter(urls[:1000])
        async with anyio.create_task_group() as tg:
            for one in clients:
                tg.start_soon(client, warm, one)
        times.clear()
        statuses.clear()
        await anyio.sleep(1.0)
        before = (await http.get("/debug/vitals")).json()
        proxy.latency(0.1)  # +200 ms per Redis round trip from now on

        invalidations = 0
        readings = [before]
        async with _editor(redis_server, homepage_mongo) as editor:
            # Two halves: the first may grow pools to their working size under
            # the fault; the second must add nothing.
            for half in (urls[: REQUESTS // 2], urls[REQUESTS // 2 :]):
                queue = iter(half)
                target = len(times) + len(half)
                async with anyio.create_task_group() as tg:
                    for one in clients:
                        tg.start_soon(client, queue, one)
                    while len(times) < target:
                        await anyio.sleep(rng.uniform(0.01, 0.1))
                        await editor.invalidate(rng.choice(SECTION_NAMES))
                        invalidations += 1
                await anyio.sleep(2.0)  # refreshes and detached commands end
                readings.append((await http.get("/debug/vitals")).json())
        proxy.pass_through()
    middle, after = readings[1], readings[2]

    ordered = sorted(times)
    figures = {
        "requests": len(times),
        "statuses": statuses,
        "invalidations": invalidations,
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "before": {k: before[k] for k in VITALS},
        "middle": {k: middle[k] for k in VITALS},
        "after": {k: after[k] for k in VITALS},
        "redis_outages": after["redis"]["outages"],
        "redis_pool": [r["redis"]["poolConnections"] for r in readings],
        "redis_sockets": [r["connections"].get(str(proxy.port), 0) for r in readings],
    }
    _report(figures)
    assert statuses == {200: REQUESTS}, figures
    assert ordered[-1] <= PAGE_TIMEOUT + TOLERANCE, figures
    assert after["tasks"] <= before["tasks"] + 2, figures
    assert after["threads"] <= before["threads"] + 1, figures
    # Connections by what they reach. Redis: redis-py keeps the connections it
    # made for the peak of concurrent commands (bounded by RedisCache's
    # in-flight limit) and reconnects idle ones as it reuses them, so the
    # sockets stay within the pool, not within a share of the requests.
    mongo, redis = str(urlsplit(homepage_mongo.url).port), str(proxy.port)
    for reading in (middle, after):
        links = reading["connections"]
        assert links.get(redis, 0) <= reading["redis"]["poolConnections"] + 2, figures
        assert reading["redis"]["poolConnections"] <= 128, figures
    # MongoDB: pymongo's pool grows to the peak of concurrent queries, at most
    # its maxPoolSize, plus its monitoring connections.
    assert after["connections"].get(mongo, 0) <= POOL_SIZE + 4, figures
    others = [
        sum(n for port, n in r["connections"].items() if port not in (mongo, redis))
        for r in readings
    ]
    assert others[2] <= others[1] + 2, figures
    assert after["rssBytes"] <= before["rssBytes"] + 64 * 2**20, figures


def _report(figures: dict[str, Any]) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with Path(path).open("a") as out:
            out.write(json.dumps({"kind": "soak", **figures}) + "\n")


class _editor:
    """An editing tool's aggregator on the same Redis (not through the proxy)."""

    def __init__(self, redis_server: RedisServer, mongo: SeededMongo) -> None:
        self.client: Any = connect(mongo.url)
        # An editing tool is not in a page's path: it can wait for Redis longer.
        redis = RedisCache.from_url(redis_server.url, command_timeout=1.0, backoff=0.05)
        cache = LayeredCache(MemoryCache(), redis)
        self.agg = Aggregator(
            build_sections(self.client[mongo.db_name]), page="homepage", cache=cache
        )

    async def __aenter__(self) -> Aggregator:
        agg: Aggregator = await self.agg.__aenter__()
        return agg

    async def __aexit__(self, *exc: object) -> None:
        await self.agg.__aexit__(None, None, None)
        await self.client.close()
