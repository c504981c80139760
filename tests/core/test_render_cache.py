"""The render cache of ``PageEndpoint``: a reused reply is the reply a fresh rendering makes.

``PageEndpoint.render`` keeps recent replies keyed by what a reply is made
of. These tests hold it to the one rule that makes that honest: for every
page, the reply (status, every header, body) is byte for byte the reply a
rendering without the memo makes of that same page, and the memo stays
within its budget of bytes.

* a property over pages built from small pools of values that collide on
  purpose (the same bytes in two objects, times either side of a rounding
  step, moments either side of a second, every cache status, errors,
  required sections, users, ``If-None-Match``);
* a state machine over a real aggregator, on asyncio and on trio: requests
  by different users and queries, fills, sources that change or fail,
  invalidations and clock moves past fresh, stale and expiry; each request
  answered through the plain endpoint, the FastAPI adapter (over ASGI) and
  the Django adapter, each compared with a fresh rendering of the page it
  fetched;
* one behaviour per example test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchpage import (
    Aggregator,
    CachePolicy,
    CacheStatus,
    ErrorCode,
    MemoryCache,
    PageResult,
    RequestContext,
    Scope,
    Section,
    SectionError,
    SectionResult,
)
from batchpage.contrib.http import PageEndpoint, PageRequest, Param, Reply, integer
from batchpage.extend import Observer
from helpers import FakeClock

# The Django adapter needs settings. A process holds one Django configuration,
# and the example app's tests (tests/examples) need the example's: use them
# here too (they read the environment only; no database, no app).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
from django.test import RequestFactory  # type: ignore[import-untyped]

from batchpage.contrib import django as django_adapter
from batchpage.contrib import fastapi as fastapi_adapter

LIMIT = Param("limit", integer(1, 3), default=2)
SCOPES = {"g": Scope.GLOBAL, "p": Scope.USER, "r": Scope.GLOBAL}
POLICY = CachePolicy(fresh=10, stale=5, stale_if_error=20, jitter=0)


def endpoints(agg: Aggregator, budget: int) -> tuple[PageEndpoint, PageEndpoint]:
    """The endpoint under test (its memo within ``budget`` bytes) and one without a memo."""
    return (
        PageEndpoint(agg, params=[LIMIT], render_cache_bytes=budget),
        PageEndpoint(agg, params=[LIMIT], render_cache_bytes=0),
    )


def plain_aggregator(required: frozenset[str] = frozenset()) -> Aggregator:
    """Sections g (global), p (per user) and r (global), never run: pages are built by hand."""

    async def never(ctx: RequestContext) -> None:
        raise AssertionError("not called")

    return Aggregator(
        [Section(name=n, source=never, scope=s, required=n in required) for n, s in SCOPES.items()],
        page="render-cache",
    )


# -- pages built by hand ------------------------------------------------------

# Two objects with the same bytes, so that equal content in another object is seen too.
SHARED = b'{"n":[1,2]}'
# Different bytes of one length, so that a key of lengths would be caught.
PAYLOADS = [b"1", b"2", b'"x"', b'"y"', SHARED, bytes(bytearray(SHARED)), b"null", b"[]"]
# Either side of a rounding step of one decimal of a millisecond, and repeated values.
MILLISECONDS = [0.0, 0.04, 0.049999, 0.05, 0.05000001, 0.15, 0.25, 0.96, 1.0, 12.34, 80.0]
# Either side of a second (generatedAt is written to the second).
MOMENTS = [1_000_000.0, 1_000_000.4, 1_000_000.999, 1_000_001.0, 1_000_001.5]


@attrs.define
class SectionSpec:
    encoded: bytes = SHARED
    cache: CacheStatus = CacheStatus.HIT
    ms: float = 0.0
    error: ErrorCode | None = None
    stand_in: bool = False

    def result(self, name: str) -> SectionResult:
        error = None if self.error is None else SectionError(name, self.error, "it failed")
        return SectionResult(name, self.encoded, self.cache, self.ms, error, self.stand_in)


@attrs.define
class PageSpec:
    """A page and the request it answers, changed one field at a time."""

    sections: dict[str, SectionSpec] = attrs.Factory(lambda: {n: SectionSpec() for n in SCOPES})
    asked: tuple[str, ...] = ("g", "p", "r")
    version: str = "v1"
    generated_at: float = MOMENTS[0]
    total_ms: float = 0.0
    required: frozenset[str] = frozenset()
    user: str | None = None

    def page(self) -> PageResult:
        return PageResult(
            {n: self.sections[n].result(n) for n in self.asked},
            version=self.version,
            generated_at=self.generated_at,
            total_ms=self.total_ms,
            required=self.required,
        )

    def request(self) -> PageRequest:
        asked = None if len(self.asked) == len(SCOPES) else self.asked
        return PageRequest(RequestContext(user_id=self.user), asked)


section_names = st.sampled_from(sorted(SCOPES))
#: One change to a page, as warm pages change between two requests: often none at all.
changes = st.one_of(
    st.just(("nothing",)),
    st.tuples(st.just("encoded"), section_names, st.sampled_from(PAYLOADS)),
    st.tuples(st.just("cache"), section_names, st.sampled_from(list(CacheStatus))),
    st.tuples(st.just("ms"), section_names, st.sampled_from(MILLISECONDS)),
    st.tuples(st.just("error"), section_names, st.sampled_from([None, *ErrorCode])),
    st.tuples(st.just("stand_in"), section_names, st.booleans()),
    st.tuples(st.just("asked"), st.sampled_from([("g", "p", "r"), ("g",), ("p",), ("g", "r")])),
    st.tuples(st.just("version"), st.sampled_from(["v1", "v2"])),
    st.tuples(st.just("generated_at"), st.sampled_from(MOMENTS)),
    st.tuples(st.just("total_ms"), st.sampled_from(MILLISECONDS)),
    st.tuples(st.just("required"), st.sampled_from([frozenset(), frozenset({"g"})])),
    st.tuples(st.just("user"), st.sampled_from([None, "u1", "u2"])),
)
if_none_matches = st.sampled_from([None, None, "*", 'W/"nope"', "last"])


def apply(spec: PageSpec, change: tuple[Any, ...]) -> None:
    what, *args = change
    if what == "nothing":
        return
    if what in ("encoded", "cache", "ms", "error", "stand_in"):
        name, value = args
        setattr(spec.sections[name], what, value)
    else:
        setattr(spec, what, args[0])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(changes, if_none_matches), min_size=1, max_size=40),
    st.sampled_from([0, 400, 1 << 20]),
)
def test_a_reused_reply_is_what_a_fresh_rendering_makes(
    steps: list[tuple[tuple[Any, ...], str | None]], budget: int
) -> None:
    """Pages changed a field at a time: each reply is the fresh rendering's, within the budget."""
    memo, fresh = endpoints(plain_aggregator(), budget)
    spec = PageSpec()
    last_etag: str | None = None
    for change, if_none_match in steps:
        apply(spec, change)
        if if_none_match == "last":  # the tag of the reply before, as a browser sends it back
            if_none_match = last_etag
        page, request = spec.page(), spec.request()
        expected = fresh.render(page, request, if_none_match=if_none_match)
        assert memo.render(page, request, if_none_match=if_none_match) == expected, change
        last_etag = expected.header("ETag")
        renders = memo._renders  # the memo's own accounting, held to its budget
        assert renders.bytes <= budget
        assert len(renders) == 0 or budget > 0


