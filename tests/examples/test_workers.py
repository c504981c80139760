"""Four workers of each example over one Redis and over a Redis Cluster: one refresh per stale key.

Both examples run as ``./scripts/run [--app django] --workers 4`` starts them
(uvicorn's supervisor, uvloop and httptools); each over one
``redis-server`` and over a 3+3 Redis Cluster. Each worker has its own
memory layer over the shared Redis. ``/debug/vitals`` (on with
``BATCHPAGE_DEBUG_VITALS=1``, same JSON in both apps) names the worker that
answered, so the test reads every worker's counters by asking on new
connections until each pid has answered. Figures of a run go to
``docs/reliability.md`` through ``BATCHPAGE_RELIABILITY_REPORT`` (see
``test_fault_matrix``).

A worker killed under load: uvicorn's supervisor starts another (hypercorn,
which some run Django under, ends the whole server when one worker dies:
``tests/examples/test_example_shutdown.py`` shows that nothing is left
behind then).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from examples.homepage.sources import SECTION_NAMES, build_sections

from batchpage import Aggregator, LayeredCache, MemoryCache, RedisCache, RequestContext
from batchpage.extend import Entry
from http_servers import AppServer, Framework, app_environment, running_servers
from mongo_server import SeededMongo
from redis_cluster import RedisClusterServer, started_cluster
from redis_server import RedisServer

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.http,
    pytest.mark.mongo,
    pytest.mark.redis,
    pytest.mark.fault,
]

WORKERS = 4
REPORT_ENV = "BATCHPAGE_RELIABILITY_REPORT"


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only."""
    return "asyncio"


Shared = RedisServer | RedisClusterServer

#: (app, shared layer) of each four-workers server.
SETUPS: list[tuple[Framework, str]] = [
    ("fastapi", "redis"),
    ("fastapi", "cluster"),
    ("django", "redis"),
    ("django", "cluster"),
]
SETUP_IDS = [f"{app}-{shared}" for app, shared in SETUPS]


@pytest.fixture(scope="module", params=SETUPS, ids=SETUP_IDS)
def workers(
    request: pytest.FixtureRequest,
    homepage_mongo: SeededMongo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AppServer, Shared]]:
    """An example with four workers, vitals on, over one Redis or a Redis Cluster."""
    framework, shared = request.param
    redis_server: Shared
    if shared == "cluster":
        redis_server = started_cluster(tmp_path_factory.mktemp("workers-cluster"))
    else:
        redis_server = RedisServer(tmp_path_factory.mktemp("workers-redis"))
        redis_server.start()
    try:
        # A generous Redis budget: on a loaded two-core machine a command can
        # take over the default 0.1 s, and a Redis that counts as down gives
        # each worker a local lock (a refresh each): the rule under test here is
        # the lock's, not the budget's (tests/redis/test_grey_redis.py has those).
        env = app_environment(
            homepage_mongo,
            REDIS_URL=redis_server.url,
            BATCHPAGE_DEBUG_VITALS="1",
            BATCHPAGE_REDIS_BUDGET="1.0",
        )
        server = AppServer(
            framework,
            env,
            tmp_path_factory.mktemp("workers"),
            label=f"workers-{framework}",
            workers=WORKERS,
        )
        with running_servers([server]):
            yield server, redis_server
    finally:
        redis_server.stop()


