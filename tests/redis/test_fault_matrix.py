"""The fault matrix: the homepage's real sections under each fault, page by page.

The six homepage sections read the seeded nx-27017 (MongoDB wire protocol)
through a :class:`FaultProxy`, and cache in memory over a real Redis behind
another proxy. Each row sets one fault (a slow, silent, rude, full or dead
Redis; a slow, silent or rude MongoDB; sources that hang, raise, block a
thread forever, answer what JSON cannot encode, or answer 10 MB) and serves
pages through it. Every page must answer by its deadline plus ``SLACK``
(scheduling on a loaded two-core machine, far below a missed budget); what
the page did and what was lost is recorded. With ``BATCHPAGE_RELIABILITY_REPORT``
set to a file, each row is appended there as JSON: ``scripts/reliability``
turns those rows into the table of ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
import pytest
from examples.homepage.mongo import connect
from examples.homepage.sources import build_sections

from batchpage import (
    Aggregator,
    CachePolicy,
    CacheStatus,
    LayeredCache,
    MemoryCache,
    PageResult,
    RedisCache,
    RequestContext,
    Section,
)
from fault_proxy import FaultProxy
from helpers import FakeClock
from mongo_server import SeededMongo
from redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.mongo, pytest.mark.fault]

PAGE_TIMEOUT = 1.0
SECTION_TIMEOUT = 0.5
SLACK = 0.15
PAGES = 8
REPORT_ENV = "BATCHPAGE_RELIABILITY_REPORT"


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


@attrs.define
class Row:
    """One fault and what the pages did under it."""

    component: str
    fault: str
    pages: int = 0
    statuses: dict[str, int] = attrs.field(factory=dict)
    worst_ms: float = 0.0
    deadline_ms: float = PAGE_TIMEOUT * 1000
    sections_lost: int = 0  #: sections answered null, nothing standing in
    stand_ins: int = 0  #: stale values or fallbacks standing in for a failure
    from_source: int = 0  #: sections fetched from their source (MISS/BYPASS)
    note: str = ""

    def add(self, page: PageResult, seconds: float) -> None:
        self.pages += 1
        key = str(page.status_code)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        self.worst_ms = max(self.worst_ms, seconds * 1000)
        for result in page.results.values():
            if result.unavailable:
                self.sections_lost += 1
            elif result.stand_in:
                self.stand_ins += 1
            elif result.cache in (CacheStatus.MISS, CacheStatus.BYPASS):
                self.from_source += 1

    @property
    def deadline_kept(self) -> bool:
        return self.worst_ms <= self.deadline_ms + SLACK * 1000

    def record(self) -> None:
        path = os.environ.get(REPORT_ENV)
        if path:
            with Path(path).open("a") as report:
                report.write(json.dumps({**attrs.asdict(self), "kept": self.deadline_kept}) + "\n")


def _proxy_for(url: str) -> FaultProxy:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return FaultProxy(parts.hostname, parts.port).start()


@attrs.define
class Rig:
    """The homepage's aggregator over proxied MongoDB and Redis."""

    agg: Aggregator
    mongo: FaultProxy
    redis: FaultProxy
    server: RedisServer
    cache: LayeredCache
    clock: FakeClock


@pytest.fixture
def proxies(
    homepage_mongo: SeededMongo, private_redis_server: RedisServer
) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    mongo = _proxy_for(homepage_mongo.url)
    redis = _proxy_for(private_redis_server.url)
    try:
        yield mongo, redis
    finally:
        redis.close()
        mongo.close()


