"""Warm pages per second with 1, 2 and 4 uvicorn workers, over one Redis and over a Redis Cluster.

Two servers of the FastAPI example run side by side, each with N workers:
one over a single ``redis-server``, one over a real Redis Cluster of 3
masters and 3 replicas on loopback (:mod:`examples.redis_cluster`). Both
get the same load from the same generator (``bench_http.load_round``), in
alternating rounds, so the machine's state is shared fairly between them.
Each worker has its own memory layer; the page is warm in every worker
after a first, unmeasured round.

More figures say what the cluster costs a page: a warm page from memory
over the cluster against over one Redis, in this process (the same work,
without HTTP or the machine's other processes between them); Redis reads
(``MGET``) per warm page over HTTP while the four workers' memory holds it
(what reaches the cluster at all), and, with no memory layer in front (the
example's six sections through a ``RedisCache`` alone, counted by the
masters' ``INFO commandstats``), ``MGET``\\ s per warm page from Redis: one
per hash-tag slot the page touches, two for the homepage (the global
sections' tag, and the signed-in user's or the anonymous visitor's).

The load comes from this process, on the same machine (two cores here), so
the rates say how the example scales on this host, not on a production
one: informational, side by side in one run. The load generator's CPU share
is given with them: what it takes, the workers cannot have.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import anyio
from examples.homepage.mongo import connect
from examples.homepage.sources import build_sections
from examples.redis_cluster import RedisClusterServer
from redis.crc import key_slot

from batchpage import (
    Aggregator,
    CacheStatus,
    LayeredCache,
    MemoryCache,
    RedisCache,
    RequestContext,
)

from ._common import Row, at_most, exactly, info
from ._servers import app_environment, app_servers, redis_cluster, redis_server
from .bench_http import SEED_NOW, WARM_LIMIT, load_round, seeded_mongo, warm_round

TIME_LIMIT = 300.0
WORKERS = (1, 2, 4)
#: The two shared layers, by server label: what the rows call them.
SHARED = {"redis": "one Redis", "cluster": "Redis Cluster"}
#: Signed-in pages whose MGETs are counted (each user's keys are in the user's slot).
USERS = 20
#: The name of a rate's row; :func:`doc_table` finds the rows by it.
RATE_ROW = "workers: warm /homepage rps, {workers} worker(s), {shared}"
CPU_ROW = "workers: load generator's CPU share, {workers} worker(s)"


async def run(quick: bool) -> list[Row]:
    requests, clients, rounds = (3000, 8, 3) if quick else (8000, 8, 5)
    seconds = 2.0 if quick else 3.0  # a round's length under wrk (requests: without it)
    rows: list[Row] = []
    with anyio.fail_after(TIME_LIMIT):
        async with seeded_mongo() as mongo:
            # The cluster is started from this (the main) thread: its nodes die with it.
            with redis_server() as redis_url, redis_cluster() as cluster:
                common = {
                    "MONGODB_URL": mongo.url,
                    "BATCHPAGE_DB": "homepage",
                    "BATCHPAGE_SEED": "0",
                    "BATCHPAGE_EXAMPLE_NOW": SEED_NOW.isoformat(),
                    "BATCHPAGE_SESSION_SECRET": "bench",
                }
                envs = {
                    "redis": app_environment(**common, REDIS_URL=redis_url),
                    "cluster": app_environment(**common, REDIS_URL=cluster.url),
                }
                single: dict[str, float] = {}
                for workers in WORKERS:
                    rates, cpu, mgets = await _side_by_side(
                        envs,
                        cluster,
                        workers,
                        requests=requests,
                        seconds=seconds,
                        clients=clients,
                        rounds=rounds,
                    )
                    single = single or rates
                    for label, name in SHARED.items():
                        note = f"median of {rounds}; {rates[label] / single[label]:.2f}x one worker"
                        if label == "cluster":
                            note += f"; {rates['cluster'] / rates['redis']:.2f}x one Redis"
                        rows.append(
                            Row(
                                RATE_ROW.format(workers=workers, shared=name),
                                rates[label],
                                info(note),
                                unit="/s",
                            )
                        )
                    rows.append(
                        Row(
                            CPU_ROW.format(workers=workers),
                            cpu,
                            info("of one core, median over the rounds: 1.0 is a core's worth"),
                            unit="",
                        )
                    )
                sent, pages = mgets
                rows.append(
                    Row(
                        f"cluster: MGETs per 1,000 warm pages over HTTP, {WORKERS[-1]} workers",
                        1000 * sent / pages,
                        info(
                            f"{sent} in {pages:,} pages: each worker's memory in front; "
                            "refreshes and first reads"
                        ),
                        unit="",
                    )
                )
                rows.append(await _memory_pages(redis_url, cluster, mongo.url, quick=quick))
                rows += await _mgets_from_redis(cluster, mongo.url)
    return rows


async def _side_by_side(
    envs: dict[str, dict[str, str]],
    cluster: RedisClusterServer,
    workers: int,
    *,
    requests: int,
    clients: int,
    seconds: float,
    rounds: int,
) -> tuple[dict[str, float], float, tuple[int, int]]:
    """Each server's median warm rate with ``workers`` workers, the load generator's median CPU
    share, and the MGETs the cluster served during the cluster server's measured pages."""
    target = f"/homepage?limit={WARM_LIMIT}"
    with app_servers(envs, workers=workers) as servers:
        for server in servers.values():  # unmeasured: every worker's memory warm
            await load_round(server.port, target, requests=requests, clients=clients)
        samples: dict[str, list[float]] = {label: [] for label in servers}
        shares: list[float] = []
        labels = list(servers)
        mgets_before = cluster.command_calls().get("mget", 0)
        pages = 0
        for r in range(rounds):
            for label in labels if r % 2 == 0 else labels[::-1]:
                load = await warm_round(
                    servers[label], target, requests=requests, seconds=seconds, clients=clients
                )
                samples[label].append(load.rate)
                shares.append(load.client_share)
                pages += load.requests if label == "cluster" else 0
        mgets = cluster.command_calls().get("mget", 0) - mgets_before
    medians = {label: sorted(s)[len(s) // 2] for label, s in samples.items()}
    return medians, statistics.median(shares), (mgets, pages)


async def _memory_pages(
    redis_url: str, cluster: RedisClusterServer, mongo_url: str, *, quick: bool
) -> Row:
    """A warm page from memory over the cluster against over one Redis, in this process.

    The example's sections under a ``LayeredCache`` each, warm in memory,
    timed in alternating batches (the fastest batch of each counts): what a
    worker does per warm page, without HTTP and without the machine's other
    processes between the two.
    """
    repeat, inner = (10, 1000) if quick else (20, 2000)
    client = connect(mongo_url)
    ctx = RequestContext(params={"limit": WARM_LIMIT})
    try:
        async with contextlib.AsyncExitStack() as stack:
            aggs = {}
            for label, url in (("redis", redis_url), ("cluster", cluster.url)):
                cache = LayeredCache(MemoryCache(), RedisCache.from_url(url, command_timeout=1.0))
                sections = build_sections(client["homepage"], now=lambda: SEED_NOW)
                agg = await stack.enter_async_context(
                    Aggregator(sections, page="homepage", cache=cache)
                )
                await agg.fetch(ctx)  # cold: fills memory and Redis
                # Entries the servers wrote earlier may be stale by now (flash
                # sales are fresh 15 s): their background refreshes finish first.
                await agg.settle()
                await agg.fetch(ctx)
                statuses = {r.cache for r in (await agg.fetch(ctx)).results.values()}
                if statuses != {CacheStatus.HIT}:
                    raise RuntimeError(f"the page over {label} is not warm: {statuses}")
                aggs[label] = agg
            samples: dict[str, list[float]] = {label: [] for label in aggs}
            for r in range(repeat):
                for label in ("redis", "cluster") if r % 2 == 0 else ("cluster", "redis"):
                    agg = aggs[label]
                    start = time.perf_counter()
                    for _ in range(inner):
                        (await agg.fetch(ctx)).to_json()
                    samples[label].append((time.perf_counter() - start) / inner)
    finally:
        await client.close()
    # The least disturbed batch of each: on a loaded machine a batch of a few
    # milliseconds is often preempted, and both run the same code.
    redis_time, cluster_time = (min(samples[k]) for k in ("redis", "cluster"))
    return Row(
        "cluster: warm page from memory, Redis Cluster / one Redis (in-process)",
        cluster_time / redis_time,
        at_most(
            1.1,
            f"{cluster_time * 1e6:.1f} against {redis_time * 1e6:.1f} us; "
            "memory answers, Redis is not asked",
        ),
    )


async def _mgets_from_redis(cluster: RedisClusterServer, mongo_url: str) -> list[Row]:
    """The example's page through a ``RedisCache`` alone: MGETs per warm page, by identity."""
    client = connect(mongo_url)
    try:
        cache = RedisCache.from_url(cluster.url, command_timeout=1.0)
        sections = build_sections(client["homepage"], now=lambda: SEED_NOW)
        async with Aggregator(sections, page="homepage", cache=cache) as agg:
            with anyio.fail_after(10):
                while not await cache.connect():  # noqa: ASYNC110 - backed off: poll
                    await anyio.sleep(0.05)
            assert cache.cluster, "REDIS_URL of the cluster made a single-node client"
            identities = {
                "anonymous": [RequestContext(params={"limit": WARM_LIMIT})],
                f"signed in ({USERS} users)": [
                    RequestContext(user_id=f"user{u}", params={"limit": WARM_LIMIT})
                    for u in range(USERS)
                ],
            }
            for contexts in identities.values():  # cold: fills the cluster
                for ctx in contexts:
                    await agg.fetch(ctx)
            rows = []
            for label, contexts in identities.items():
                slots = sum(_slots(agg, ctx) for ctx in contexts) / len(contexts)
                before = cluster.command_calls().get("mget", 0)
                pages = [await agg.fetch(ctx) for ctx in contexts for _ in range(5)]
                sent = cluster.command_calls().get("mget", 0) - before
                statuses = {r.cache for page in pages for r in page.results.values()}
                if statuses != {CacheStatus.HIT}:
                    raise RuntimeError(f"the {label} page is not warm in Redis: {statuses}")
                rows.append(
                    Row(
                        f"cluster: MGETs per warm page from Redis, {label}",
                        sent / len(pages),
                        exactly(slots, f"one per slot the page touches: {slots:g}"),
                        unit="",
                    )
                )
    finally:
        await client.close()
    return rows


def _slots(agg: Aggregator, ctx: RequestContext) -> int:
    """Hash slots of the page's keys: the global sections' tag, and the personal one's."""
    return len({key_slot(agg.key_for(s, ctx).encode()) for s in agg.sections.values()})


def doc_table(rows: list[Row]) -> list[str]:
    """The rates side by side, one line per worker count, then the other figures."""
    by_name = {row.name: row for row in rows}
    names = list(SHARED.values())
    lines = [
        "| workers | "
        + " | ".join(f"{name}: pages/s | vs 1 worker" for name in names)
        + f" | {names[1]} / {names[0]} | load generator's CPU |",
        "| ---: |" + " ---: | ---: |" * len(names) + " ---: | ---: |",
    ]
    rates: dict[tuple[int, str], float] = {}
    for workers in WORKERS:
        cells = []
        for name in names:
            row = by_name.get(RATE_ROW.format(workers=workers, shared=name))
            if row is None:
                return []  # not this module's rows
            rates[workers, name] = row.value
            cells += [f"{row.value:,.0f}", f"{row.value / rates[WORKERS[0], name]:.2f}x"]
        ratio = rates[workers, names[1]] / rates[workers, names[0]]
        cpu = by_name.get(CPU_ROW.format(workers=workers))
        share = "" if cpu is None else f"{cpu.value:.2f} of a core"
        lines.append(f"| {workers} | " + " | ".join(cells) + f" | {ratio:.2f}x | {share} |")
    others = [row for row in rows if not row.name.startswith("workers: ")]
    lines += ["", "| figure | value | target | |", "| --- | ---: | --- | --- |"]
    for row in others:
        value = f"{row.value:,.3f}".rstrip("0").rstrip(".") + row.unit
        target = row.target.text.replace("|", "\\|")
        lines.append(f"| {row.name} | {value} | {target} | {row.verdict} |")
    return lines