def every_worker(server: AppServer, *, tries: int = 400) -> dict[int, dict[str, Any]]:
    """Each worker's vitals, by pid: asked on new connections until all have answered."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(tries):
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            vitals = client.get("/debug/vitals", headers={"Connection": "close"}).json()
        seen[vitals["pid"]] = vitals
        if len(seen) == WORKERS:
            return seen
    raise AssertionError(f"only {len(seen)} of {WORKERS} workers answered in {tries} tries")


def total(server: AppServer, *path: str) -> int:
    count = 0
    for vitals in every_worker(server).values():
        value: Any = vitals
        for part in path:
            value = value[part]
        count += int(value)
    return count


def report(row: dict[str, Any], server: AppServer, shared: Shared) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        app = "FastAPI" if server.framework == "fastapi" else "Django"
        over = "Redis Cluster" if isinstance(shared, RedisClusterServer) else "one Redis"
        row = {**row, "test": f"{row['test']} ({app}, {over})", "shared": over}
        with Path(path).open("a") as out:
            out.write(json.dumps({"kind": "workers", **row}) + "\n")


def stale_entry(payload: bytes) -> bytes:
    """An entry whose freshness ended a second ago, still inside its stale window."""
    now = time.time()
    return Entry(
        payload,
        stored_at=now - 100,
        fresh_until=now - 1,
        stale_until=now + 600,
        error_until=now + 600,
    ).dumps()


async def test_a_stale_key_is_refreshed_once_across_four_workers(
    workers: tuple[AppServer, Shared], homepage_mongo: SeededMongo
) -> None:
    """Six stale entries in Redis, 80 concurrent pages on four workers: six refreshes."""
    server, redis_server = workers
    async with _page_keys(redis_server, homepage_mongo) as keys:
        with redis_server.client() as client:
            for key in keys.values():
                client.set(key, stale_entry(b'["stale"]'))
        before = {
            name: total(server, "aggregator", name)
            for name in ("refreshes", "refresh_failures", "refreshes_skipped")
        }
        limits = httpx.Limits(max_keepalive_connections=0)  # spread over the workers
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0, limits=limits) as http:

            async def one() -> None:
                response = await http.get("/homepage?limit=10")
                assert response.status_code == 200

            async with anyio.create_task_group() as tg:
                for _ in range(80):
                    tg.start_soon(one)

        def refreshed() -> list[bool]:
            with redis_server.client() as client:
                return [
                    Entry.loads(client.get(key)).fresh_until > time.time() for key in keys.values()
                ]

        # The refreshes land: polled, bounded (a loaded machine can take over a second).
        deadline = time.monotonic() + 10.0
        while not all(landed := refreshed()) and time.monotonic() < deadline:  # noqa: ASYNC110 - Redis: polled
            await anyio.sleep(0.1)
        stats = {
            name: total(server, "aggregator", name) - before.get(name, 0)
            for name in ("refreshes", "refresh_failures", "refreshes_skipped")
        }
    refreshes = stats["refreshes"]
    row = {"test": "refreshes of 6 stale keys by 4 workers under 80 pages", "value": refreshes}
    report(row, server, redis_server)
    assert landed == [True] * len(SECTION_NAMES), stats
    assert refreshes == len(SECTION_NAMES), stats


async def test_an_invalidation_reaches_every_worker_within_a_second(
    workers: tuple[AppServer, Shared], homepage_mongo: SeededMongo
) -> None:
    """An editor invalidates a section from another process; each worker hears of it."""
    server, redis_server = workers
    before = {
        pid: v["layered"]["invalidations_received"] for pid, v in every_worker(server).items()
    }
    async with _editor(redis_server, homepage_mongo) as editor:
        start = time.monotonic()
        await editor.invalidate("featuredEvents")
    deadline = start + 1.0
    while True:
        now = {
            pid: v["layered"]["invalidations_received"] for pid, v in every_worker(server).items()
        }
        heard = [pid for pid in before if now.get(pid, 0) > before[pid]]
        if len(heard) == WORKERS or time.monotonic() > deadline:
            break
    elapsed = time.monotonic() - start
    row = {"test": "invalidation heard by every worker (s)", "value": round(elapsed, 3)}
    report(row, server, redis_server)
    assert len(heard) == WORKERS, (before, now)
    assert elapsed <= 1.0


async def test_a_dead_holder_blocks_nobody_past_its_lock(
    workers: tuple[AppServer, Shared], homepage_mongo: SeededMongo
) -> None:
    """A lock whose holder was SIGKILLed: pages answer by their deadline meanwhile."""
    server, redis_server = workers
    async with _page_keys(redis_server, homepage_mongo, limit=7) as keys:
        with redis_server.client() as client:
            for key in keys.values():  # what a worker killed mid-fill leaves behind
                client.set(RedisCache.lock_key(key), "dead-worker", px=1500)
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            times = []
            for _ in range(5):
                start = time.monotonic()
                response = await http.get("/homepage?limit=7")
                times.append(time.monotonic() - start)
                assert response.status_code == 200
            await anyio.sleep(1.6)  # the orphaned locks expire
            after = (await http.get("/homepage?limit=7")).json()
    row = {
        "test": "worst page while a dead worker's locks stood (s)",
        "value": round(max(times), 3),
    }
    report(row, server, redis_server)
    assert max(times) < 0.8 + 0.3  # the page deadline, plus HTTP on a loaded machine
    assert set(after["metadata"]["cache"].values()) <= {"HIT", "MISS"}


async def test_a_worker_killed_under_load_fails_no_request_past_a_retry(
    workers: tuple[AppServer, Shared],
) -> None:
    """SIGKILL one worker while pages are served: the others answer (uvicorn replaces it)."""
    server, _ = workers
    victim = next(iter(every_worker(server)))
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        for i in range(100):
            if i == 20:
                os.kill(victim, signal.SIGKILL)
            try:
                statuses.append((await http.get("/homepage?limit=5")).status_code)
            except httpx.TransportError:  # the connection the killed worker held
                statuses.append((await http.get("/homepage?limit=5")).status_code)
    assert set(statuses) == {200}
    with anyio.fail_after(30):
        while len(every_worker(server)) < WORKERS:  # noqa: ASYNC110 - uvicorn restarts it
            await anyio.sleep(0.2)


def _aggregator(redis_server: Shared, mongo: SeededMongo) -> Any:
    """An aggregator defining the same page (and so the same keys) as the example's."""
    from examples.homepage.mongo import connect

    client = connect(mongo.url)
    db = client[mongo.db_name]
    cache = LayeredCache(MemoryCache(), RedisCache.from_url(redis_server.url))
    return client, Aggregator(build_sections(db), page="homepage", cache=cache)


class _page_keys:
    """The six anonymous keys of ``/homepage?limit=...``, as the example names them."""

    def __init__(self, redis_server: Shared, mongo: SeededMongo, *, limit: int = 10) -> None:
        self.client, self.agg = _aggregator(redis_server, mongo)
        self.limit = limit

    async def __aenter__(self) -> dict[str, str]:
        ctx = RequestContext(params={"limit": self.limit})
        return {name: self.agg.key_for(self.agg.sections[name], ctx) for name in SECTION_NAMES}

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


class _editor:
    """Another process's aggregator on the same Redis: what an editing tool would run."""

    def __init__(self, redis_server: Shared, mongo: SeededMongo) -> None:
        self.client, self.agg = _aggregator(redis_server, mongo)

    async def __aenter__(self) -> Aggregator:
        agg: Aggregator = await self.agg.__aenter__()
        return agg

    async def __aexit__(self, *exc: object) -> None:
        await self.agg.__aexit__(None, None, None)
        await self.client.close()
