"""The framework-neutral HTTP adapter: parsing, headers, ETag and 304, NDJSON.

These run in-process, on asyncio and trio; the real servers are in
``test_apps_http.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchpage import (
    Aggregator,
    CachePolicy,
    InvalidParameter,
    PageResult,
    RequestContext,
    Scope,
    Section,
)
from batchpage.contrib.http import (
    PageEndpoint,
    PageRequest,
    Param,
    Reply,
    StreamReply,
    boolean,
    error_reply,
    http_error_reply,
    if_none_match_matches,
    integer,
    one_of,
    page_etag,
    parse_query,
    parse_sections,
    server_timing,
    text,
)
from helpers import Recorder, run_on_mock_clock
from processes import HAS_PROC, alive, catches, process, survivors

pytestmark = pytest.mark.anyio

NAMES = ("featuredProducts", "newArrivals", "featuredEvents")
LIMIT_MESSAGE = "limit must be an integer between 1 and 50"


def sections(**overrides: Recorder) -> list[Section]:
    """Three sections; featuredProducts is personal, the others global."""
    return [
        Section(
            name=name,
            source=overrides.get(name, Recorder([name])),
            scope=Scope.USER if name == "featuredProducts" else Scope.GLOBAL,
            cache=CachePolicy(fresh=60),
            timeout=5,
        )
        for name in NAMES
    ]


LIMIT = Param("limit", integer(1, 50), default=10)


def endpoint_for(agg: Aggregator) -> PageEndpoint:
    return PageEndpoint(agg, params=[LIMIT])


def body(reply: Reply) -> Any:
    return json.loads(reply.body)


# -- parsing ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "limit"), [(None, 10), ("1", 1), ("10", 10), ("50", 50)])
def test_a_declared_integer_parameter_takes_its_range_and_default(
    raw: str | None, limit: int
) -> None:
    """A missing limit is its default; 1 to 50 pass as integers."""
    assert LIMIT.value({} if raw is None else {"limit": raw}) == limit


@pytest.mark.parametrize(
    "raw", ["0", "-1", "51", "100", "abc", "1.5", "", " 5", "+5", "05", "1e1", "٣", "9" * 400]
)
def test_a_declared_integer_parameter_rejects_everything_else(raw: str) -> None:
    """Zero, negatives, over 50, non-numbers and odd spellings are an error naming the field."""
    with pytest.raises(InvalidParameter) as caught:
        LIMIT.value({"limit": raw})
    assert (caught.value.field, caught.value.message) == ("limit", LIMIT_MESSAGE)


def test_declared_parameters_of_each_kind() -> None:
    """one_of, boolean and text parse their values, and name the field when they cannot."""
    locale = Param("locale", one_of("en", "fr"), default="en")
    flag = Param("beta", boolean(), default=False)
    term = Param("q", text(max_length=8))
    assert (locale.value({}), locale.value({"locale": "fr"})) == ("en", "fr")
    assert (flag.value({"beta": "true"}), flag.value({})) == (True, False)
    assert term.value({"q": "shoes"}) == "shoes"
    for param, raw, message in [
        (locale, "de", "locale must be one of: en, fr"),
        (flag, "1", "beta must be true or false"),
        (term, "x" * 9, "q must be 1 to 8 characters"),
        (term, "a b", "q must be 1 to 8 characters"),
    ]:
        with pytest.raises(InvalidParameter, match=message) as caught:
            param.value({param.name: raw})
        assert caught.value.field == param.name
    with pytest.raises(InvalidParameter, match="q is required"):
        term.value({})


async def test_declared_parameters_reach_the_context_typed() -> None:
    """An application's own parameters (a locale, a flag) reach sources, typed and validated."""
    locale = Param("locale", one_of("en", "fr"), default="en")
    beta = Param("beta", boolean(), default=False)
    async with Aggregator(sections(), page="contrib-http") as agg:
        endpoint = PageEndpoint(agg, params=[LIMIT, locale, beta])
        request = endpoint.parse(b"locale=fr&beta=true")
        assert request.context.params == {"limit": 10, "locale": "fr", "beta": True}
        reply = await endpoint.respond(b"locale=xx")
    assert reply.status == 400
    assert body(reply) == {"error": {"field": "locale", "message": "locale must be one of: en, fr"}}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"params": ["limit"]}, TypeError, "params must be Param objects"),
        ({"params": [LIMIT, LIMIT]}, ValueError, "distinct names"),
        ({"params": [Param("sections", integer(1, 2))]}, ValueError, "distinct names"),
    ],
)
def test_declared_parameters_are_checked(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """A parameter list that cannot work fails at construction."""
    with pytest.raises(error, match=match):
        PageEndpoint(Aggregator(sections(), page="contrib-http"), **kwargs)


def test_sections_keep_the_page_order() -> None:
    """A section list comes back in the page's order, whatever the query's."""
    assert parse_sections("newArrivals,featuredProducts", NAMES) == (
        "featuredProducts",
        "newArrivals",
    )
    assert parse_sections(None, NAMES) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "at least one section"),
        ("nope", "comma-separated list of: featuredProducts, newArrivals, featuredEvents"),
        ("newArrivals,", "comma-separated list"),
        ("newArrivals, featuredEvents", "comma-separated list"),
        ("newArrivals,newArrivals", "must not name a section twice"),
    ],
)
def test_sections_reject_unknown_empty_and_repeated(raw: str, message: str) -> None:
    """Unknown, empty or repeated names are a sections error that echoes no input."""
    with pytest.raises(InvalidParameter, match=message) as caught:
        parse_sections(raw, NAMES)
    assert caught.value.field == "sections"
    assert "nope" not in caught.value.message