# -- one behaviour each ------------------------------------------------------


def warm_page(
    value: bytes = SHARED,
    *,
    at: float = 1_000_000.2,
    ms: float = 0.01,
    status: CacheStatus = CacheStatus.HIT,
) -> PageResult:
    results = {n: SectionResult(n, value, status, ms) for n in SCOPES}
    return PageResult(results, version="v1", generated_at=at, total_ms=0.03)


ANONYMOUS = PageRequest(RequestContext())


def test_the_same_warm_page_gets_the_same_reply_object() -> None:
    """Nothing is joined, hashed or formatted again for a page the memo has seen."""
    memo, _ = endpoints(plain_aggregator(), 1 << 20)
    first = memo.render(warm_page(), ANONYMOUS)
    assert memo.render(warm_page(ms=0.02, at=1_000_000.9), ANONYMOUS) is first  # 0.0 ms, one second


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(warm_page(b'{"n":[1,3]}'), id="a section's bytes"),
        pytest.param(warm_page(status=CacheStatus.STALE), id="a cache status"),
        pytest.param(warm_page(ms=0.06), id="a section's time, as rounded"),
        pytest.param(warm_page(at=1_000_001.0), id="the second of generatedAt"),
    ],
)
def test_a_page_that_changed_gets_a_new_reply(changed: PageResult) -> None:
    """A reply is never reused for a page that differs on the wire."""
    memo, fresh = endpoints(plain_aggregator(), 1 << 20)
    before = memo.render(warm_page(), ANONYMOUS)
    after = memo.render(changed, ANONYMOUS)
    assert after != before
    assert after == fresh.render(changed, ANONYMOUS)


