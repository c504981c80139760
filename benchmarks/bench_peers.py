"""batchpage against the endpoint a team writes today, under wrk, warm and cold.

The peer (:mod:`examples.peers`) runs the same six MongoDB queries with
``asyncio.gather``, each under ``asyncio.wait_for`` and cached by cashews in
memory; batchpage's homepage is the example app. Both serve the same
database, behind the same session middleware, on the same server stack
(one worker each, started the same way), and are loaded by wrk in
alternating rounds of the same length and connections:

* warm: ``/homepage?limit=10``, anonymous, every section cached on both sides;
* expiring: every section lives 1 s on both sides (``BATCHPAGE_BENCH_FRESH=1``;
  batchpage may then serve it stale for 1 s more while one refresh runs, the
  peer misses, every request at once, until one of them has filled it again);
* uncached: caching off on both sides (``BATCHPAGE_BENCH_FRESH=0``): every
  request runs all six queries, and both are bound by the one embedded
  MongoDB: the honest expectation is a tie (a target of at least 0.95).

Figures: requests per second (higher is better) and the 99th percentile of
latency (lower is better), as ratios batchpage against the peer.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator

import anyio

from ._common import Row, at_least, at_most, info
from ._servers import EXAMPLE_STACKS, AppServer, app_environment, app_servers
from ._wrk import WrkRun, wrk
from .bench_http import SEED_NOW, WARM_LIMIT, seeded_mongo

TIME_LIMIT = 600.0
CONNECTIONS = 8
#: Each mode's BATCHPAGE_BENCH_FRESH (None: the examples' own policies).
MODES = {"warm": None, "expiring": "1", "uncached": "0"}
#: The least rps ratio, and the most p99 ratio, each mode must show.
TARGETS = {"warm": (1.0, 1.0), "expiring": (1.0, 1.0), "uncached": (0.95, 1.1)}


@contextlib.contextmanager
def ours_and_peer(app: str, env: dict[str, str]) -> Iterator[tuple[AppServer, AppServer]]:
    stack = EXAMPLE_STACKS[app]
    with (
        app_servers({"batchpage": env}, app=app, stack=stack) as ours,
        app_servers({"peer": env}, app=f"{app}-peer", stack=stack) as peer,
    ):
        yield ours["batchpage"], peer["peer"]


def _load(server: AppServer, target: str, seconds: float) -> WrkRun:
    return wrk(server.port, target, seconds=seconds, connections=CONNECTIONS)


async def race(
    app: str, mode: str, env: dict[str, str], *, rounds: int, seconds: float
) -> list[Row]:
    target = f"/homepage?limit={WARM_LIMIT}"
    ours_loads: list[WrkRun] = []
    peer_loads: list[WrkRun] = []
    with ours_and_peer(app, env) as (ours, peer):
        for server in (ours, peer):  # warm caches, connections and code paths
            await anyio.to_thread.run_sync(_load, server, target, 1.0)
        for i in range(rounds):
            order = [(ours, ours_loads), (peer, peer_loads)]
            for server, loads in order if i % 2 == 0 else reversed(order):
                loads.append(await anyio.to_thread.run_sync(_load, server, target, seconds))
    rate = statistics.median(x.rate for x in ours_loads)
    peer_rate = statistics.median(x.rate for x in peer_loads)
    p50 = statistics.median(x.p50 for x in ours_loads)
    peer_p50 = statistics.median(x.p50 for x in peer_loads)
    p99 = statistics.median(x.p99 for x in ours_loads)
    peer_p99 = statistics.median(x.p99 for x in peer_loads)
    label = f"peers ({app}, {mode})"
    how = f"median of {rounds} x {seconds:g} s, {CONNECTIONS} connections, wrk"
    least_rate, most_p99 = TARGETS[mode]
    return [
        Row(
            f"{label}: batchpage rps / gather+cashews rps",
            rate / peer_rate,
            at_least(least_rate, how),
        ),
        Row(
            f"{label}: batchpage p99 / gather+cashews p99",
            p99 / peer_p99,
            at_most(most_p99, how),
        ),
        Row(
            f"{label}: batchpage rps, p50, p99",
            rate,
            info(f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"),
            unit="/s",
        ),
        Row(
            f"{label}: gather+cashews rps, p50, p99",
            peer_rate,
            info(f"p50 {peer_p50 * 1e3:.2f} ms, p99 {peer_p99 * 1e3:.2f} ms"),
            unit="/s",
        ),
    ]


async def run(quick: bool) -> list[Row]:
    rounds, seconds = (2, 2.0) if quick else (5, 4.0)
    rows: list[Row] = []
    with anyio.fail_after(TIME_LIMIT):
        async with seeded_mongo() as mongo:
            common = app_environment(
                MONGODB_URL=mongo.url,
                BATCHPAGE_DB="homepage",
                BATCHPAGE_SEED="0",
                BATCHPAGE_EXAMPLE_NOW=SEED_NOW.isoformat(),
                BATCHPAGE_SESSION_SECRET="bench",
            )
            for app in EXAMPLE_STACKS:
                for mode, fresh in MODES.items():
                    env = {**common, **({"BATCHPAGE_BENCH_FRESH": fresh} if fresh else {})}
                    rows += await race(app, mode, env, rounds=rounds, seconds=seconds)
    return rows
