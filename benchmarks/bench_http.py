"""The homepage over HTTP: throughput against a bare endpoint, streaming, legacy calls.

Everything runs against the real example apps on the servers the examples
use (``EXAMPLE_STACKS``), in subprocesses on loopback, over an embedded
nx-27017 MongoDB seeded here (as the tests do), with the memory cache:

* throughput, for the FastAPI app and for the Django app:
  ``/homepage?limit=10`` (warm, anonymous) against ``/bench/bare`` on the
  same server, a bare endpoint of the same app answering the bytes of such
  a page after the same identity hook as ``/homepage`` (the app adds it with
  ``BATCHPAGE_BENCH_BARE=1``), so that the ratio is batchpage's own work;
  ``/bench/bare-no-identity`` shows what the identity hook itself costs. In
  alternating rounds of a fixed number of requests over a fixed number of
  keep-alive connections; the server's CPU time per request is read from
  ``/proc`` too, a figure that other work on a shared machine hardly moves;
* streaming: on a second server whose ``featuredEvents`` is slowed by the
  app's fault hook, the time to the first NDJSON section line of
  ``/homepage/stream`` against the time of the whole ``/homepage``, both
  cold (every request has a ``limit`` never asked before);
* legacy: the six legacy calls in sequence against one cold ``/homepage``.

The load comes from the small HTTP/1.1 client below, on asyncio streams,
not from httpx: httpx costs about as much CPU per request as the server's
bare endpoint, so on this two-core machine it would measure itself, and
squeeze both endpoints towards the same rate. The client's CPU share is
printed so that it can be seen not to be the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Final

import anyio
import attrs
from examples.homepage.data import seed
from examples.homepage.mongo import EmbeddedMongo, connect
from examples.homepage.sources import LEGACY_ENDPOINTS

from ._common import Row, at_least, at_most, info
from ._servers import EXAMPLE_STACKS, HOST, AppServer, ServerSpec, app_environment, started
from ._wrk import WRK, WrkError, wrk

#: The seeded data's "now", so that which flash sales run is fixed.
SEED_NOW: Final = datetime(2026, 11, 23, 21, 0, 0, tzinfo=UTC)
PRODUCTS: Final = 5000
#: The slow section of the streaming server, and how slow.
SLOW_SECTION: Final = "featuredEvents"
SLOW_FAULT: Final = f"{SLOW_SECTION}=delay:300ms"
WARM_LIMIT: Final = 10
#: The whole benchmark, and any one round, stop with an error past these (seconds).
TIME_LIMIT: Final = 420.0
ROUND_TIME_LIMIT: Final = 60.0
REQUEST_TIME_LIMIT: Final = 10.0
MAX_HEAD: Final = 64 * 1024


class HTTPError(RuntimeError):
    """The server answered something the benchmark did not expect."""


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response, in turn."""

    def __init__(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.host = f"Host: {HOST}:{port}\r\n".encode()

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port, limit=MAX_HEAD)
        return cls(port, reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    def request_bytes(self, target: str) -> bytes:
        return b"GET %s HTTP/1.1\r\n%s\r\n" % (target.encode(), self.host)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a prepared request; the status and the head (lower-cased)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head[9:12]), head.lower()

    async def get(self, request: bytes) -> tuple[int, bytes]:
        """Send a prepared request; the status and the body (``Content-Length`` framed)."""
        status, head = await self.send(request)
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            raise HTTPError(f"no content-length in {head!r}")
        end = head.index(b"\r\n", start + 2)
        return status, await self.reader.readexactly(int(head[start + 17 : end]))

    async def stream(self, request: bytes) -> tuple[int, float, bytes]:
        """Send a request answered in chunks; status, seconds to the first line, whole body."""
        start = time.perf_counter()
        status, head = await self.send(request)
        if b"\r\ntransfer-encoding: chunked" not in head:
            raise HTTPError(f"not a chunked response: {head!r}")
        body = bytearray()
        first_line = 0.0
        while True:  # bounded by the response's end (and the caller's time limit)
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers: the final CRLF
                return status, first_line, bytes(body)
            body += (await self.reader.readexactly(size + 2))[:-2]
            if not first_line and b"\n" in body:
                first_line = time.perf_counter() - start


@contextlib.asynccontextmanager
async def connections(port: int, count: int) -> AsyncIterator[list[Connection]]:
    opened: list[Connection] = []
    try:
        for _ in range(count):
            opened.append(await Connection.open(port))
        yield opened
    finally:
        for conn in opened:
            await conn.close()


