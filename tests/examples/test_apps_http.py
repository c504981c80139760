"""The FastAPI and Django apps over real HTTP: the contract of DESIGN.md, in both.

Servers run as subprocesses (``tests/http_servers.py``) on the session's
seeded MongoDB-compatible server; nothing here is a mock. Tests that take
``app`` run once per framework; tests comparing the two take both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchpage import Rollout
from http_servers import FRAMEWORKS, ROLLOUT_PERCENT, ROLLOUT_SALT, AppServer, sign_in

pytestmark = [pytest.mark.http, pytest.mark.mongo]

SECTIONS = (
    "featuredProducts",
    "newArrivals",
    "featuredStores",
    "featuredEvents",
    "featuredOffers",
    "flashSales",
)
LEGACY = {
    "featuredProducts": "/products/featured",
    "newArrivals": "/products/new-arrivals",
    "featuredStores": "/stores/featured",
    "featuredEvents": "/events/featured",
    "featuredOffers": "/offers?featured=true",
    "flashSales": "/offers?flashSale=true",
}
LIMIT_ERROR = {"field": "limit", "message": "limit must be an integer between 1 and 50"}


@pytest.fixture(params=FRAMEWORKS)
def app(request: pytest.FixtureRequest, http_apps: dict[str, AppServer]) -> Iterator[httpx.Client]:
    """An HTTP client of one app (each test runs for FastAPI and for Django)."""
    with http_apps[request.param].client() as client:
        yield client


@pytest.fixture
def both(http_apps: dict[str, AppServer]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients of the FastAPI and the Django app, to compare their answers."""
    with http_apps["fastapi"].client() as fastapi, http_apps["django"].client() as django:
        yield fastapi, django


@pytest.fixture(params=FRAMEWORKS)
def faulty_app(
    request: pytest.FixtureRequest, faulty_http_apps: dict[str, AppServer]
) -> Iterator[httpx.Client]:
    """An app whose featuredStores fails, flashSales hangs and featuredEvents is slow."""
    with faulty_http_apps[request.param].client() as client:
        yield client


def comparable(page: dict[str, Any]) -> dict[str, Any]:
    """The page without what legitimately differs per request: times and cache statuses."""
    meta = {
        k: v
        for k, v in page["metadata"].items()
        if k not in {"generatedAt", "timingsMs", "totalMs", "cache"}
    }
    return {"sections": page["sections"], "errors": page["errors"], "metadata": meta}


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


# -- the page --------------------------------------------------------------


def test_both_apps_answer_the_same_page(both: tuple[httpx.Client, httpx.Client]) -> None:
    """FastAPI and Django serve the same sections, errors and metadata for the same data."""
    for query, user in [
        ("limit=5", None),
        ("limit=3", "u1"),
        ("sections=flashSales,featuredProducts", "u2"),
    ]:
        for client in both:
            sign_in(client, user)
        fastapi, django = (client.get(f"/homepage?{query}") for client in both)
        assert fastapi.status_code == django.status_code == 200
        assert comparable(fastapi.json()) == comparable(django.json())
        for name in ("content-type", "cache-control"):
            assert fastapi.headers[name] == django.headers[name]


def test_page_has_every_section_in_the_wire_shape(app: httpx.Client) -> None:
    """One GET answers all six sections, no errors, in DESIGN.md's shape."""
    response = app.get("/homepage?limit=4")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    page = response.json()
    assert list(page) == ["sections", "errors", "metadata"]
    assert list(page["sections"]) == list(SECTIONS)
    assert all(0 < len(items) <= 4 for items in page["sections"].values())
    assert page["errors"] == []
    assert page["metadata"]["partialFailure"] is False
    assert list(page["metadata"]["timingsMs"]) == list(SECTIONS)


def test_missing_limit_defaults_to_ten(app: httpx.Client) -> None:
    """Without limit, the page is the limit=10 page."""
    default = app.get("/homepage").json()
    ten = app.get("/homepage?limit=10").json()
    assert default["sections"] == ten["sections"]
    assert max(len(items) for items in default["sections"].values()) == 10


