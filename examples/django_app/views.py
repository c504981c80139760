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

from batchpage.contrib.django import (
    lifespan_state,
    page_response,
    rollout_response,
    stream_response,
    to_response,
)
from batchpage.contrib.http import http_error_reply
from examples.service.lifetime import Homepage

DEMO_PAGE = Path(__file__).resolve().parent.parent / "demo" / "index.html"

View = Callable[[HttpRequest], Awaitable[Any]]


def get_only(view: View) -> View:
    """Answer 405 to anything but GET, as the FastAPI routes do (and in the same JSON)."""

    async def only_get(request: HttpRequest) -> Any:
        if request.method != "GET":
            return to_response(http_error_reply(405, allow="GET"))
        return await view(request)

    only_get.__doc__ = view.__doc__
    return only_get


def _homepage(request: HttpRequest) -> Homepage:
    homepage: Homepage = lifespan_state(request)
    return homepage


async def homepage(request: HttpRequest) -> HttpResponse:
    """The whole homepage in one response."""
    return await page_response(_homepage(request).endpoint, request)


async def homepage_stream(request: HttpRequest) -> Any:
    """The homepage as NDJSON, each section as soon as it is ready."""
    return stream_response(_homepage(request).endpoint, request)


async def rollout(request: HttpRequest) -> HttpResponse:
    """Whether this user should call /homepage or the legacy endpoints."""
    return rollout_response(_homepage(request).rollout, request)


def legacy_view(name: str) -> View:
    """The view of one legacy endpoint."""

    async def legacy(request: HttpRequest) -> HttpResponse:
        return to_response(await _homepage(request).legacy(name, _query(request)))

    legacy.__doc__ = f"Legacy: the {name} section alone."
    view: View = legacy
    return view


async def offers(request: HttpRequest) -> HttpResponse:
    """Legacy: featured offers (featured=true) or flash sales (flashSale=true)."""
    return to_response(await _homepage(request).legacy(None, _query(request)))


async def demo(request: HttpRequest) -> HttpResponse:
    """The demo page, which calls /homepage and /homepage/stream."""
    return HttpResponse(DEMO_PAGE.read_bytes(), content_type="text/html; charset=utf-8")


def _query(request: HttpRequest) -> bytes:
    # The raw bytes, as the FastAPI app reads them, so both apps judge the same input.
    query: bytes = request.scope.get("query_string", b"")
    return query