def test_a_user_gets_a_private_reply_for_the_same_bytes() -> None:
    """The same bytes for a user with a personal section: private, not the public reply."""
    memo, _ = endpoints(plain_aggregator(), 1 << 20)
    public = memo.render(warm_page(), ANONYMOUS)
    private = memo.render(warm_page(), PageRequest(RequestContext(user_id="u1")))
    assert (
        public.header(
            "Cache-Control",
        )
        == "public, max-age=60, stale-while-revalidate=120"
    )
    assert private.header("Cache-Control") == "private, no-store"
    assert private.body == public.body


def test_the_memo_keeps_within_its_bytes() -> None:
    """Many different pages: the oldest replies go; a reply bigger than the budget is not kept."""
    budget = 2_000
    memo, _ = endpoints(plain_aggregator(), budget)
    for n in range(50):
        memo.render(warm_page(b"[%d]" % n), ANONYMOUS)
        assert memo._renders.bytes <= budget
    assert 0 < len(memo._renders) < 50
    memo.render(warm_page(b'"' + b"x" * budget + b'"'), ANONYMOUS)
    assert memo._renders.bytes <= budget


def test_render_cache_bytes_zero_keeps_nothing() -> None:
    """``render_cache_bytes=0`` turns the memo off."""
    memo, _ = endpoints(plain_aggregator(), 0)
    first = memo.render(warm_page(), ANONYMOUS)
    assert memo.render(warm_page(), ANONYMOUS) == first
    assert len(memo._renders) == 0


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (True, TypeError), (1.5, TypeError)]
)
def test_render_cache_bytes_is_checked(value: object, error: type[Exception]) -> None:
    """A count of bytes, zero or more."""
    with pytest.raises(error, match="render_cache_bytes"):
        PageEndpoint(plain_aggregator(), render_cache_bytes=value)  # type: ignore[arg-type]


# -- a real aggregator, through each adapter ------------------------------------------