def test_query_decodes_percent_escapes() -> None:
    """Parameters are percent-decoded as UTF-8; blank values are kept."""
    assert parse_query(b"userId=a%3Ab&limit=&x") == {"userId": "a:b", "limit": "", "x": ""}


def test_query_rejects_a_repeated_parameter() -> None:
    """limit=1&limit=2 is an error: which one would count?"""
    with pytest.raises(InvalidParameter, match="limit must be given once") as caught:
        parse_query("limit=1&limit=2")
    assert caught.value.field == "limit"


@pytest.mark.parametrize("raw", [b"userId=%ff", "userId=%C3", b"userId=\xc3\xa9"])
def test_query_must_be_utf8(raw: str | bytes) -> None:
    """A query that is not (percent-encoded) UTF-8 is a query error."""
    with pytest.raises(InvalidParameter) as caught:
        parse_query(raw)
    assert caught.value.field == "query"


def test_query_with_too_many_parameters_is_refused() -> None:
    """A page request has a handful of parameters, not hundreds."""
    with pytest.raises(InvalidParameter, match="at most 16 parameters") as caught:
        parse_query("&".join(f"p{i}=1" for i in range(200)))
    assert caught.value.field == "query"


def test_error_reply_is_400_json_naming_the_field() -> None:
    """Bad input answers 400 with {"error": {"field", "message"}}, never cached."""
    reply = error_reply(InvalidParameter("limit", LIMIT_MESSAGE))
    assert reply.status == 400
    assert reply.header("content-type") == "application/json"
    assert reply.header("cache-control") == "no-store"
    assert body(reply) == {"error": {"field": "limit", "message": LIMIT_MESSAGE}}


def test_no_route_and_wrong_method_have_the_error_shape_too() -> None:
    """404 names the path, 405 the method (with Allow), anything else the request."""
    not_found = http_error_reply(404)
    assert not_found.status == 404
    assert not_found.header("content-type") == "application/json"
    assert not_found.header("cache-control") == "no-store"
    assert body(not_found) == {
        "error": {"field": "path", "message": "nothing is served at this path"}
    }
    wrong_method = http_error_reply(405, allow="GET")
    assert wrong_method.header("allow") == "GET"
    assert body(wrong_method) == {"error": {"field": "method", "message": "the method must be GET"}}
    assert body(http_error_reply(413))["error"]["field"] == "request"