def test_sections_parameter_selects_sections(app: httpx.Client) -> None:
    """sections= returns only the named sections, in page order."""
    page = app.get("/homepage?sections=flashSales,newArrivals&limit=2").json()
    assert list(page["sections"]) == ["newArrivals", "flashSales"]


def test_anonymous_page_is_public_with_stale_while_revalidate(app: httpx.Client) -> None:
    """An anonymous page may be kept by a CDN and revalidated in the background."""
    response = app.get("/homepage?limit=6")
    assert response.headers["cache-control"] == "public, max-age=60, stale-while-revalidate=120"


def test_personal_page_is_never_public(app: httpx.Client) -> None:
    """A user's page with the personal section is private and not stored."""
    sign_in(app, "u1")
    response = app.get("/homepage?limit=6")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"
    # Starlette's session middleware adds its own "Cookie" to ours: the same meaning.
    assert {v.strip() for v in response.headers["vary"].split(",")} == {"Cookie"}


def test_matching_etag_gives_304_without_body(app: httpx.Client) -> None:
    """If-None-Match with the ETag (alone, in a list, or *) answers 304, no body."""
    first = app.get("/homepage?limit=7")
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    for header in (etag, f'"other", {etag}', "*", etag.removeprefix("W/")):
        again = app.get("/homepage?limit=7", headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]


def test_if_none_match_on_several_lines_is_one_list(app: httpx.Client) -> None:
    """Two If-None-Match lines are one list (RFC 9110): the tag on the second line matches."""
    etag = app.get("/homepage?limit=7").headers["etag"]
    lines = [("If-None-Match", 'W/"stale"'), ("If-None-Match", etag)]
    assert app.get("/homepage?limit=7", headers=lines).status_code == 304


def test_other_etag_gives_200(app: httpx.Client) -> None:
    """If-None-Match with a stale tag gets the full page."""
    response = app.get("/homepage?limit=7", headers={"If-None-Match": 'W/"stale"'})
    assert response.status_code == 200
    assert response.json()["sections"]


def test_etag_survives_cache_status_changes(app: httpx.Client) -> None:
    """A cold (MISS) and a warm (HIT) answer of the same content share the ETag."""
    sign_in(app, "u3")
    cold = app.get("/homepage?limit=8")
    warm = app.get("/homepage?limit=8")
    assert set(cold.json()["metadata"]["cache"].values()) != {"HIT"}
    assert set(warm.json()["metadata"]["cache"].values()) == {"HIT"}
    assert cold.headers["etag"] == warm.headers["etag"]


def test_server_timing_lists_each_section(app: httpx.Client) -> None:
    """Server-Timing has one entry per section, with its cache status, and the total."""
    header = app.get("/homepage?limit=9").headers["server-timing"]
    entries = [entry.strip() for entry in header.split(",")]
    assert [entry.split(";")[0] for entry in entries] == [*SECTIONS, "total"]
    for entry in entries[:-1]:
        assert ";dur=" in entry
        assert entry.split(";")[2].removeprefix("desc=").strip('"') in {"HIT", "MISS", "STALE"}


# -- bad input ---------------------------------------------------------------

BAD_INPUT = [
    pytest.param("limit=0", "limit", id="limit-zero"),
    pytest.param("limit=-1", "limit", id="limit-negative"),
    pytest.param("limit=51", "limit", id="limit-51"),
    pytest.param("limit=abc", "limit", id="limit-not-a-number"),
    pytest.param("limit=1.5", "limit", id="limit-fraction"),
    pytest.param("limit=", "limit", id="limit-empty"),
    pytest.param("sections=nope", "sections", id="section-unknown"),
    pytest.param("sections=newArrivals,newArrivals", "sections", id="section-repeated"),
    pytest.param("sections=", "sections", id="sections-empty"),
    pytest.param("limit=5&limit=6", "limit", id="limit-twice"),
    pytest.param("userId=%ff", "query", id="not-utf8"),
]


