"""The FastAPI app with ``REDIS_URL``: Redis under the cache, and a rollout that follows a key.

One app server, one redis-server, both real (``tests/http_servers.py``).
Waiting for the app to notice a new key value polls HTTP a bounded number
of times; nothing asserts a duration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from batchpage import Rollout
from http_servers import ROLLOUT_PERCENT, ROLLOUT_SALT, AppServer, sign_in
from redis_server import RedisServer

pytestmark = [pytest.mark.http, pytest.mark.redis, pytest.mark.mongo]

KEY = "batchpage:rollout:homepage"


@pytest.fixture
def redis_app(
    redis_http_app: tuple[AppServer, RedisServer],
) -> Iterator[tuple[httpx.Client, RedisServer]]:
    """A client of the app, and its Redis; the rollout key is removed afterwards."""
    server, redis_server = redis_http_app
    with server.client() as client:
        yield client, redis_server
    with redis_server.client() as r:
        r.delete(KEY)


def eventually(check: Callable[[], bool], *, polls: int = 300) -> None:
    """Poll ``check`` until true, at most ``polls`` times, 20 ms apart."""
    for _ in range(polls):
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"still false after {polls} polls")


def users_on_batch(client: httpx.Client, users: list[str]) -> list[bool]:
    decisions = []
    for user in users:
        sign_in(client, user)
        decisions.append(client.get("/rollout").json()["useBatch"])
    return decisions


def test_rollout_follows_the_redis_key(redis_app: tuple[httpx.Client, RedisServer]) -> None:
    """SET the key to 0, 100, off: every instance applies it within a poll interval."""
    client, redis_server = redis_app
    users = [f"user-{i}" for i in range(30)]
    start = Rollout(ROLLOUT_PERCENT, salt=ROLLOUT_SALT)
    assert users_on_batch(client, users) == [start.use_batch(u) for u in users]
    with redis_server.client() as r:
        r.set(KEY, "0")
        eventually(lambda: not any(users_on_batch(client, users)))
        r.set(KEY, "100")
        eventually(lambda: all(users_on_batch(client, users)))
        r.set(KEY, "off")
        eventually(lambda: client.get("/rollout").json()["enabled"] is False)
        assert not any(users_on_batch(client, users))
        r.set(KEY, "25")
        eventually(lambda: client.get("/rollout").json()["percentage"] == 25.0)
        assert client.get("/rollout").json()["enabled"] is True


def test_bad_key_value_keeps_the_last_setting(
    redis_app: tuple[httpx.Client, RedisServer],
) -> None:
    """A key holding garbage is ignored; the previous percentage stands."""
    client, redis_server = redis_app
    with redis_server.client() as r:
        r.set(KEY, "10")
        eventually(lambda: client.get("/rollout").json()["percentage"] == 10.0)
        r.set(KEY, "lots")
        for _ in range(20):  # a few of the app's 0.1 s poll intervals
            assert client.get("/rollout").json()["percentage"] == 10.0
            time.sleep(0.02)


def test_page_is_cached_in_redis(redis_app: tuple[httpx.Client, RedisServer]) -> None:
    """With REDIS_URL, the sections land in Redis under the page's hash-tagged keys."""
    client, redis_server = redis_app
    response = client.get("/homepage?limit=12")
    assert response.status_code == 200
    with redis_server.client() as r:
        keys = {k.decode() for k in r.scan_iter("batchpage:{homepage:v1:*")}
    # batchpage:{homepage:v1:<scope>}:<section>:<params>
    assert {k.split("}:")[1].split(":")[0] for k in keys} >= set(response.json()["sections"])