async def timed_get(conn: Connection, target: str) -> tuple[float, bytes]:
    """One request: seconds to the whole body, and the body (which must be a 200)."""
    request = conn.request_bytes(target)
    start = time.perf_counter()
    with anyio.fail_after(REQUEST_TIME_LIMIT):
        status, body = await conn.get(request)
    elapsed = time.perf_counter() - start
    if status != 200:
        raise HTTPError(f"GET {target}: {status} {body[:300]!r}")
    return elapsed, body


def cache_statuses(body: bytes) -> dict[str, str]:
    page = json.loads(body)
    if page["errors"]:
        raise HTTPError(f"the page has errors: {page['errors']}")
    statuses: dict[str, str] = page["metadata"]["cache"]
    return statuses


# -- throughput ------------------------------------------------------------


@attrs.frozen
class Load:
    """One round of load: requests per second, and the CPU it took on each side."""

    rate: float
    #: This process's CPU time over the round's wall time: well under 1, or it measured itself.
    client_share: float
    #: The server's CPU time per request (microseconds), when the round was given the server.
    server_cpu_us: float | None = None
    #: The requests the round completed.
    requests: int = 0


async def load_round(
    port: int, target: str, *, requests: int, clients: int, server: AppServer | None = None
) -> Load:
    """``requests`` GETs of ``target`` on ``clients`` connections.

    With ``server``, its CPU time is read before and after: CPU per request
    hardly moves when other work shares the machine, where requests per
    second do.
    """
    per_client = requests // clients

    async def client(conn: Connection) -> None:
        request = conn.request_bytes(target)
        for _ in range(per_client):
            status, body = await conn.get(request)
            if status != 200:
                raise HTTPError(f"GET {target}: {status} {body[:300]!r}")

    async with connections(port, clients) as conns:
        server_cpu = server.cpu_seconds() if server is not None else 0.0
        cpu, start = time.process_time(), time.perf_counter()
        with anyio.fail_after(ROUND_TIME_LIMIT):
            async with anyio.create_task_group() as tg:
                for conn in conns:
                    tg.start_soon(client, conn)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if server is not None:
            server_cpu = server.cpu_seconds() - server_cpu
    done = per_client * clients
    return Load(
        done / elapsed,
        cpu / elapsed,
        None if server is None else server_cpu / done * 1e6,
        done,
    )


PAGE: Final = f"/homepage?limit={WARM_LIMIT}"
BARE: Final = "/bench/bare"
BARE_NO_IDENTITY: Final = "/bench/bare-no-identity"
APP_NAMES: Final = {"fastapi": "FastAPI", "django": "Django"}


async def wrk_round(server: AppServer, target: str, *, seconds: float, clients: int) -> Load:
    """``seconds`` of GETs of ``target`` from wrk (one thread, ``clients`` connections).

    wrk is C: it spends a few microseconds of CPU per request where the
    asyncio client above spends tens, so on a two-core machine it leaves the
    server its core, and the ratio of two endpoints' rates is the ratio of
    their costs (the Python client, near 10,000 requests per second, becomes
    a bottleneck itself and squeezes both rates together).
    """
    cpu = server.cpu_seconds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = await anyio.to_thread.run_sync(
            lambda: wrk(server.port, target, seconds=seconds, connections=clients)
        )
    except WrkError as error:
        raise HTTPError(str(error)) from None
    elapsed = time.perf_counter() - start
    cpu = server.cpu_seconds() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk's own CPU, once it is reaped
    wrk_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Load(done.rate, wrk_cpu / elapsed, cpu / done.requests * 1e6, done.requests)


async def warm_round(
    server: AppServer, target: str, *, requests: int, seconds: float, clients: int
) -> Load:
    """One measured round: wrk for ``seconds`` when it is installed, else the asyncio client."""
    if WRK is not None:
        return await wrk_round(server, target, seconds=seconds, clients=clients)
    return await load_round(server.port, target, requests=requests, clients=clients, server=server)


LOAD_NOTE: Final = "load: wrk, 1 thread" if WRK else "load: the asyncio client (no wrk)"