@pytest.fixture
async def rig(
    homepage_mongo: SeededMongo,
    private_redis_server: RedisServer,
    proxies: tuple[FaultProxy, FaultProxy],
    fake_clock: FakeClock,
) -> AsyncIterator[Rig]:
    mongo, redis = proxies
    async with AsyncExitStack() as stack:
        client = connect(mongo.url_for("mongodb"))
        stack.push_async_callback(client.close)
        db = client[homepage_mongo.db_name]
        now = homepage_mongo.now
        sections = build_sections(db, now=lambda: now, timeout=SECTION_TIMEOUT)
        cache = LayeredCache(
            MemoryCache(clock=fake_clock),
            RedisCache.from_url(redis.url_for("redis"), backoff=0.2, clock=fake_clock),
        )
        agg = await stack.enter_async_context(
            Aggregator(sections, page="matrix", page_timeout=PAGE_TIMEOUT, cache=cache)
        )
        yield Rig(agg, mongo, redis, private_redis_server, cache, fake_clock)


async def serve(agg: Aggregator, row: Row, contexts: list[RequestContext]) -> None:
    for ctx in contexts:
        start = time.monotonic()
        page = await agg.fetch(ctx)
        row.add(page, time.monotonic() - start)


def cold(n: int = PAGES, *, first: int = 0) -> list[RequestContext]:
    """Pages no layer holds yet: new users and limits, so Redis and the sources are asked."""
    return [
        RequestContext(user_id=f"user{first + i}", params={"limit": 1 + (first + i) % 50})
        for i in range(n)
    ]


# -- Redis faults: the page is served from memory and sources, within its deadline --


def _die(proxy: FaultProxy) -> None:
    """A server that died: open connections reset, new ones refused."""
    proxy.reset()
    proxy.refuse()


REDIS_FAULTS: dict[str, Callable[[FaultProxy], None]] = {
    "+200 ms per round trip": lambda p: p.latency(0.1),
    "black hole (accepts, never answers)": lambda p: p.black_hole(),
    "connections reset": lambda p: p.reset(),
    "slow drip (2 KB/s replies)": lambda p: p.slow_drip(2000),
    "refusing connections": lambda p: _die(p),
}


@pytest.mark.parametrize("fault", list(REDIS_FAULTS))
async def test_redis_faults_cost_no_page(rig: Rig, fault: str) -> None:
    """Whatever Redis does, every page answers in time with every section's value."""
    await serve(rig.agg, Row("warm-up", ""), cold(2, first=100))
    REDIS_FAULTS[fault](rig.redis)
    row = Row("Redis", fault)
    await serve(rig.agg, row, cold())
    rig.redis.pass_through()
    stats = rig.cache.redis.stats
    row.note = f"Redis outages {stats.outages}, calls over budget {stats.slow}"
    row.record()
    assert row.deadline_kept, row
    assert row.statuses == {"200": PAGES}, row
    assert row.sections_lost == 0, row


async def test_a_full_redis_costs_no_page(rig: Rig) -> None:
    """maxmemory + noeviction: writes refused, pages served, reads of what is there go on."""
    await serve(rig.agg, Row("warm-up", ""), cold(2, first=100))
    with rig.server.client() as client:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", max(1, int(client.info()["used_memory"]) - 10_000))
    row = Row("Redis", "full (maxmemory, noeviction)")
    try:
        await serve(rig.agg, row, cold())
    finally:
        with rig.server.client() as client:
            client.config_set("maxmemory", 0)
    stats = rig.cache.redis.stats
    row.note = f"commands refused {stats.refused}, outages {stats.outages}"
    row.record()
    assert row.deadline_kept, row
    assert row.statuses == {"200": PAGES}, row
    assert rig.cache.redis.stats.outages == 0