async def test_parse_builds_the_context_sources_see() -> None:
    """A valid query becomes a RequestContext with only the validated limit."""
    endpoint = endpoint_for(Aggregator(sections(), page="contrib-http"))
    request = endpoint.parse(b"userId=u2&limit=5&sections=newArrivals&utm=x", user_id="u1")
    assert request == PageRequest(
        RequestContext(user_id="u1", params={"limit": 5}), ("newArrivals",)
    )
    assert endpoint.parse(b"userId=u2").user_id is None  # the query is never an identity
    assert endpoint.parse(b"sections=featuredEvents,newArrivals,featuredProducts").sections is None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_age": -1}, ValueError),
        ({"retry_after": 1.5}, TypeError),
        ({"stale_while_revalidate": True}, TypeError),
    ],
)
def test_endpoint_configuration_is_checked(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Bad endpoint settings fail at construction, naming the setting."""
    with pytest.raises(error, match=next(iter(kwargs))):
        PageEndpoint(Aggregator(sections(), page="contrib-http"), **kwargs)


# -- ETag and If-None-Match -------------------------------------------------


async def test_etag_ignores_metadata() -> None:
    """Two fetches of the same content (one MISS, one HIT) share an ETag."""
    async with Aggregator(sections(), page="contrib-http") as agg:
        first = await agg.fetch()
        second = await agg.fetch()
    assert first.metadata["cache"] != second.metadata["cache"]
    assert page_etag(first) == page_etag(second)
    assert page_etag(first).startswith('W/"')


async def test_etag_follows_content_and_errors() -> None:
    """Different section bytes, or an error, give a different ETag."""
    async with Aggregator(sections(), page="contrib-http") as agg:
        small = await agg.fetch(RequestContext(params={"limit": 1}))
    async with Aggregator(sections(newArrivals=Recorder(["other"])), page="contrib-http") as agg:
        other = await agg.fetch(RequestContext(params={"limit": 1}))
    async with Aggregator(sections(newArrivals=Recorder(fail=True)), page="contrib-http") as agg:
        failed = await agg.fetch(RequestContext(params={"limit": 1}))
    assert len({page_etag(small), page_etag(other), page_etag(failed)}) == 3


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('W/"abc"', True),
        ('"abc"', True),
        ('"x", W/"abc"', True),
        ("*", True),
        (" * ", True),
        ('W/"abd"', False),
        ('"x","y"', False),
        ("abc", False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match_uses_weak_comparison(header: str | None, matches: bool) -> None:
    """A listed tag matches with or without W/; '*' matches anything."""
    assert if_none_match_matches(header, 'W/"abc"') is matches


# -- rendering -------------------------------------------------------------


async def fetch_and_render(
    query: bytes = b"",
    *,
    user_id: str | None = None,
    if_none_match: str | None = None,
    overrides: dict[str, Recorder] | None = None,
) -> Reply:
    async with Aggregator(sections(**(overrides or {})), page="contrib-http") as agg:
        return await endpoint_for(agg).respond(query, user_id=user_id, if_none_match=if_none_match)


async def test_anonymous_page_is_public_with_stale_while_revalidate() -> None:
    """An anonymous page may sit in a CDN for a minute and be revalidated late."""
    reply = await fetch_and_render()
    assert reply.status == 200
    assert reply.header("cache-control") == "public, max-age=60, stale-while-revalidate=120"
    assert reply.header("content-type") == "application/json"
    assert reply.header("content-length") == str(len(reply.body))
    assert set(body(reply)) == {"sections", "errors", "metadata"}


async def test_personal_page_is_never_public() -> None:
    """A user's page with a personal section is private and not stored."""
    reply = await fetch_and_render(user_id="u1")
    assert reply.header("cache-control") == "private, no-store"
    assert reply.header("vary") == "Cookie"


async def test_user_page_of_global_sections_is_public() -> None:
    """A user id with only global sections asked for gives the public page."""
    reply = await fetch_and_render(b"sections=newArrivals", user_id="u1")
    assert (reply.header("cache-control") or "").startswith("public")


async def test_partial_page_is_kept_briefly() -> None:
    """A page with a failed section is cached for seconds, not a minute."""
    reply = await fetch_and_render(overrides={"newArrivals": Recorder(fail=True)})
    assert reply.status == 200
    assert reply.header("cache-control") == "public, max-age=5"
    assert body(reply)["metadata"]["partialFailure"] is True


async def test_all_failed_is_503_with_retry_after_never_cached() -> None:
    """Nothing to show: 503, Retry-After, no-store, and the same JSON shape."""
    failing = {name: Recorder(fail=True) for name in NAMES}
    reply = await fetch_and_render(overrides=failing, if_none_match="*")
    assert reply.status == 503
    assert reply.header("retry-after") == "5"
    assert reply.header("cache-control") == "no-store"
    assert [e["section"] for e in body(reply)["errors"]] == list(NAMES)


async def test_matching_etag_gives_304_without_body() -> None:
    """If-None-Match with the page's ETag answers 304 and no body."""
    first = await fetch_and_render()
    etag = first.header("etag")
    again = await fetch_and_render(if_none_match=etag)
    assert again.status == 304
    assert again.body == b""
    assert again.header("etag") == etag
    assert again.header("content-type") is None
    assert again.header("cache-control") == first.header("cache-control")


async def test_other_etag_gives_200() -> None:
    """If-None-Match with another tag gets the full page."""
    reply = await fetch_and_render(if_none_match='W/"0000"')
    assert reply.status == 200
    assert reply.body


async def test_bad_query_answers_400_before_any_source_runs() -> None:
    """Bad input never reaches a source."""
    recorder = Recorder(["x"])
    reply = await fetch_and_render(b"limit=0", overrides={"newArrivals": recorder})
    assert reply.status == 400
    assert body(reply)["error"]["field"] == "limit"
    assert recorder.calls == 0


async def test_server_timing_lists_every_section_and_the_total() -> None:
    """Server-Timing has name;dur=...;desc="<cache>" per section, then total."""
    async with Aggregator(sections(), page="contrib-http") as agg:
        page = await agg.fetch()
    entries = [e.strip() for e in server_timing(page).split(",")]
    assert [e.split(";")[0] for e in entries] == [*NAMES, "total"]
    assert all(';desc="MISS"' in e for e in entries[:-1])
    assert all(";dur=" in e for e in entries)


async def test_render_of_a_page_fetched_elsewhere() -> None:
    """render() answers a PageResult the caller fetched itself."""
    async with Aggregator(sections(), page="contrib-http") as agg:
        endpoint = endpoint_for(agg)
        request = endpoint.parse(b"limit=3")
        page: PageResult = await agg.fetch(request.context)
    reply = endpoint.render(page, request)
    assert json.loads(reply.body)["sections"] == page.sections


# -- streaming -------------------------------------------------------------


async def collect(stream: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    return [json.loads(chunk) async for chunk in stream]


def test_stream_sends_the_fastest_section_first() -> None:
    """NDJSON lines come in completion order, then one metadata line."""

    async def run() -> list[dict[str, Any]]:
        slow = {
            "featuredProducts": Recorder(["p"], delay=0.3),
            "newArrivals": Recorder(["n"], delay=0.1),
            "featuredEvents": Recorder(["e"], delay=0.2),
        }
        async with Aggregator(sections(**slow), page="contrib-http") as agg:
            reply = endpoint_for(agg).open_stream(b"limit=2")
            assert isinstance(reply, StreamReply)
            return await collect(reply.chunks)

    lines = run_on_mock_clock(run)
    assert [line.get("section") for line in lines] == [
        "newArrivals",
        "featuredEvents",
        "featuredProducts",
        None,
    ]
    assert lines[0] == {
        "section": "newArrivals",
        "data": ["n"],
        "error": None,
        "cache": "MISS",
        "timingMs": lines[0]["timingMs"],
    }
    last = lines[-1]
    assert last["status"] == 200
    assert last["errors"] == []
    assert list(last["metadata"]["cache"]) == list(NAMES)  # the page's order


async def test_stream_reports_errors_in_lines_and_status_at_the_end() -> None:
    """A failed section's line carries its error; the last line the 503."""
    failing = {name: Recorder(fail=True) for name in NAMES}
    async with Aggregator(sections(**failing), page="contrib-http") as agg:
        reply = endpoint_for(agg).open_stream(b"")
        assert isinstance(reply, StreamReply)
        lines = await collect(reply.chunks)
    assert {line["error"]["code"] for line in lines[:-1]} == {"SOURCE_ERROR"}
    assert lines[-1]["status"] == 503


async def test_stream_headers_say_ndjson_never_cached() -> None:
    """The stream is application/x-ndjson, no-store, unbuffered by proxies."""
    async with Aggregator(sections(), page="contrib-http") as agg:
        reply = endpoint_for(agg).open_stream(b"")
        assert isinstance(reply, StreamReply)
        await collect(reply.chunks)
    headers = dict(reply.headers)
    assert headers["Content-Type"] == "application/x-ndjson"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Accel-Buffering"] == "no"


async def test_stream_with_bad_query_is_a_400_reply() -> None:
    """A bad stream request is answered like a bad page request."""
    async with Aggregator(sections(), page="contrib-http") as agg:
        reply = endpoint_for(agg).open_stream(b"sections=nope")
    assert isinstance(reply, Reply)
    assert reply.status == 400
    assert body(reply)["error"]["field"] == "sections"


def test_closing_the_stream_early_cancels_running_sources() -> None:
    """A client that leaves after the first line stops the slow sources."""
    cancelled: list[str] = []

    class Slow(Recorder):
        async def __call__(self, ctx: RequestContext) -> Any:
            try:
                return await super().__call__(ctx)
            except anyio.get_cancelled_exc_class():
                cancelled.append("slow")
                raise

    async def run() -> None:
        overrides = {
            "featuredProducts": Slow(["p"], delay=60),
            "featuredEvents": Slow(["e"], delay=60),
        }
        async with Aggregator(sections(**overrides), page="contrib-http") as agg:
            reply = endpoint_for(agg).open_stream(b"")
            assert isinstance(reply, StreamReply)
            chunks = reply.chunks
            first = await chunks.__anext__()
            assert json.loads(first)["section"] == "newArrivals"
            await chunks.aclose()
            await anyio.sleep(1)  # virtual: lets the cancelled tasks run
            assert sorted(cancelled) == ["slow", "slow"]

    run_on_mock_clock(run)


# -- imports ---------------------------------------------------------------


def imported_after(module: str) -> Sequence[str]:
    code = (
        f"import sys, {module}; "
        "print(','.join(m for m in ('fastapi','django','starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_neutral_adapter_imports_no_framework() -> None:
    """batchpage.contrib.http works without FastAPI or Django installed."""
    assert imported_after("batchpage.contrib.http") == []


def test_fastapi_adapter_needs_only_starlette() -> None:
    """batchpage.contrib.fastapi pulls in Starlette, not Django."""
    assert imported_after("batchpage.contrib.fastapi") == ["starlette"]


def test_fastapi_304_has_no_body_or_content_type() -> None:
    """The Starlette response of a 304 carries the tags and no body."""
    from batchpage.contrib.fastapi import to_response

    response = to_response(Reply(304, (("ETag", 'W/"a"'), ("Cache-Control", "no-store"))))
    assert response.status_code == 304
    assert response.body == b""
    assert response.headers["etag"] == 'W/"a"'
    assert "content-type" not in response.headers
    assert "content-length" not in response.headers


def starlette_client(app: Any) -> Any:
    import httpx

    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


async def test_fastapi_404_and_405_have_the_error_shape() -> None:
    """With http_error_response, Starlette's own 404 and 405 are the JSON every 4xx is."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
    from starlette.routing import Route

    from batchpage.contrib.fastapi import http_error_response

    async def page(request: Any) -> Response:
        return Response(b"{}", media_type="application/json")

    app = Starlette(
        routes=[Route("/page", page)], exception_handlers={HTTPException: http_error_response}
    )
    async with starlette_client(app) as client:
        missing = await client.get("/nope")
        wrong = await client.post("/page")
    assert missing.status_code == 404
    assert missing.json() == body(http_error_reply(404))
    assert wrong.status_code == 405
    allow = wrong.headers["allow"]
    assert set(allow.split(", ")) == {"GET", "HEAD"}  # Starlette's route answers HEAD too
    assert wrong.json() == {"error": {"field": "method", "message": f"the method must be {allow}"}}
    assert wrong.headers["content-type"] == "application/json"


async def test_fastapi_reads_every_if_none_match_line() -> None:
    """If-None-Match on two lines is one list (RFC 9110): the tag on the second line matches."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from batchpage.contrib.fastapi import page_response

    async with Aggregator(sections(), page="contrib-http") as agg:
        endpoint = endpoint_for(agg)

        async def page(request: Any) -> Response:
            return await page_response(endpoint, request)

        async with starlette_client(Starlette(routes=[Route("/page", page)])) as client:
            etag = (await client.get("/page")).headers["etag"]
            lines = [("If-None-Match", 'W/"stale"'), ("If-None-Match", etag)]
            again = await client.get("/page", headers=lines)
    assert again.status_code == 304


async def test_fastapi_stream_render_and_user_in_process() -> None:
    """stream_response streams NDJSON for the user given; render_page answers a page
    fetched by the handler itself; a non-HTTPException is refused by the error handler."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from batchpage.contrib.fastapi import (
        http_error_response,
        page_response,
        render_page,
        stream_response,
    )

    async with Aggregator(sections(), page="contrib-http") as agg:
        endpoint = endpoint_for(agg)

        async def page(request: Any) -> Response:
            return await page_response(endpoint, request, user_id="u1")

        async def stream(request: Any) -> Response:
            return await stream_response(endpoint, request, user_id="u1")

        async def rendered(request: Any) -> Response:
            page_request = endpoint.parse(b"limit=2")
            return render_page(
                endpoint, await agg.fetch(page_request.context), page_request, request
            )

        routes = [Route("/page", page), Route("/stream", stream), Route("/rendered", rendered)]
        async with starlette_client(Starlette(routes=routes)) as client:
            personal = await client.get("/page")
            lines = (await client.get("/stream")).text.splitlines()
            bad = await client.get("/stream?limit=0")
            shown = await client.get("/rendered")
    assert personal.headers["cache-control"] == "private, no-store"
    assert len(lines) == len(NAMES) + 1
    assert json.loads(lines[-1])["status"] == 200
    assert bad.status_code == 400
    assert shown.status_code == 200
    assert list(shown.json()["sections"]) == list(NAMES)
    with pytest.raises(TypeError, match="handles HTTPException"):
        await http_error_response(None, ValueError("not an HTTP error"))  # type: ignore[arg-type]


# -- the Django adapter's lifespan (pure ASGI, no server) ----------------------


class LifespanDriver:
    """Plays an ASGI server's side of the lifespan protocol."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.started = anyio.Event()
        self.shutdown = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.sent and not self.started.is_set():
            return {"type": "lifespan.startup"}
        await self.shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))
        self.started.set()

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


async def test_django_lifespan_runs_the_context_around_requests() -> None:
    """Lifespan enters the context at start-up, hands its value to requests, exits at shutdown."""
    from contextlib import asynccontextmanager

    from batchpage.contrib.django import Lifespan

    events: list[str] = []
    seen: list[Any] = []

    @asynccontextmanager
    async def context() -> AsyncIterator[str]:
        events.append("enter")
        yield "the service"
        events.append("exit")

    async def django_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"]["batchpage"])

    async def nothing() -> Any:
        return {}

    async def drop(message: Any) -> None:
        pass

    app = Lifespan(django_app, context)
    driver = LifespanDriver()
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan"}, driver.receive, driver.send)
        await driver.started.wait()
        await app({"type": "http", "path": "/"}, nothing, drop)
        driver.shutdown.set()
    assert seen == ["the service"]
    assert events == ["enter", "exit"]
    assert driver.types == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_django_lifespan_reports_a_failed_start_up() -> None:
    """A context that cannot start answers lifespan.startup.failed, and the server stops."""
    from contextlib import asynccontextmanager

    from batchpage.contrib.django import Lifespan

    def connect() -> None:
        raise ConnectionError("no database")

    @asynccontextmanager
    async def context() -> AsyncIterator[None]:
        connect()
        yield

    async def django_app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    driver = LifespanDriver()
    await Lifespan(django_app, context)({"type": "lifespan"}, driver.receive, driver.send)
    assert driver.sent == [{"type": "lifespan.startup.failed", "message": "ConnectionError"}]


async def test_django_lifespan_answers_a_query_that_is_not_utf8() -> None:
    """Django would refuse it before any view with an empty HTML 400: the JSON 400 instead."""
    from contextlib import asynccontextmanager

    from batchpage.contrib.django import Lifespan

    @asynccontextmanager
    async def context() -> AsyncIterator[None]:
        yield

    reached: list[bytes] = []
    sent: list[dict[str, Any]] = []

    async def django_app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["query_string"])

    async def nothing() -> Any:
        return {}

    async def keep(message: Any) -> None:
        sent.append(dict(message))

    app = Lifespan(django_app, context)
    await app({"type": "http", "path": "/homepage", "query_string": b"userId=\xff"}, nothing, keep)
    assert reached == []
    start, answer = sent
    assert start["status"] == 400
    assert (b"content-type", b"application/json") in start["headers"]
    assert json.loads(answer["body"]) == {
        "error": {"field": "query", "message": "the query string must be ASCII"}
    }
    utf8 = "userId=\u00e9".encode()  # Django can read it: its views judge it
    await app({"type": "http", "path": "/homepage", "query_string": utf8}, nothing, keep)
    assert reached == [utf8]


