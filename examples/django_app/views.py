"""Async views of the homepage: a line each over ``batchpage.contrib.django``.

The running service (aggregator, rollout, database) comes from the ASGI
lifespan (:mod:`.asgi`), through :func:`batchpage.contrib.django.lifespan_state`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from django.http import (  # type: ignore[import-untyped]  # Django ships no types
    HttpRequest,
    HttpResponse,
)

from batchpage import InvalidParameter
from batchpage.contrib.django import (
    lifespan_state,
    page_response,
    stream_response,
    to_response,
)
from batchpage.contrib.http import error_reply, http_error_reply, json_reply
from examples.service.lifetime import Homepage
from examples.service.request import (
    SESSION_KEY,
    rollout_reply,
    session_reply,
    session_user,
    sign_in_request,
)
from examples.service.vitals import vitals

DEMO_PAGE = Path(__file__).resolve().parent.parent / "demo" / "index.html"

View = Callable[[HttpRequest], Awaitable[Any]]


def get_only(view: View) -> View:
    """Answer 405 to anything but GET, as the FastAPI routes do (and in the same JSON)."""
    return methods(GET=view)


def methods(**views: View) -> View:
    """One path, a view per method (``GET=..., POST=...``); 405 with ``Allow`` otherwise."""
    allow = ", ".join(views)

    async def dispatch(request: HttpRequest) -> Any:
        view = views.get(request.method)
        if view is None:
            return to_response(http_error_reply(405, allow=allow))
        return await view(request)

    dispatch.__doc__ = next(iter(views.values())).__doc__
    return dispatch


def current_user(request: HttpRequest) -> str | None:
    """The signed-in user: Django's signed-cookie session's, else ``None`` (anonymous).

    A tampered or expired cookie loads as an empty session: anonymous. A
    ``userId`` in the query is never an identity.
    """
    return session_user(request.session)


def _homepage(request: HttpRequest) -> Homepage:
    homepage: Homepage = lifespan_state(request)
    return homepage


async def homepage(request: HttpRequest) -> HttpResponse:
    """The whole homepage in one response, for the signed-in user."""
    return await page_response(_homepage(request).endpoint, request, user_id=current_user(request))


async def homepage_stream(request: HttpRequest) -> Any:
    """The homepage as NDJSON, each section as soon as it is ready."""
    return await stream_response(
        _homepage(request).endpoint, request, user_id=current_user(request)
    )


async def rollout(request: HttpRequest) -> HttpResponse:
    """Whether the signed-in user should call /homepage or the legacy endpoints."""
    reply = rollout_reply(_homepage(request).rollout, current_user(request), _query(request))
    return to_response(reply)


async def metrics(request: HttpRequest) -> HttpResponse:
    """This worker's Prometheus metrics (per section: times, cache statuses, breakers)."""
    return to_response(_homepage(request).metrics_reply())


async def who(request: HttpRequest) -> HttpResponse:
    """Who is signed in: ``{"userId": ...}`` (``null``: anonymous)."""
    return to_response(session_reply(current_user(request)))


async def sign_in(request: HttpRequest) -> HttpResponse:
    """Demo sign-in: ``{"userId": "..."}`` sets the signed session cookie."""
    try:
        user = sign_in_request(request.body)
    except InvalidParameter as error:
        return to_response(error_reply(error))
    request.session.flush()
    request.session[SESSION_KEY] = user
    return to_response(session_reply(user))


async def sign_out(request: HttpRequest) -> HttpResponse:
    """Sign out: the session cookie is cleared."""
    request.session.flush()
    return to_response(session_reply(None))


def legacy_view(name: str) -> View:
    """The view of one legacy endpoint."""

    async def legacy(request: HttpRequest) -> HttpResponse:
        reply = await _homepage(request).legacy(
            name, _query(request), user_id=current_user(request)
        )
        return to_response(reply)

    legacy.__doc__ = f"Legacy: the {name} section alone."
    view: View = legacy
    return view


async def offers(request: HttpRequest) -> HttpResponse:
    """Legacy: featured offers (featured=true) or flash sales (flashSale=true)."""
    reply = await _homepage(request).legacy(None, _query(request), user_id=current_user(request))
    return to_response(reply)


async def demo_faults(request: HttpRequest) -> HttpResponse:
    """Which sections the demo's fault switch breaks now, and their circuit breakers."""
    return to_response(_homepage(request).demo_faults())


async def set_demo_fault(request: HttpRequest) -> HttpResponse:
    """Break one section, or mend it: ``{"section": ..., "fault": "error|hang|none"}``."""
    reply = await _homepage(request).set_demo_fault(
        request.body, request.headers.get("Content-Type")
    )
    return to_response(reply)


async def debug_vitals(request: HttpRequest) -> HttpResponse:
    """This worker's resources and counters (tests and rehearsals only)."""
    return to_response(json_reply(200, vitals(_homepage(request))))


async def demo(request: HttpRequest) -> HttpResponse:
    """The demo page, which calls /homepage and /homepage/stream."""
    return HttpResponse(DEMO_PAGE.read_bytes(), content_type="text/html; charset=utf-8")


_bare_body: list[bytes] = []


async def _page_bytes(request: HttpRequest) -> bytes:
    if not _bare_body:
        _bare_body.append((await _homepage(request).endpoint.respond(b"limit=10")).body)
    return _bare_body[0]


async def bench_bare(request: HttpRequest) -> HttpResponse:
    """The bytes of one ``/homepage?limit=10`` page, for a user known as ``homepage`` knows them.

    Routed only with ``BATCHPAGE_BENCH_BARE=1``, for ``benchmarks/``: the
    page's bytes fetched once, then answered as they are, after the same
    identity hook as :func:`homepage` (the application's work, not batchpage's).
    """
    current_user(request)
    return _bare_response(await _page_bytes(request))


async def bench_bare_no_identity(request: HttpRequest) -> HttpResponse:
    """:func:`bench_bare` without the identity hook: Django's floor."""
    return _bare_response(await _page_bytes(request))


def _bare_response(body: bytes) -> HttpResponse:
    # Content-Length, as the page has: the server then frames both alike (not chunked).
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    return HttpResponse(body, headers=headers)


def _query(request: HttpRequest) -> bytes:
    # The raw bytes, as the FastAPI app reads them, so both apps judge the same input.
    query: bytes = request.scope.get("query_string", b"")
    return query