class Source:
    """Answers ``{"n": k, "limit": ...}`` on its k-th call, or fails when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    async def __call__(self, ctx: RequestContext) -> dict[str, int]:
        if self.failing:
            raise ConnectionError("down")
        self.calls += 1
        return {"n": self.calls, "limit": ctx.params["limit"]}


class LastPage(Observer):
    """Keeps the page the last ``fetch`` returned: what the handler rendered."""

    page: PageResult | None = None

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        self.page = result


QUERIES = [b"", b"limit=1", b"limit=3", b"sections=g", b"sections=p,r", b"limit=1&sections=r"]
USERS = [None, "alice", "bob"]


def starlette_app(endpoint: PageEndpoint) -> Starlette:
    async def page(request: Request) -> Response:
        # The test's identity hook: a header (a real application has its own authentication).
        return await fastapi_adapter.page_response(
            endpoint, request, user_id=request.headers.get("x-test-user")
        )

    return Starlette(routes=[Route("/page", page)])


def starlette_answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return (
        response.status_code,
        [(k.lower(), v) for k, v in response.headers.multi_items()],
        response.content,
    )


def expected_starlette(reply: Reply) -> tuple[int, list[tuple[str, str]], bytes]:
    response = fastapi_adapter.to_response(reply)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]
    return response.status_code, headers, bytes(response.body)


def django_answer(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.items()), response.content


class RenderCacheMachine(RuleBasedStateMachine):
    """Requests, fills, failures, invalidations and clock moves; every answer checked.

    Subclasses choose the event loop (``backend``) and the memo's budget.
    """

    backend: ClassVar[str] = "asyncio"
    budget: ClassVar[int] = 1 << 20

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.sources = {name: Source() for name in SCOPES}
        self.last = LastPage()
        sections = [
            Section(
                name=name,
                source=self.sources[name],
                cache=POLICY,
                scope=scope,
                breaker=None,
                required=name == "r",
            )
            for name, scope in SCOPES.items()
        ]
        self.agg = Aggregator(
            sections,
            page="render-machine",
            cache=MemoryCache(clock=self.clock),
            observers=[self.last],
        )
        self.memo, self.fresh = endpoints(self.agg, self.budget)
        self._portal_cm = start_blocking_portal(self.backend)
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self._agg_cm = self.portal.wrap_async_context_manager(self.agg)
        self._agg_cm.__enter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(starlette_app(self.memo)), base_url="http://test"
        )
        self._client_cm = self.portal.wrap_async_context_manager(client)
        self.client = self._client_cm.__enter__()
        self.etags: list[str] = []

    def teardown(self) -> None:
        self._client_cm.__exit__(None, None, None)
        self._agg_cm.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)

    def fresh_reply(self, query: bytes, user: str | None, if_none_match: str | None) -> Reply:
        """What a rendering without the memo makes of the page the handler just fetched."""
        page = self.last.page
        assert page is not None
        request = self.fresh.parse(query, user_id=user)
        return self.fresh.render(page, request, if_none_match=if_none_match)

    def tag(self, choice: int | None) -> str | None:
        if choice is None or not self.etags:
            return None
        return self.etags[choice % len(self.etags)]

    @rule(
        query=st.sampled_from(QUERIES),
        user=st.sampled_from(USERS),
        tag=st.none() | st.integers(0, 9),
    )
    def request_the_page(self, query: bytes, user: str | None, tag: int | None) -> None:
        if_none_match = self.tag(tag)
        reply = self.portal.call(
            lambda: self.memo.respond(query, user_id=user, if_none_match=if_none_match)
        )
        expected = self.fresh_reply(query, user, if_none_match)
        assert reply == expected
        if etag := expected.header("ETag"):
            self.etags.append(etag)

    @rule(
        query=st.sampled_from(QUERIES),
        user=st.sampled_from(USERS),
        tag=st.none() | st.integers(0, 9),
    )
    def request_through_fastapi(self, query: bytes, user: str | None, tag: int | None) -> None:
        if_none_match = self.tag(tag)
        headers = {"x-test-user": user} if user else {}
        if if_none_match:
            headers["if-none-match"] = if_none_match
        response = self.portal.call(
            lambda: self.client.get("/page?" + query.decode(), headers=headers)
        )
        expected = expected_starlette(self.fresh_reply(query, user, if_none_match))
        assert starlette_answer(response) == expected

    @rule(
        query=st.sampled_from(QUERIES),
        user=st.sampled_from(USERS),
        tag=st.none() | st.integers(0, 9),
    )
    def request_through_django(self, query: bytes, user: str | None, tag: int | None) -> None:
        if_none_match = self.tag(tag)
        extra: Mapping[str, str] = {"HTTP_IF_NONE_MATCH": if_none_match} if if_none_match else {}
        request = RequestFactory().get("/page", QUERY_STRING=query.decode(), **extra)
        response = self.portal.call(
            lambda: django_adapter.page_response(self.memo, request, user_id=user)
        )
        expected = django_adapter.to_response(self.fresh_reply(query, user, if_none_match))
        assert django_answer(response) == django_answer(expected)

    @rule(seconds=st.sampled_from([1.0, 5.0, 9.0, 10.0, 16.0, 31.0]))
    def move_the_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def let_refreshes_land(self) -> None:
        self.portal.call(self.agg.settle)

    @rule(section=st.sampled_from(sorted(SCOPES)), failing=st.booleans())
    def break_or_mend(self, section: str, failing: bool) -> None:
        self.sources[section].failing = failing

    @rule(section=st.sampled_from(sorted(SCOPES)))
    def invalidate_a_section(self, section: str) -> None:
        self.portal.call(self.agg.invalidate, section)

    @rule(user=st.sampled_from(["alice", "bob"]))
    def invalidate_a_user(self, user: str) -> None:
        self.portal.call(lambda: self.agg.invalidate("p", user_id=user))

    @invariant()
    def within_budget(self) -> None:
        assert self.memo._renders.bytes <= self.budget


MACHINE_SETTINGS = settings(max_examples=40, stateful_step_count=40, deadline=None)


class OnAsyncio(RenderCacheMachine):
    backend = "asyncio"


class OnTrio(RenderCacheMachine):
    backend = "trio"


class OnTrioWithATightBudget(RenderCacheMachine):
    """A budget of a few replies: most are evicted soon after they are made."""

    backend = "trio"
    budget = 1_500


OnAsyncio.TestCase.settings = MACHINE_SETTINGS
OnTrio.TestCase.settings = MACHINE_SETTINGS
OnTrioWithATightBudget.TestCase.settings = MACHINE_SETTINGS
TestRenderCacheOnAsyncio = OnAsyncio.TestCase
TestRenderCacheOnTrio = OnTrio.TestCase
TestRenderCacheOnTrioWithATightBudget = OnTrioWithATightBudget.TestCase