# The lifespan in a process of its own, as a hypercorn worker runs it: the
# server leaves SIGTERM unhandled and never sends lifespan.shutdown.
LIFESPAN_PROCESS = """
import multiprocessing, os, signal, sys
from contextlib import asynccontextmanager

import anyio

from batchpage.contrib.django import Lifespan

backend, guard, out = sys.argv[1], sys.argv[2] == "guard", sys.argv[3]


def say(line):
    with open(out, "a") as f:
        print(line, file=f, flush=True)


@asynccontextmanager
async def context():
    try:
        yield "service"
    finally:
        say("exited")


async def app(scope, receive, send):
    pass


async def serve():
    started = anyio.Event()

    async def receive():
        if not started.is_set():
            return {"type": "lifespan.startup"}
        await anyio.sleep_forever()

    async def send(message):
        say(f"{os.getpid()} {message['type']}")
        started.set()

    await Lifespan(app, context, guard_process=guard)({"type": "lifespan"}, receive, send)


def worker():
    anyio.run(serve, backend=backend)


if __name__ == "__main__":
    if sys.argv[4] == "worker":  # in a multiprocessing child, as hypercorn's workers are
        process = multiprocessing.get_context("spawn").Process(target=worker)
        process.start()
        process.join()
    else:
        worker()
"""