async def throughput(
    server: AppServer, *, rounds: int, requests: int, seconds: float, clients: int
) -> list[Row]:
    """Warm ``/homepage`` against the bare endpoints on one server, in alternating rounds."""
    targets = (PAGE, BARE, BARE_NO_IDENTITY)
    async with connections(server.port, 1) as (conn,):
        await timed_get(conn, PAGE)  # cold: fills the cache
        _, page = await timed_get(conn, PAGE)
        bares = [(await timed_get(conn, target))[1] for target in (BARE, BARE_NO_IDENTITY)]
    if set(cache_statuses(page).values()) != {"HIT"}:
        raise HTTPError(f"/homepage is not warm: {cache_statuses(page)}")
    for bare in bares:
        if json.loads(bare)["sections"] != json.loads(page)["sections"]:
            raise HTTPError("a bare endpoint does not answer the page's sections")
    # Every endpoint once more, unmeasured: connections, routes and code paths warm.
    for target in targets:
        await load_round(server.port, target, requests=clients * 20, clients=clients)

    loads: dict[str, list[Load]] = {target: [] for target in targets}
    ratios: list[float] = []
    for r in range(rounds):
        rate: dict[str, float] = {}
        for target in targets if r % 2 == 0 else targets[::-1]:
            load = await warm_round(
                server, target, requests=requests, seconds=seconds, clients=clients
            )
            loads[target].append(load)
            rate[target] = load.rate
        ratios.append(rate[PAGE] / rate[BARE])
    async with connections(server.port, 1) as (conn,):
        _, page = await timed_get(conn, PAGE)
    if not set(cache_statuses(page).values()) <= {"HIT", "STALE"}:
        raise HTTPError(f"/homepage went cold during the rounds: {cache_statuses(page)}")

    def rps(target: str) -> float:
        return statistics.median(load.rate for load in loads[target])

    def cpu_us(target: str) -> float:
        return statistics.median(load.server_cpu_us or 0.0 for load in loads[target])

    app = APP_NAMES[server.app]
    on = f"{app} on {server.stack}"
    size = f"{seconds:g} s" if WRK else f"{requests} requests"
    how = f"{rounds} rounds of {size}, {clients} keep-alive connections, {LOAD_NOTE}"
    shares = [load.client_share for target in targets for load in loads[target]]
    return [
        Row(
            f"http: {app} warm /homepage rps / bare endpoint rps (same bytes)",
            statistics.median(ratios),
            at_least(
                0.9,
                f"{on}; the bare endpoint after the same identity hook; median of {how}; "
                f"rounds {min(ratios):.3f}-{max(ratios):.3f}",
            ),
        ),
        Row(
            f"http: {app} the same, from the server's CPU per request",
            cpu_us(BARE) / cpu_us(PAGE),
            info(
                f"bare {cpu_us(BARE):.0f} us, page {cpu_us(PAGE):.0f} us of server CPU: "
                f"batchpage's own work {cpu_us(PAGE) - cpu_us(BARE):.0f} us per warm page"
            ),
        ),
        Row(
            f"http: {app} warm /homepage rps / bare endpoint without the identity hook",
            rps(PAGE) / rps(BARE_NO_IDENTITY),
            info("the app's identity hook (its session) counted against the page"),
        ),
        Row(f"http: {app} warm /homepage requests per second", rps(PAGE), info(on), unit="/s"),
        Row(f"http: {app} bare endpoint requests per second", rps(BARE), info(on), unit="/s"),
        Row(
            f"http: {app} bare endpoint without the identity hook, requests per second",
            rps(BARE_NO_IDENTITY),
            info(on),
            unit="/s",
        ),
        Row(
            f"http: {app} load generator CPU / wall time during the rounds",
            statistics.median(shares),
            info("well under 1: the server is the bottleneck"),
        ),
    ]


# -- cold pages: streaming and legacy ---------------------------------------


def fresh_limits(used: set[int]) -> Iterator[int]:
    """Every ``limit`` the server accepts (1 to 50) that has not been asked yet."""
    return (n for n in range(1, 51) if n not in used)


async def streaming(server: AppServer, *, pairs: int) -> list[Row]:
    limits = fresh_limits({WARM_LIMIT})
    firsts: list[float] = []
    fulls: list[float] = []
    async with connections(server.port, 2) as (streamer, pager):

        async def first_line() -> float:
            request = streamer.request_bytes(f"/homepage/stream?limit={next(limits)}")
            with anyio.fail_after(REQUEST_TIME_LIMIT):
                status, first, body = await streamer.stream(request)
            lines = [json.loads(line) for line in body.splitlines()]
            if status != 200 or lines[0].get("cache") != "MISS" or lines[0].get("error"):
                raise HTTPError(f"stream: {status} {lines[0]}")
            if lines[-1].get("status") != 200 or lines[-2]["section"] != SLOW_SECTION:
                raise HTTPError(f"stream: the slow section was not last: {lines[-2:]}")
            return first

        async def full_page() -> float:
            elapsed, body = await timed_get(pager, f"/homepage?limit={next(limits)}")
            statuses = cache_statuses(body)
            if set(statuses.values()) != {"MISS", "BYPASS"}:  # the faulted one is uncached
                raise HTTPError(f"the page was not cold: {statuses}")
            return elapsed

        await first_line()  # unmeasured: the first cold requests open the database pool
        await full_page()
        for i in range(pairs):
            if i % 2 == 0:
                firsts.append(await first_line())
                fulls.append(await full_page())
            else:
                fulls.append(await full_page())
                firsts.append(await first_line())
    first, full = statistics.median(firsts), statistics.median(fulls)
    return [
        Row(
            "http: first streamed section / full page (cold)",
            first / full,
            at_most(0.7, f"median of {pairs} pairs, {SLOW_FAULT}"),
        ),
        Row("http: first streamed section (cold)", first * 1000, info("milliseconds"), unit="ms"),
        Row("http: full page (cold, slow section)", full * 1000, info("milliseconds"), unit="ms"),
    ]


