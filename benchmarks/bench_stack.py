"""The server stacks side by side: which one the examples run on, and where the time goes.

Each app on each stack, in one run: FastAPI and Django on plain uvicorn
(asyncio loop, h11), on uvicorn with uvloop and httptools, and on granian;
Django also on hypercorn. Every server is started at once over one seeded
embedded MongoDB, with the bare endpoints on (``BATCHPAGE_BENCH_BARE=1``),
and they are measured in turns, each round visiting every server, so that
a burst of load elsewhere on this shared machine touches them all alike.

* warm: ``/homepage?limit=10`` (every section a memory HIT) and the bare
  endpoint answering its bytes after the same identity hook
  (``/bench/bare``), in requests per second over keep-alive connections
  (from wrk when it is installed), with the server's CPU time per request;
* cold: ``/homepage?limit=N`` for every ``N`` from 1 to 50 that this
  server was never asked (the warm page's 10 excepted): each request a page
  no cache holds, every section a MISS fetched from MongoDB. Each server
  has its own memory cache, so each gets the same 49 cold pages. The
  figure is the server plus the embedded database (nx-27017 answers about
  one query at a time), so stacks should differ little here.

Then the gap between the apps, by figures on one stack: the whole gap
between FastAPI's and Django's warm pages, the part the frameworks' bare
endpoints show, the part the server shows (Django on hypercorn against
uvicorn), and batchpage's own microseconds per warm page on each.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Final

import anyio

from ._common import Row, info
from ._servers import EXAMPLE_STACKS, AppServer, ServerSpec, app_environment, started
from .bench_http import (
    LOAD_NOTE,
    SEED_NOW,
    WARM_LIMIT,
    Connection,
    HTTPError,
    Load,
    cache_statuses,
    connections,
    fresh_limits,
    load_round,
    seeded_mongo,
    timed_get,
    warm_round,
)

#: Each app's stacks, in the order they are reported.
STACKS: Final[Mapping[str, tuple[str, ...]]] = {
    "fastapi": ("uvicorn", "uvicorn-uvloop", "granian"),
    "django": ("uvicorn", "uvicorn-uvloop", "granian", "hypercorn"),
}
#: What plain uvicorn (asyncio + h11) is, for the labels.
LABELS: Final = {
    "uvicorn": "uvicorn (asyncio, h11)",
    "uvicorn-uvloop": "uvicorn (uvloop, httptools)",
    "granian": "granian",
    "hypercorn": "hypercorn",
}
PAGE: Final = f"/homepage?limit={WARM_LIMIT}"
BARE: Final = "/bench/bare"
TIME_LIMIT: Final = 600.0
COLD_CLIENTS: Final = 4
#: The one stack on which the apps are compared: the examples' FastAPI stack.
GAP_STACK: Final = EXAMPLE_STACKS["fastapi"]


def name(app: str, stack: str) -> str:
    return f"{app}-on-{stack}"


async def check_warm(server: AppServer) -> None:
    """The page is warm and the bare endpoint answers its sections."""
    async with connections(server.port, 1) as (conn,):
        await timed_get(conn, PAGE)  # cold: fills the cache
        _, page = await timed_get(conn, PAGE)
        _, bare = await timed_get(conn, BARE)
    if set(cache_statuses(page).values()) != {"HIT"}:
        raise HTTPError(f"{server.label}: /homepage is not warm: {cache_statuses(page)}")
    if bare.split(b'"errors"')[0] != page.split(b'"errors"')[0]:
        raise HTTPError(f"{server.label}: {BARE} does not answer the page's sections")


async def cold_round(server: AppServer) -> float:
    """Every cold page this server can be asked, on a few connections: pages per second."""
    limits = list(fresh_limits({WARM_LIMIT}))

    async def client(conn: Connection, mine: list[int]) -> None:
        for limit in mine:
            _, body = await timed_get(conn, f"/homepage?limit={limit}")
            if set(cache_statuses(body).values()) != {"MISS"}:
                raise HTTPError(f"{server.label}: not a cold page: {cache_statuses(body)}")

    async with connections(server.port, COLD_CLIENTS) as conns:
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for i, conn in enumerate(conns):
                tg.start_soon(client, conn, limits[i::COLD_CLIENTS])
        elapsed = anyio.current_time() - start
    return len(limits) / elapsed


async def run(quick: bool) -> list[Row]:
    rounds, clients, seconds = (3, 8, 1.0) if quick else (5, 8, 2.0)
    # Requests per round: Django answers several times fewer per second than FastAPI.
    requests = {"fastapi": 2000 if quick else 5000, "django": 800 if quick else 2000}
    with anyio.fail_after(TIME_LIMIT):
        async with seeded_mongo() as mongo:
            env = app_environment(
                MONGODB_URL=mongo.url,
                BATCHPAGE_DB="homepage",
                BATCHPAGE_SEED="0",
                BATCHPAGE_EXAMPLE_NOW=SEED_NOW.isoformat(),
                BATCHPAGE_BENCH_BARE="1",
            )
            specs = {
                name(app, stack): ServerSpec(env, app, stack)
                for app, stacks in STACKS.items()
                for stack in stacks
            }
            with started(specs) as servers:
                rows = await measure(servers, rounds, clients, requests, seconds)
    return rows


async def measure(
    servers: dict[str, AppServer],
    rounds: int,
    clients: int,
    requests: Mapping[str, int],
    seconds: float,
) -> list[Row]:
    cold: dict[str, float] = {}
    for label, server in servers.items():
        cold[label] = await cold_round(server)  # first: the pages are cold only once
        await check_warm(server)
        for target in (PAGE, BARE):  # unmeasured: connections, routes and code paths warm
            await load_round(server.port, target, requests=clients * 20, clients=clients)
    loads: dict[tuple[str, str], list[Load]] = {
        (label, target): [] for label in servers for target in (PAGE, BARE)
    }
    order = list(servers)
    for r in range(rounds):
        for label in order if r % 2 == 0 else order[::-1]:
            server = servers[label]
            for target in (PAGE, BARE) if r % 2 == 0 else (BARE, PAGE):
                load = await warm_round(
                    server, target, requests=requests[server.app], seconds=seconds, clients=clients
                )
                loads[label, target].append(load)
    warm = {key: statistics.median(load.rate for load in got) for key, got in loads.items()}
    cpu = {
        key: statistics.median(load.server_cpu_us or 0.0 for load in got)
        for key, got in loads.items()
    }
    how = f"median of {rounds} rounds, {clients} connections, {LOAD_NOTE}"
    rows: list[Row] = []
    for app, stacks in STACKS.items():
        base = name(app, stacks[0])
        for stack in stacks:
            label = name(app, stack)
            page, bare = warm[label, PAGE], warm[label, BARE]
            rows += [
                Row(
                    f"stack: {app} on {LABELS[stack]}: warm /homepage",
                    page,
                    info(
                        f"{how}; {page / warm[base, PAGE]:.2f}x plain uvicorn; "
                        f"server CPU {cpu[label, PAGE]:.0f} us/request "
                        f"({cpu[base, PAGE] / cpu[label, PAGE]:.2f}x plain uvicorn's rate)"
                    ),
                    unit="/s",
                ),
                Row(
                    f"stack: {app} on {LABELS[stack]}: bare endpoint (same bytes)",
                    bare,
                    info(
                        f"{how}; {bare / warm[base, BARE]:.2f}x plain uvicorn; "
                        f"server CPU {cpu[label, BARE]:.0f} us/request"
                    ),
                    unit="/s",
                ),
                Row(
                    f"stack: {app} on {LABELS[stack]}: cold /homepage",
                    cold[label],
                    info(f"49 pages never asked, {COLD_CLIENTS} connections; MongoDB-bound"),
                    unit="/s",
                ),
            ]
    rows += gap_rows(warm, cpu)
    return rows


def gap_rows(
    warm: Mapping[tuple[str, str], float], cpu: Mapping[tuple[str, str], float]
) -> list[Row]:
    """FastAPI against Django on one stack, taken apart: framework, server, batchpage."""
    fastapi, django = name("fastapi", GAP_STACK), name("django", GAP_STACK)
    hypercorn = name("django", "hypercorn")

    def cost_us(label: str) -> float:
        """What a warm page costs over its bare endpoint: batchpage's work, per request."""
        return (1 / warm[label, PAGE] - 1 / warm[label, BARE]) * 1e6

    def cpu_cost_us(label: str) -> float:
        return cpu[label, PAGE] - cpu[label, BARE]

    on = f"both on {LABELS[GAP_STACK]}"
    return [
        Row(
            "stack: FastAPI warm /homepage / Django warm /homepage",
            warm[fastapi, PAGE] / warm[django, PAGE],
            info(f"{on}: the whole gap"),
        ),
        Row(
            "stack: FastAPI bare endpoint / Django bare endpoint",
            warm[fastapi, BARE] / warm[django, BARE],
            info(
                f"{on}: the frameworks' share, no batchpage at all; server CPU "
                f"{cpu[django, BARE]:.0f} against {cpu[fastapi, BARE]:.0f} us/request"
            ),
        ),
        Row(
            f"stack: Django bare on {LABELS[GAP_STACK]} / on hypercorn",
            warm[django, BARE] / warm[hypercorn, BARE],
            info(
                f"the server's share; server CPU {cpu[django, BARE]:.0f} against "
                f"{cpu[hypercorn, BARE]:.0f} us/request"
            ),
        ),
        Row(
            f"stack: batchpage per warm page on FastAPI, {LABELS[GAP_STACK]}",
            cost_us(fastapi),
            info(
                f"1/page rps - 1/bare rps: batchpage's own work, adapter included; "
                f"server CPU {cpu_cost_us(fastapi):.0f} us"
            ),
            unit="us",
        ),
        Row(
            f"stack: batchpage per warm page on Django, {LABELS[GAP_STACK]}",
            cost_us(django),
            info(f"the same, on Django; server CPU {cpu_cost_us(django):.0f} us"),
            unit="us",
        ),
    ]