def _lifespan_process(
    tmp_path: Path, backend: str, *, guard: bool = True, worker: bool = False
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The script above, running; its lifespan started. Returns it, the lifespan's pid, its log."""
    script, out = tmp_path / "lifespan_process.py", tmp_path / "out.txt"
    script.write_text(LIFESPAN_PROCESS)
    args = [backend, "guard" if guard else "no-guard", str(out), "worker" if worker else "direct"]
    process = subprocess.Popen([sys.executable, str(script), *args], start_new_session=True)
    deadline = time.monotonic() + 30
    while "lifespan.startup.complete" not in (text := out.read_text() if out.exists() else ""):
        assert process.poll() is None, text
        assert time.monotonic() < deadline, text
        time.sleep(0.02)
    return process, int(text.split()[0]), out


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("guard", [True, False], ids=["guard", "no-guard"])
def test_django_lifespan_exits_its_context_on_an_unhandled_sigterm(
    backend: str, guard: bool, tmp_path: Path
) -> None:
    """Where nobody handles SIGTERM, it exits the context first, then dies by SIGTERM as asked
    (without the guard, the process dies at once and the context never exits)."""
    process, pid, out = _lifespan_process(tmp_path, backend, guard=guard)
    deadline = time.monotonic() + 30
    while guard and not catches(pid, signal.SIGTERM):  # the guard is in place a moment later
        assert time.monotonic() < deadline, "no SIGTERM handler"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM
    assert ("exited" in out.read_text().split()) is guard


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc")
def test_django_lifespan_of_an_orphaned_worker_exits_its_context(tmp_path: Path) -> None:
    """A multiprocessing worker whose parent is SIGKILLed exits its context and ends."""
    parent, worker_pid, out = _lifespan_process(tmp_path, "asyncio", worker=True)
    worker = process(worker_pid)
    assert worker is not None
    parent.kill()
    parent.wait()
    try:
        assert survivors([worker], within=30) == []
        assert "exited" in out.read_text().split()
    finally:
        if alive(worker):
            os.kill(worker_pid, signal.SIGKILL)


async def test_django_lifespan_leaves_a_handled_sigterm_alone() -> None:
    """Where the server handles SIGTERM itself (uvicorn), its handler stays in place."""
    from contextlib import asynccontextmanager

    from batchpage.contrib.django import Lifespan

    def handler(signum: int, frame: object) -> None:
        pass

    seen: list[object] = []

    @asynccontextmanager
    async def context() -> AsyncIterator[None]:
        yield

    async def django_app(scope: Any, receive: Any, send: Any) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        driver = LifespanDriver()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                Lifespan(django_app, context), {"type": "lifespan"}, driver.receive, driver.send
            )
            await driver.started.wait()
            await anyio.sleep(0.01)
            seen.append(signal.getsignal(signal.SIGTERM))
            driver.shutdown.set()
        assert seen == [handler]
        assert driver.types == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_stream_lines_keep_the_stored_json_exactly() -> None:
    """A stream line carries the section's stored bytes: an exact decimal keeps its digits."""
    from decimal import Decimal

    exact = Decimal("0.1000000000000000000000001")
    sections = [Section(name="price", source=Recorder({"price": exact}))]
    async with Aggregator(sections, page="contrib-http") as agg:
        reply = PageEndpoint(agg).open_stream(b"")
        assert isinstance(reply, StreamReply)
        raw = [line async for line in reply.chunks]
        page = await agg.fetch()
    assert b'"data":{"price":0.1000000000000000000000001}' in raw[0]
    line = json.loads(raw[0], parse_float=Decimal)
    assert line["data"]["price"] == exact
    assert json.loads(raw[0]) == {
        **page.results["price"].to_dict(),
        "timingMs": json.loads(raw[0])["timingMs"],
    }
    assert dict(reply.headers)["Vary"] == "Cookie"