@pytest.mark.parametrize(("query", "field"), BAD_INPUT)
def test_bad_input_is_the_same_400_in_both_apps(
    both: tuple[httpx.Client, httpx.Client], query: str, field: str
) -> None:
    """Each bad parameter answers 400 with one JSON error naming it, identical in both apps."""
    answers = [client.get(f"/homepage?{query}") for client in both]
    for response in answers:
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        assert response.json()["error"]["field"] == field
        assert set(response.json()) == {"error"}
    fastapi, django = answers
    assert fastapi.content == django.content


def test_bad_limit_message(app: httpx.Client) -> None:
    """The limit error says what a good limit is."""
    assert app.get("/homepage?limit=99").json() == {"error": LIMIT_ERROR}


def test_user_id_of_128_characters_is_accepted(app: httpx.Client) -> None:
    """128 characters is the longest user id, and a valid one."""
    sign_in(app, "a" * 128)
    assert app.get("/homepage?limit=1").status_code == 200


BAD_USER_IDS = [
    pytest.param(b'{"userId": ""}', "userId", id="user-empty"),
    pytest.param(b'{"userId": "' + b"a" * 129 + b'"}', "userId", id="user-129-chars"),
    pytest.param(b'{"userId": "a\\u0001b"}', "userId", id="user-control-char"),
    pytest.param(b'{"userId": "a:b"}', "userId", id="user-colon"),
    pytest.param(b'{"userId": "a*"}', "userId", id="user-star"),
    pytest.param(b'{"userId": 42}', "userId", id="user-number"),
    pytest.param(b"userId=u1", "body", id="not-json"),
    pytest.param(b'{"userId": "u1", "role": "admin"}', "body", id="extra-field"),
]


@pytest.mark.parametrize(("body", "field"), BAD_USER_IDS)
def test_a_bad_sign_in_is_the_same_400_in_both_apps(
    both: tuple[httpx.Client, httpx.Client], body: bytes, field: str
) -> None:
    """POST /session refuses bad user ids with one JSON error naming the field; no cookie."""
    answers = [client.post("/session", content=body) for client in both]
    for response in answers:
        assert response.status_code == 400
        assert response.json()["error"]["field"] == field
        assert "set-cookie" not in response.headers
    fastapi, django = answers
    assert fastapi.content == django.content


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_get_is_allowed_on_the_page(app: httpx.Client, method: str) -> None:
    """Both apps answer 405 to other methods on the page, with Allow, in the JSON error shape."""
    response = app.request(method, "/homepage")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"field": "method", "message": "the method must be GET"}}


@pytest.mark.parametrize(
    "path", ["/nope", "/homepage/", "/rollout/", "/homepage/stream/x", "/debug/vitals"]
)
def test_unknown_path_is_a_404_in_the_error_shape(app: httpx.Client, path: str) -> None:
    """No route is a JSON 404 in both apps: no HTML page, no redirect to the path without '/'.

    ``/debug/vitals`` is there only with ``BATCHPAGE_DEBUG_VITALS=1``.
    """
    response = app.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {"field": "path", "message": "nothing is served at this path"}
    }


def test_bad_input_on_the_stream_is_a_400(app: httpx.Client) -> None:
    """The stream validates like the page, before sending anything."""
    response = app.get("/homepage/stream?sections=nope")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "sections"


def test_openapi_documents_the_query_and_the_answers(http_apps: dict[str, AppServer]) -> None:
    """The FastAPI app's /openapi.json lists the parameters, the statuses and the stream's type."""
    with http_apps["fastapi"].client() as client:
        spec = client.get("/openapi.json").json()
    page = spec["paths"]["/homepage"]["get"]
    assert [p["name"] for p in page["parameters"]] == [
        "limit",
        "sections",
        "batchpage_session",
        "If-None-Match",
    ]
    assert set(page["responses"]) == {"200", "304", "400", "503"}
    stream = spec["paths"]["/homepage/stream"]["get"]["responses"]["200"]["content"]
    assert list(stream) == ["application/x-ndjson"]
    offers = spec["paths"]["/offers"]["get"]
    assert [p["name"] for p in offers["parameters"]] == [
        "featured",
        "flashSale",
        "limit",
        "batchpage_session",
    ]


