"""Warm pages per second with 1, 2 and 4 uvicorn workers over one Redis.

Each worker has its own memory layer; the page is warm in every worker after
a first round. The load comes from this process, on the same machine (two
cores here), so the figures say how the example scales on this host, not on
a production one: informational, side by side in one run.
"""

from __future__ import annotations

import anyio

from ._common import Row, info
from ._servers import app_environment, app_servers, redis_server
from .bench_http import SEED_NOW, WARM_LIMIT, load_round, seeded_mongo

TIME_LIMIT = 300.0


async def run(quick: bool) -> list[Row]:
    requests, clients, rounds = (3000, 8, 3) if quick else (8000, 8, 5)
    rows: list[Row] = []
    with anyio.fail_after(TIME_LIMIT):
        async with seeded_mongo() as mongo:
            with redis_server() as redis_url:
                env = app_environment(
                    MONGODB_URL=mongo.url,
                    BATCHPAGE_DB="homepage",
                    BATCHPAGE_SEED="0",
                    BATCHPAGE_EXAMPLE_NOW=SEED_NOW.isoformat(),
                    REDIS_URL=redis_url,
                    BATCHPAGE_SESSION_SECRET="bench",
                )
                single = 0.0
                for workers in (1, 2, 4):
                    with app_servers({"homepage": env}, workers=workers) as servers:
                        port = servers["homepage"].port
                        target = f"/homepage?limit={WARM_LIMIT}"
                        await load_round(port, target, requests=requests, clients=clients)
                        rates = []
                        for _ in range(rounds):
                            load = await load_round(
                                port, target, requests=requests, clients=clients
                            )
                            rates.append(load.rate)
                        rates.sort()
                    rate = rates[len(rates) // 2]
                    single = single or rate
                    rows.append(
                        Row(
                            f"workers: warm /homepage rps, {workers} worker(s), one Redis",
                            rate,
                            info(f"median of {rounds}; {rate / single:.2f}x one worker"),
                            unit="/s",
                        )
                    )
    return rows
