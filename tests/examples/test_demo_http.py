"""What the demo page asks of the servers, over HTTP, in both apps alike.

* ``X-Simulated-Latency-Ms``: every server honours it (off unless a request
  asks): the answer comes that late, is never stored by any cache, and the
  server's own cache is that of any request; a bad value is a 400 naming the
  header, the same bytes in both apps.
* ``/demo/faults``: the run-time fault switch exists only with
  ``BATCHPAGE_DEMO_FAULTS=1``; it breaks a section wherever it is queried
  (batch page, stream, legacy endpoint) at once, whatever was cached, and
  mends it.

The servers are those of ``tests/http_servers.py``: real subprocesses on the
session's seeded MongoDB-compatible server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Final

import httpx
import pytest
from examples.homepage.sources import SECTION_NAMES
from examples.service.demo import (
    MAX_SIMULATED_LATENCY_MS,
    SIMULATED_LATENCY_HEADER,
    SimulatedLatency,
    simulated_latency_ms,
)
from examples.service.settings import Settings, SettingsError

from batchpage import InvalidParameter
from http_servers import FRAMEWORKS, AppServer

HEADER: Final = SIMULATED_LATENCY_HEADER
LATENCY_ERROR: Final = {
    "field": HEADER,
    "message": f"{HEADER} must be an integer between 0 and {MAX_SIMULATED_LATENCY_MS}",
}
#: One route of each kind: the page, its stream, a legacy call, the rollout.
ROUTES: Final = (
    "/homepage?limit=2",
    "/homepage/stream?limit=2",
    "/products/featured?limit=2",
    "/offers?flashSale=true&limit=2",
    "/rollout",
)


@pytest.fixture(params=FRAMEWORKS)
def app(request: pytest.FixtureRequest, http_apps: dict[str, AppServer]) -> Iterator[httpx.Client]:
    """A client of one app without the fault switch (each test: FastAPI, then Django)."""
    with http_apps[request.param].client() as client:
        yield client


@pytest.fixture
def demo(demo_app: AppServer) -> Iterator[httpx.Client]:
    """A client of one app with the fault switch on, every fault mended before and after."""
    with demo_app.client() as client:
        yield client


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def set_fault(client: httpx.Client, section: str, fault: str) -> dict[str, Any]:
    response = client.post("/demo/faults", json={"section": section, "fault": fault})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# -- the simulated latency, unit by unit -----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "ms"),
    [
        ([], 0),
        ([(b"x-simulated-latency-ms", b"0")], 0),
        ([(b"X-Simulated-Latency-Ms", b"300")], 300),
        ([(b"x-simulated-latency-ms", b"2000")], 2000),
        ([(b"accept", b"*/*"), (b"x-simulated-latency-ms", b" 5 ")], 5),
    ],
)
def test_the_latency_a_request_asks_for(headers: list[tuple[bytes, bytes]], ms: int) -> None:
    assert simulated_latency_ms(headers) == ms


@pytest.mark.parametrize(
    "values",
    [[b"abc"], [b"-1"], [b"2001"], [b"1.5"], [b"01"], [b"+3"], [b""], [b"\xff"], [b"1", b"1"]],
)
def test_a_bad_latency_names_the_header(values: list[bytes]) -> None:
    with pytest.raises(InvalidParameter) as caught:
        simulated_latency_ms([(b"x-simulated-latency-ms", v) for v in values])
    assert caught.value.field == HEADER


Message = MutableMapping[str, Any]


async def _call(app: SimulatedLatency, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "headers": headers}, receive, send)
    return sent


def _inner(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> Awaitable[None]:
    async def answer() -> None:
        headers = [(b"cache-control", b"public, max-age=60"), (b"vary", b"Cookie")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    return answer()


@pytest.mark.anyio
async def test_the_middleware_sleeps_then_marks_the_answer_no_store() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    app = SimulatedLatency(_inner, sleep=sleep)
    start, _ = await _call(app, [(b"x-simulated-latency-ms", b"250")])
    assert slept == [0.25]
    headers = dict(start["headers"])
    assert headers[b"cache-control"] == b"no-store"  # replaced, never kept by a cache
    assert headers[b"server-timing"].startswith(b"simulatedLatency;dur=250")
    assert headers[b"vary"] == b"Cookie"

    untouched, _ = await _call(app, [(b"x-simulated-latency-ms", b"0")])
    assert slept == [0.25]
    assert untouched["headers"] == [(b"cache-control", b"public, max-age=60"), (b"vary", b"Cookie")]

    refused, body = await _call(app, [(b"x-simulated-latency-ms", b"soon")])
    assert refused["status"] == 400
    assert json.loads(body["body"]) == {"error": LATENCY_ERROR}


@pytest.mark.anyio
async def test_the_middleware_passes_the_lifespan_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await SimulatedLatency(inner)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


def test_the_switch_setting() -> None:
    assert Settings.from_env({}).demo_faults is False
    assert Settings.from_env({"BATCHPAGE_DEMO_FAULTS": "1"}).demo_faults is True
    assert Settings.from_env({"BATCHPAGE_DEMO_FAULTS": "0"}).demo_faults is False
    with pytest.raises(SettingsError, match="BATCHPAGE_DEMO_FAULTS"):
        Settings.from_env({"BATCHPAGE_DEMO_FAULTS": "sometimes"})


# -- the simulated latency over HTTP ---------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_a_simulated_latency_delays_the_answer_and_is_never_stored(
    app: httpx.Client, route: str
) -> None:
    app.get(route)  # warm
    started = time.perf_counter()
    response = app.get(route, headers={HEADER: "200"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert elapsed >= 0.2
    assert response.headers["cache-control"] == "no-store"
    assert 'simulatedLatency;dur=200;desc="simulated network latency"' in response.headers.get_list(
        "server-timing"
    )


def test_no_latency_asked_for_changes_nothing(app: httpx.Client) -> None:
    plain = app.get("/homepage?limit=2")
    zero = app.get("/homepage?limit=2", headers={HEADER: "0"})
    for response in (plain, zero):
        assert response.headers["cache-control"].startswith("public, max-age=60")
        assert "simulatedLatency" not in response.headers.get("server-timing", "")


def test_a_simulated_latency_leaves_the_servers_cache_alone(app: httpx.Client) -> None:
    """The same entries, statuses, bytes and ETag as without it: it only delays the answer."""
    app.get("/homepage?limit=4")
    plain = app.get("/homepage?limit=4")
    slowed = app.get("/homepage?limit=4", headers={HEADER: "50"})
    assert set(slowed.json()["metadata"]["cache"].values()) == {"HIT"}
    assert slowed.json()["sections"] == plain.json()["sections"]
    assert slowed.headers["etag"] == plain.headers["etag"]
    revalidated = app.get(
        "/homepage?limit=4", headers={HEADER: "50", "If-None-Match": plain.headers["etag"]}
    )
    assert revalidated.status_code == 304


@pytest.mark.parametrize(
    "value", ["abc", "-1", str(MAX_SIMULATED_LATENCY_MS + 1), "1.5", "01", "+3", "", "1e3"]
)
@pytest.mark.parametrize("route", ["/homepage?limit=2", "/homepage/stream", "/events/featured"])
def test_a_bad_latency_is_the_same_400_in_both_apps(
    http_apps: dict[str, AppServer], value: str, route: str
) -> None:
    bodies = []
    for framework in FRAMEWORKS:
        with http_apps[framework].client() as client:
            response = client.get(route, headers={HEADER: value})
        assert response.status_code == 400, (framework, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": LATENCY_ERROR}
        bodies.append(response.content)
    assert bodies[0] == bodies[1]


def test_the_latency_header_given_twice_is_a_400(app: httpx.Client) -> None:
    response = app.get("/homepage", headers=[(HEADER, "10"), (HEADER, "20")])
    assert response.status_code == 400
    assert response.json()["error"]["field"] == HEADER


# -- the fault switch over HTTP --------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_without_its_flag_the_fault_switch_is_not_there(app: httpx.Client, method: str) -> None:
    body = {"section": "newArrivals", "fault": "error"}
    response = app.request(method, "/demo/faults", json=body)
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "path"
    assert app.get("/homepage?limit=2").json()["errors"] == []


def test_the_switch_says_what_is_broken_and_each_breaker(demo: httpx.Client) -> None:
    answer = demo.get("/demo/faults")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json() == {
        "faults": {},
        "breakers": dict.fromkeys(SECTION_NAMES, "closed"),
    }


def test_a_broken_section_fails_everywhere_at_once_and_mends(demo: httpx.Client) -> None:
    """Even a fresh cached value does not hide the fault; mending brings the section back."""
    demo.get("/homepage?limit=2")
    warm = demo.get("/homepage?limit=2").json()
    assert warm["metadata"]["cache"]["featuredEvents"] == "HIT"

    answer = set_fault(demo, "featuredEvents", "error")
    assert answer["faults"] == {"featuredEvents": "error"}

    page = demo.get("/homepage?limit=2")
    assert page.status_code == 200
    body = page.json()
    assert body["sections"]["featuredEvents"] is None
    assert [(e["section"], e["code"]) for e in body["errors"]] == [
        ("featuredEvents", "SOURCE_ERROR")
    ]
    assert body["metadata"]["partialFailure"] is True
    assert body["sections"]["featuredStores"] == warm["sections"]["featuredStores"]
    lines = {line["section"]: line for line in ndjson(demo.get("/homepage/stream?limit=2"))[:-1]}
    assert lines["featuredEvents"]["error"]["code"] == "SOURCE_ERROR"
    legacy = demo.get("/events/featured?limit=2")
    assert legacy.status_code == 503
    assert legacy.json()["error"]["code"] == "SOURCE_ERROR"
    assert demo.get("/stores/featured?limit=2").status_code == 200

    assert set_fault(demo, "featuredEvents", "none")["faults"] == {}
    mended = demo.get("/homepage?limit=2").json()
    assert mended["errors"] == []
    assert mended["sections"]["featuredEvents"] == warm["sections"]["featuredEvents"]
    assert demo.get("/events/featured?limit=2").status_code == 200


def test_a_hanging_section_is_cut_by_its_timeout(demo: httpx.Client) -> None:
    set_fault(demo, "flashSales", "hang")
    started = time.perf_counter()
    page = demo.get("/homepage?limit=2")
    assert time.perf_counter() - started < 3.0  # the section's timeout (0.5 s), not forever
    assert [(e["section"], e["code"]) for e in page.json()["errors"]] == [
        ("flashSales", "TIMEOUT_ERROR")
    ]
    legacy = demo.get("/offers?flashSale=true&limit=2", timeout=15.0)  # the legacy call's 5 s
    assert legacy.status_code == 503
    assert legacy.json()["error"]["code"] == "TIMEOUT_ERROR"


def test_a_delay_is_paid_on_a_miss(demo: httpx.Client) -> None:
    """``delay:<n>ms`` (a seed query time) slows the source: on a miss, and every legacy call."""
    set_fault(demo, "newArrivals", "delay:120ms")
    first = demo.get("/homepage?limit=2").json()
    assert first["metadata"]["cache"]["newArrivals"] == "MISS"
    assert first["metadata"]["timingsMs"]["newArrivals"] >= 120
    started = time.perf_counter()
    assert demo.get("/products/new-arrivals?limit=2").status_code == 200
    assert time.perf_counter() - started >= 0.12
    assert demo.get("/demo/faults").json()["faults"] == {"newArrivals": "delay:120ms"}


BAD_FAULTS: Final = [
    (b"not json", "body"),
    (b"[]", "body"),
    (b'{"section": "newArrivals"}', "body"),
    (b'{"section": "newArrivals", "fault": "error", "extra": 1}', "body"),
    (b'{"section": "nope", "fault": "error"}', "section"),
    (b'{"section": 3, "fault": "error"}', "section"),
    (b'{"section": "newArrivals", "fault": "explode"}', "fault"),
    (b'{"section": "newArrivals", "fault": 1}', "fault"),
    (b'{"section": "newArrivals", "fault": "delay:61s"}', "fault"),
]


@pytest.mark.parametrize(("body", "field"), BAD_FAULTS)
def test_a_bad_fault_request_is_the_same_400_in_both_apps(
    demo_http_apps: dict[str, AppServer], body: bytes, field: str
) -> None:
    answers = []
    for framework in FRAMEWORKS:
        with demo_http_apps[framework].client() as client:
            response = client.post(
                "/demo/faults", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400, (framework, response.text)
            assert response.json()["error"]["field"] == field
            answers.append(response.content)
            assert client.get("/demo/faults").json()["faults"] == {}
    assert answers[0] == answers[1]


def test_the_switch_takes_json_only(demo: httpx.Client) -> None:
    """A cross-site form cannot send ``application/json`` without the browser asking first."""
    body = b'{"section": "newArrivals", "fault": "error"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = demo.post("/demo/faults", content=body, headers=headers)
        assert response.status_code == 415
        assert response.json()["error"]["field"] == "Content-Type"
    assert demo.get("/demo/faults").json()["faults"] == {}
    response = demo.post(
        "/demo/faults", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "allow"), [("/demo/faults", "GET, POST"), ("/session", "GET, POST, DELETE")]
)
def test_a_wrong_method_is_the_same_405_in_both_apps(
    demo_http_apps: dict[str, AppServer], path: str, allow: str
) -> None:
    """``Allow`` names every method of the path, in both apps."""
    answers = []
    for framework in FRAMEWORKS:
        with demo_http_apps[framework].client() as client:
            response = client.put(path, json={"section": "newArrivals", "fault": "error"})
        assert response.status_code == 405, framework
        assert response.headers["allow"] == allow, framework
        assert response.json()["error"]["field"] == "method"
        answers.append(response.content)
    assert answers[0] == answers[1]