# -- streaming ---------------------------------------------------------------


def test_stream_sends_every_section_then_the_metadata(app: httpx.Client) -> None:
    """NDJSON: one line per section (as to_dict), then errors, metadata and status."""
    sign_in(app, "u1")
    response = app.get("/homepage/stream?limit=3")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["cache-control"] == "no-store"
    lines = ndjson(response)
    assert sorted(line["section"] for line in lines[:-1]) == sorted(SECTIONS)
    assert all(
        set(line) == {"section", "data", "error", "cache", "timingMs"} for line in lines[:-1]
    )
    assert lines[-1]["status"] == 200
    assert lines[-1]["errors"] == []
    page = app.get("/homepage?limit=3").json()
    assert {line["section"]: line["data"] for line in lines[:-1]} == page["sections"]


# -- legacy endpoints --------------------------------------------------------


@pytest.mark.parametrize("name", SECTIONS)
def test_legacy_endpoint_answers_its_section(app: httpx.Client, name: str) -> None:
    """Each of the six legacy endpoints answers the same items as the batch section."""
    path = LEGACY[name]
    sep = "&" if "?" in path else "?"
    sign_in(app, "u1")
    legacy = app.get(f"{path}{sep}limit=4")
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == "application/json"
    batch = app.get(f"/homepage?limit=4&sections={name}").json()
    assert legacy.json() == {"data": batch["sections"][name]}


def test_legacy_endpoints_validate_limit(app: httpx.Client) -> None:
    """A legacy endpoint answers bad limits like the batch page."""
    for path in ("/products/featured?limit=0", "/offers?featured=true&limit=abc"):
        response = app.get(path)
        assert response.status_code == 400
        assert response.json() == {"error": LIMIT_ERROR}