async def legacy_and_batch_times(
    port: int, *, pairs: int, cold: frozenset[str] = frozenset({"MISS"})
) -> tuple[list[float], list[float]]:
    """``pairs`` times of the six legacy calls in sequence, and of one cold ``/homepage``.

    On one keep-alive connection to ``port``, in alternating order, each
    pair with a ``limit`` never asked before; every section of the batch page
    must have a status in ``cold``.
    """
    limits = fresh_limits({WARM_LIMIT})
    legacy_times: list[float] = []
    batch_times: list[float] = []
    async with connections(port, 1) as (conn,):

        async def legacy(limit: int) -> float:
            total = 0.0
            for path in LEGACY_ENDPOINTS.values():
                sep = "&" if "?" in path else "?"
                elapsed, _ = await timed_get(conn, f"{path}{sep}limit={limit}")
                total += elapsed
            return total

        async def batch(limit: int) -> float:
            elapsed, body = await timed_get(conn, f"/homepage?limit={limit}")
            if not set(cache_statuses(body).values()) <= cold:
                raise HTTPError(f"the page was not cold: {cache_statuses(body)}")
            return elapsed

        await legacy(WARM_LIMIT)  # unmeasured: connections and code paths warm
        for i in range(pairs):
            limit = next(limits)
            steps = [(legacy, legacy_times), (batch, batch_times)]
            for call, times in steps if i % 2 == 0 else reversed(steps):
                times.append(await call(limit))
    return legacy_times, batch_times


async def legacy_against_batch(server: AppServer, *, pairs: int) -> list[Row]:
    legacy_times, batch_times = await legacy_and_batch_times(server.port, pairs=pairs)
    return [
        Row(
            "http: six legacy calls in sequence / one cold /homepage",
            statistics.median(legacy_times) / statistics.median(batch_times),
            info(
                f"median of {pairs} pairs; modest because nx-27017 "
                "answers about one query at a time"
            ),
        )
    ]


# -- the run ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def seeded_mongo() -> AsyncIterator[EmbeddedMongo]:
    """An embedded MongoDB with the seed's data (PRODUCTS products at SEED_NOW), for the block."""
    async with EmbeddedMongo() as mongo:
        client = connect(mongo.url)
        try:
            await seed(client["homepage"], products=PRODUCTS, now=SEED_NOW)
        finally:
            await client.close()
        yield mongo


async def run(quick: bool) -> list[Row]:
    if quick:
        rounds, clients, pairs, seconds = 5, 8, 3, 1.0
        requests = {"fastapi": 3000, "django": 800}
    else:
        rounds, clients, pairs, seconds = 9, 8, 7, 2.0
        requests = {"fastapi": 6000, "django": 1500}
    with anyio.fail_after(TIME_LIMIT):
        async with seeded_mongo() as mongo:
            common = {
                "MONGODB_URL": mongo.url,
                "BATCHPAGE_DB": "homepage",
                "BATCHPAGE_SEED": "0",
                "BATCHPAGE_EXAMPLE_NOW": SEED_NOW.isoformat(),
            }
            bare = app_environment(**common, BATCHPAGE_BENCH_BARE="1")
            specs = {
                "fastapi": ServerSpec(bare, "fastapi", EXAMPLE_STACKS["fastapi"]),
                "django": ServerSpec(bare, "django", EXAMPLE_STACKS["django"]),
                "slow": ServerSpec(
                    app_environment(**common, BATCHPAGE_EXAMPLE_FAULTS=SLOW_FAULT),
                    "fastapi",
                    EXAMPLE_STACKS["fastapi"],
                ),
            }
            with started(specs) as servers:
                rows: list[Row] = []
                for app in ("fastapi", "django"):
                    rows += await throughput(
                        servers[app],
                        rounds=rounds,
                        requests=requests[app],
                        seconds=seconds,
                        clients=clients,
                    )
                rows += await streaming(servers["slow"], pairs=pairs)
                rows += await legacy_against_batch(servers["fastapi"], pairs=pairs)
    return rows
