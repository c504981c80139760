"""End to end as the seed measured it: a client behind a slow network, six calls against one.

The seed's frontend made six calls one after another, about 300 ms each,
1,800 ms in all; its batch made one, 250 ms. Here a real TCP proxy
(``tests/fault_proxy.py``) holds every chunk :data:`ONE_WAY` seconds each
way, so that each request pays the seed's ~300 ms round trip, in front of
the FastAPI example whose sections take the seed's query times (80, 60, 70,
50, 65 and 75 ms, set through the demo page's fault switch, as its "seed's
query times" button does) whenever they run: on every legacy call, and on a
cold batch page. The client sends the six
legacy calls in sequence on one keep-alive connection, then one cold
``/homepage`` (a ``limit`` never asked before), in alternating order.
"""

from __future__ import annotations

import json
import statistics
import sys
import urllib.request
from typing import Final

import anyio

from ._common import Row, at_least, info
from ._servers import HOST, ROOT, app_environment, app_servers
from .bench_http import SEED_NOW, HTTPError, legacy_and_batch_times, seeded_mongo

# The fault proxy is the tests' own (tests/ is not a package: its modules import each other).
sys.path.insert(0, str(ROOT / "tests"))
from fault_proxy import FaultProxy

#: Half the seed's per-call network cost: each request and each response wait this long.
ONE_WAY: Final = 0.150
#: The seed's query time of each section (ms), on every call that runs it.
SEED_QUERIES: Final = {
    "featuredProducts": 80,
    "newArrivals": 60,
    "featuredStores": 70,
    "featuredEvents": 50,
    "featuredOffers": 65,
    "flashSales": 75,
}
TIME_LIMIT: Final = 180.0


def set_fault(url: str, section: str, fault: str) -> None:
    """``POST /demo/faults``: ``section`` misbehaves as ``fault`` says on every call."""
    request = urllib.request.Request(
        f"{url}/demo/faults",
        data=json.dumps({"section": section, "fault": fault}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise HTTPError(f"POST /demo/faults: {response.status}")


async def run(quick: bool) -> list[Row]:
    pairs = 3 if quick else 7
    with anyio.fail_after(TIME_LIMIT):
        async with seeded_mongo() as mongo:
            env = app_environment(
                MONGODB_URL=mongo.url,
                BATCHPAGE_DB="homepage",
                BATCHPAGE_SEED="0",
                BATCHPAGE_EXAMPLE_NOW=SEED_NOW.isoformat(),
                BATCHPAGE_DEMO_FAULTS="1",
            )
            with (
                app_servers({"homepage": env}) as servers,
                FaultProxy(HOST, servers["homepage"].port) as proxy,
            ):
                for name, ms in SEED_QUERIES.items():
                    set_fault(servers["homepage"].url, name, f"delay:{ms}ms")
                proxy.latency(ONE_WAY)
                # BYPASS: the fault switch keeps faulted sections out of the cache.
                legacy_times, batch_times = await legacy_and_batch_times(
                    proxy.port, pairs=pairs, cold=frozenset({"MISS", "BYPASS"})
                )
                if proxy.errors:
                    raise HTTPError(f"the latency proxy failed: {proxy.errors!r}")
    legacy_ms = statistics.median(legacy_times) * 1000
    batch_ms = statistics.median(batch_times) * 1000
    how = f"median of {pairs} pairs; {ONE_WAY * 2000:.0f} ms per round trip, the seed's queries"
    return [
        Row("end to end: six legacy calls in sequence / one cold batch", legacy_ms / batch_ms,
            at_least(5, how)),
        Row("end to end: six legacy calls in sequence", legacy_ms,
            info("the seed measured ~1,800 ms"), unit="ms"),
        Row("end to end: one cold batch call", batch_ms,
            info("the seed measured ~250 ms"), unit="ms"),
    ]  # fmt: skip