@pytest.mark.parametrize("query", ["", "featured=true&flashSale=true", "featured=yes"])
def test_offers_needs_exactly_one_filter(app: httpx.Client, query: str) -> None:
    """/offers serves featured=true or flashSale=true, nothing else."""
    response = app.get(f"/offers?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] in {"featured", "flashSale"}


# -- faults: a section that fails, hangs or is slow --------------------------


def test_failing_section_gives_200_with_its_error(faulty_app: httpx.Client) -> None:
    """featuredStores raising costs only featuredStores: null, one error, partialFailure."""
    response = faulty_app.get("/homepage?limit=2&sections=featuredStores,newArrivals")
    assert response.status_code == 200
    page = response.json()
    assert page["sections"]["featuredStores"] is None
    assert page["sections"]["newArrivals"]
    assert [e["section"] for e in page["errors"]] == ["featuredStores"]
    assert page["errors"][0]["code"] in {"SOURCE_ERROR", "CIRCUIT_OPEN"}
    assert "injected" not in page["errors"][0]["message"]  # details go to the log
    assert page["metadata"]["partialFailure"] is True
    assert response.headers["cache-control"] == "public, max-age=5"


def test_hanging_section_gives_200_with_a_timeout(faulty_app: httpx.Client) -> None:
    """flashSales never answering is cut at its timeout; the page is still a 200."""
    response = faulty_app.get("/homepage?limit=2&sections=flashSales,featuredOffers")
    assert response.status_code == 200
    page = response.json()
    assert page["sections"]["flashSales"] is None
    assert page["sections"]["featuredOffers"]
    assert [(e["section"], e["code"]) for e in page["errors"]] in (
        [("flashSales", "TIMEOUT_ERROR")],
        [("flashSales", "CIRCUIT_OPEN")],
    )
    assert page["metadata"]["partialFailure"] is True


def test_every_section_failing_gives_503_with_retry_after(faulty_app: httpx.Client) -> None:
    """Nothing to show: 503, Retry-After, never cached, and the same JSON shape."""
    response = faulty_app.get("/homepage?sections=featuredStores,flashSales")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "no-store"
    page = response.json()
    assert page["sections"] == {"featuredStores": None, "flashSales": None}
    assert {e["section"] for e in page["errors"]} == {"featuredStores", "flashSales"}
    assert page["metadata"]["partialFailure"] is False


def test_stream_sends_the_slow_section_last(faulty_app: httpx.Client) -> None:
    """With featuredEvents delayed, its line comes after every other section's."""
    query = "limit=11&sections=featuredProducts,newArrivals,featuredEvents,featuredOffers"
    with faulty_app.stream("GET", f"/homepage/stream?{query}") as response:
        order = [json.loads(line).get("section") for line in response.iter_lines() if line]
    assert order[-2:] == ["featuredEvents", None]
    assert sorted(order[:-2]) == ["featuredOffers", "featuredProducts", "newArrivals"]


# -- rollout ---------------------------------------------------------------


def test_rollout_is_the_same_for_a_user_everywhere(both: tuple[httpx.Client, httpx.Client]) -> None:
    """A user gets the same decision on every call, from both apps, as Rollout computes it."""
    expected = Rollout(ROLLOUT_PERCENT, salt=ROLLOUT_SALT)
    decisions = set()
    for user in (f"user-{i}" for i in range(40)):
        for client in both:
            sign_in(client, user)
        answers = [client.get("/rollout") for client in both for _ in (1, 2)]
        bodies = [a.json() for a in answers]
        assert all(b == bodies[0] for b in bodies)
        assert bodies[0]["useBatch"] is expected.use_batch(user)
        assert bodies[0]["percentage"] == ROLLOUT_PERCENT
        header = "batch" if bodies[0]["useBatch"] else "legacy"
        assert all(a.headers["x-batch-rollout"] == header for a in answers)
        decisions.add(bodies[0]["useBatch"])
    assert decisions == {True, False}  # at 50 %, forty users are not all on one side


def test_a_user_id_in_the_query_is_never_an_identity(app: httpx.Client) -> None:
    """?userId= is ignored everywhere: the rollout, the page and the legacy call stay anonymous."""
    assert app.get("/rollout?userId=u1").json()["userId"] is None
    sign_in(app, "u1")
    mine = app.get("/homepage?limit=5&sections=featuredProducts").json()
    sign_in(app, None)
    as_query = app.get("/homepage?limit=5&sections=featuredProducts&userId=u1")
    anonymous = app.get("/homepage?limit=5&sections=featuredProducts").json()
    assert as_query.headers["cache-control"].startswith("public")
    assert as_query.json()["sections"] == anonymous["sections"]
    assert mine["sections"] != anonymous["sections"]  # u1 has favourites: the guard is real


def test_rollout_of_anonymous_visitors(app: httpx.Client) -> None:
    """Anonymous visitors stay on the legacy path until 100 %."""
    assert app.get("/rollout").json() == {
        "userId": None,
        "useBatch": False,
        "percentage": ROLLOUT_PERCENT,
        "enabled": True,
    }


# -- metrics and traces -------------------------------------------------------


def test_metrics_show_every_section_after_one_page(app: httpx.Client) -> None:
    """/metrics (Prometheus text) has per-section series once a page was served."""
    assert app.get("/homepage?limit=2").status_code == 200
    response = app.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'batchpage_pages_total{page="homepage",status="200"}' in text
    for name in SECTIONS:
        assert (
            f'batchpage_section_duration_seconds_count{{outcome="ok",page="homepage",section="{name}"}}'
            in text
        )
        assert f'section="{name}",state="closed"}} 1.0' in text


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_tracing_prints_a_span_per_page_and_section(
    framework: str, homepage_mongo: Any, tmp_path: Any
) -> None:
    """BATCHPAGE_OTEL=console: one page gives a page span and a span per section."""
    from http_servers import app_environment, running_servers

    env = app_environment(homepage_mongo, BATCHPAGE_OTEL="console")
    server = AppServer(framework, env, tmp_path, label=f"{framework}-otel")  # type: ignore[arg-type]
    with running_servers([server]), server.client() as client:
        assert client.get("/homepage?limit=2").status_code == 200
    log = server.log_path.read_text()
    assert log.count('"name": "batchpage.page"') >= 1
    assert log.count('"name": "batchpage.section"') >= len(SECTIONS)
