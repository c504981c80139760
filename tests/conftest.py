"""Shared fixtures: every async test runs on asyncio and on trio.

Tests of timing (parallelism, deadlines, expiry) run on trio's
``MockClock(autojump_threshold=0)`` through ``helpers.run_on_mock_clock``:
sleeps take no wall time and times are exact. The fixture's backends use real
clocks, because a virtual clock jumps ahead whenever the loop waits on a
worker thread, which would time out every sync source at once.
"""

from __future__ import annotations

from typing import Any

import pytest

from helpers import FakeClock


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, {}


#: The tiers, by directory: ``pytest -m core`` (or ``pytest tests/core``) needs no server.
TIERS = ("core", "redis", "examples")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, from the directory it lives in."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


# A TCP fault proxy in front of the Redis below (tests/fault_proxy.py).
from fault_proxy import redis_fault_proxy  # noqa: E402, F401

# A real Redis Cluster (3 masters, 3 replicas) for the cluster tests (tests/redis_cluster.py).
from redis_cluster import (  # noqa: E402
    _session_redis_cluster,  # noqa: F401
    private_redis_cluster,  # noqa: F401
    redis_cluster,  # noqa: F401
)

# A real redis-server for the Redis tests (tests/redis_server.py).
from redis_server import (  # noqa: E402
    _session_redis_server,  # noqa: F401
    private_redis_server,  # noqa: F401
    redis_server,  # noqa: F401
    ticker,  # noqa: F401
)

# The homepage's MongoDB (tests/mongo_server.py): the ``homepage_mongo`` fixture.
pytest_plugins = ["mongo_server"]

# The example apps under real HTTP servers (tests/http_servers.py).
from http_servers import (  # noqa: E402
    demo_app,  # noqa: F401
    demo_http_apps,  # noqa: F401
    faulty_http_apps,  # noqa: F401
    http_apps,  # noqa: F401
    redis_http_app,  # noqa: F401
)
