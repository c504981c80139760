"""Nobody is served another user's personal section: a property over request sequences.

Clients of a real server (each app) sign in and out as random users, forge
session cookies (another user's payload under a stale signature, a flipped
byte), and send ``?userId=`` of another user. A model follows who each
client *should* be; every answer's personal section (page, stream, legacy
call) and ``/rollout``'s user must be that identity's, never anyone else's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_servers import FRAMEWORKS, AppServer, sign_in

pytestmark = [pytest.mark.http, pytest.mark.mongo]

COOKIE = "batchpage_session"
LIMITS = (3, 5)
#: Seeded users (``u0``...); those with favourites get their own featured products.
POOL = [f"u{i}" for i in range(12)]
CLIENTS = 3


def personal(client: httpx.Client, limit: int) -> Any:
    return client.get(f"/homepage?limit={limit}").json()["sections"]["featuredProducts"]


@pytest.fixture(scope="module", params=FRAMEWORKS)
def server(request: pytest.FixtureRequest, http_apps: dict[str, AppServer]) -> AppServer:
    return http_apps[request.param]


@pytest.fixture(scope="module")
def truth(server: AppServer) -> dict[tuple[str | None, int], Any]:
    """Each identity's own featured products, asked as that identity."""
    table: dict[tuple[str | None, int], Any] = {}
    with server.client() as client:
        for user in [None, *POOL]:
            sign_in(client, user)
            for limit in LIMITS:
                table[user, limit] = personal(client, limit)
    return table


@pytest.fixture(scope="module")
def users(truth: dict[tuple[str | None, int], Any]) -> list[str]:
    """Users whose personal section differs from everyone else's: a leak would show."""
    distinct = [
        u
        for u in POOL
        if all(truth[u, 5] != truth[other, 5] for other in [None, *POOL] if other != u)
    ]
    assert len(distinct) >= 3, "the seed gives too few users with their own favourites"
    return distinct


@pytest.fixture
def clients(server: AppServer) -> Iterator[list[httpx.Client]]:
    made = [server.client() for _ in range(CLIENTS)]
    try:
        yield made
    finally:
        for client in made:
            client.close()


def forged(cookie: str, victim: str) -> str:
    """A valid cookie's signature under a payload naming ``victim``."""
    payload = base64.b64encode(json.dumps({"userId": victim}).encode()).decode()
    parts = cookie.split(".")
    if len(parts) >= 3:  # Starlette: payload.timestamp.signature
        return ".".join([payload, *parts[1:]])
    # Django's signed_cookies: value:timestamp:signature, payload first too.
    _, sep, rest = cookie.partition(":")
    return f"{payload}{sep}{rest}" if sep else payload


ACTIONS = st.one_of(
    st.tuples(st.just("sign_in"), st.integers(0, CLIENTS - 1), st.integers(0, 99)),
    st.tuples(st.just("sign_out"), st.integers(0, CLIENTS - 1), st.just(0)),
    st.tuples(st.just("forge"), st.integers(0, CLIENTS - 1), st.integers(0, 99)),
    st.tuples(st.just("flip"), st.integers(0, CLIENTS - 1), st.integers(0, 99)),
    st.tuples(st.just("query_user"), st.integers(0, CLIENTS - 1), st.integers(0, 99)),
    st.tuples(st.just("page"), st.integers(0, CLIENTS - 1), st.sampled_from(LIMITS)),
    st.tuples(st.just("stream"), st.integers(0, CLIENTS - 1), st.sampled_from(LIMITS)),
    st.tuples(st.just("legacy"), st.integers(0, CLIENTS - 1), st.sampled_from(LIMITS)),
    st.tuples(st.just("rollout"), st.integers(0, CLIENTS - 1), st.just(0)),
)


def test_no_answer_carries_another_users_personal_section(
    server: AppServer,
    truth: dict[tuple[str | None, int], Any],
    users: list[str],
    clients: list[httpx.Client],
) -> None:
    """Random sign-ins, sign-outs, forged cookies and ?userId=: each answer is its own user's."""

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(ACTIONS, min_size=1, max_size=12))
    def sequence(actions: list[tuple[str, int, int]]) -> None:
        who: list[str | None] = [None] * CLIENTS
        for client in clients:
            sign_in(client, None)
        for action, i, n in actions:
            client = clients[i]
            if action == "sign_in":
                who[i] = users[n % len(users)]
                sign_in(client, who[i])
            elif action == "sign_out":
                who[i] = None
                sign_in(client, None)
            elif action in {"forge", "flip"}:
                held = [c for c in client.cookies.jar if c.name == COOKIE]
                if not held or held[0].value is None:
                    continue
                cookie, domain, path = held[0].value, held[0].domain, held[0].path
                victim = users[n % len(users)]
                if action == "forge":
                    value = forged(cookie, victim)
                else:
                    # A byte of the signed payload (what comes before the first
                    # separator): the last character of a base64 signature can
                    # change without changing its bytes, a payload's cannot.
                    end = min(k for k in (cookie.find("."), cookie.find(":"), len(cookie)) if k > 0)
                    pos = n % end
                    value = cookie[:pos] + ("A" if cookie[pos] != "A" else "B") + cookie[pos + 1 :]
                client.cookies.clear()
                client.cookies.set(COOKIE, value, domain=domain, path=path)
                who[i] = None  # a cookie that fails its signature is no identity
            elif action == "query_user":
                victim = users[n % len(users)]
                answer = client.get(f"/homepage?limit=5&userId={victim}").json()
                assert answer["sections"]["featuredProducts"] == truth[who[i], 5], (action, who)
            elif action == "page":
                response = client.get(f"/homepage?limit={n}")
                assert response.json()["sections"]["featuredProducts"] == truth[who[i], n]
                if who[i] is not None:
                    assert response.headers["cache-control"] == "private, no-store"
            elif action == "stream":
                lines = [
                    json.loads(x)
                    for x in client.get(f"/homepage/stream?limit={n}").text.splitlines()
                ]
                mine = [x["data"] for x in lines if x.get("section") == "featuredProducts"]
                assert mine == [truth[who[i], n]]
            elif action == "legacy":
                data = client.get(f"/products/featured?limit={n}").json()["data"]
                assert data == truth[who[i], n]
            elif action == "rollout":
                assert client.get("/rollout").json()["userId"] == who[i]

    sequence()