async def test_a_redis_killed_and_restarted_costs_no_page(rig: Rig) -> None:
    """The server dies mid-load and comes back: pages go on; Redis is used again."""
    await serve(rig.agg, Row("warm-up", ""), cold(2, first=100))
    row = Row("Redis", "killed, then restarted")
    rig.server.stop()
    await serve(rig.agg, row, cold(PAGES // 2))
    rig.server.start()
    await anyio.sleep(0.25)  # past the back-off
    await serve(rig.agg, row, cold(PAGES // 2, first=50))
    row.note = f"Redis outages {rig.cache.redis.stats.outages}"
    row.record()
    assert row.deadline_kept, row
    assert row.statuses == {"200": PAGES}, row


# -- MongoDB faults: the page answers by its deadline; stale values stand in -------

MONGO_FAULTS: dict[str, Callable[[FaultProxy], None]] = {
    "+200 ms per round trip": lambda p: p.latency(0.1),
    "black hole (accepts, never answers)": lambda p: p.black_hole(),
    "connections reset": lambda p: p.reset(),
}


@pytest.mark.parametrize("fault", list(MONGO_FAULTS))
@pytest.mark.parametrize("cached", [False, True], ids=["cold", "stale-cached"])
async def test_mongo_faults_keep_the_deadline(rig: Rig, fault: str, cached: bool) -> None:
    """A slow or dead database: pages by the deadline; cached values stand in where they can."""
    contexts = cold(PAGES // 2, first=200) * 2 if cached else cold()
    if cached:
        await serve(rig.agg, Row("warm-up", ""), contexts[: PAGES // 2])
        # Past every section's expiry (jitter included), within stale-if-error
        # but for flash sales, which have none.
        rig.clock.advance(310)
    MONGO_FAULTS[fault](rig.mongo)
    state = "expired entries within stale-if-error" if cached else "nothing cached"
    row = Row("MongoDB", f"{fault}; {state}")
    await serve(rig.agg, row, contexts[:PAGES])
    rig.mongo.pass_through()
    row.record()
    assert row.deadline_kept, row
    if cached and fault != "+200 ms per round trip":
        assert row.stand_ins > 0, row


# -- sources that misbehave ----------------------------------------------------------


class _Blocked:
    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, ctx: RequestContext) -> str:
        self.release.wait(30)
        return "late"


async def _hang(ctx: RequestContext) -> Any:
    await anyio.sleep_forever()


async def _raise(ctx: RequestContext) -> Any:
    raise ConnectionError("backend at 10.1.2.3 refused")


async def _unencodable(ctx: RequestContext) -> Any:
    return {"when": object()}


async def _ten_megabytes(ctx: RequestContext) -> Any:
    return "x" * 10_000_000


async def _healthy(ctx: RequestContext) -> Any:
    await anyio.sleep(0.01)
    return ["fine"]


SOURCE_FAULTS = {
    "hangs": _hang,
    "raises": _raise,
    "blocks its thread forever (sync)": None,  # a fresh _Blocked per run
    "answers what JSON cannot encode": _unencodable,
    "answers 10 MB": _ten_megabytes,
}


@pytest.mark.parametrize("fault", list(SOURCE_FAULTS))
async def test_a_misbehaving_source_fails_only_its_section(fault: str) -> None:
    """One source misbehaves; the others answer, the page is 200, by its deadline."""
    blocked = _Blocked()
    source = SOURCE_FAULTS[fault] or blocked
    policy = CachePolicy(fresh=60, stale=60)
    sections = [
        Section(name="bad", source=source, timeout=SECTION_TIMEOUT, cache=policy),
        *(Section(name=f"ok{i}", source=_healthy, cache=policy) for i in range(5)),
    ]
    row = Row("source", fault)
    try:
        async with Aggregator(sections, page="homepage", page_timeout=PAGE_TIMEOUT) as agg:
            await serve(agg, row, [RequestContext(params={"i": i}) for i in range(PAGES)])
            threads = agg.executor.stuck_threads("bad")
    finally:
        blocked.release.set()
    row.note = f"stuck threads {threads}" if SOURCE_FAULTS[fault] is None else ""
    row.record()
    assert row.deadline_kept, row
    assert row.statuses == {"200": PAGES}, row
    if fault == "answers 10 MB":
        assert row.sections_lost == 0
    else:
        assert row.sections_lost == PAGES  # the bad section, on each page
