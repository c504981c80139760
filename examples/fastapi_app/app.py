"""The homepage on FastAPI: the batch page, its stream, the six legacy endpoints, the rollout.

Run it (embedded MongoDB, seeded data, memory cache) with
``python -m examples.serve``, or under any ASGI server::

    uvicorn examples.fastapi_app.app:create_app --factory --port 8000

Settings come from the environment (:mod:`examples.service.settings`). The
handlers are a line each: parsing, validation, headers and streaming are
``batchpage.contrib.fastapi``'s, so this app and the Django one answer alike.

==================================  =============================================
route                               answer
==================================  =============================================
``GET /homepage``                   the batch page (200, 304, 400, 503)
``GET /homepage/stream``            NDJSON, one line per section as it completes
``GET /products/featured``          legacy: one section, ``{"data": [...]}``
``GET /products/new-arrivals``      legacy
``GET /stores/featured``            legacy
``GET /events/featured``            legacy
``GET /offers?featured=true``       legacy
``GET /offers?flashSale=true``      legacy
``GET /rollout?userId=...``         ``{"userId", "useBatch", "percentage", "enabled"}``
``GET /``                           the demo page (``examples/demo/index.html``)
``GET /bench/bare``                 only with ``BATCHPAGE_BENCH_BARE=1``: see below
``GET /debug/vitals``               only with ``BATCHPAGE_DEBUG_VITALS=1``: this
                                    worker's tasks, threads, sockets, memory and
                                    counters (:mod:`examples.service.vitals`)
==================================  =============================================

``BATCHPAGE_BENCH_BARE=1`` (off by default) adds ``GET /bench/bare`` for
``benchmarks/bench_http.py``: a bare FastAPI endpoint that answers the bytes
of one ``/homepage?limit=10`` page (fetched by its first call) with
``Content-Type: application/json`` and does nothing else, so the benchmark
can compare ``/homepage`` with it on the same server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from batchpage.contrib.fastapi import (
    http_error_response,
    page_response,
    rollout_response,
    stream_response,
    to_response,
)
from batchpage.contrib.http import json_reply
from examples.fastapi_app import openapi
from examples.service.legacy import PATHS
from examples.service.lifetime import Homepage, running
from examples.service.settings import Settings
from examples.service.vitals import VITALS_ENV, vitals

DEMO_PAGE = Path(__file__).resolve().parent.parent / "demo" / "index.html"
BENCH_BARE_ENV = "BATCHPAGE_BENCH_BARE"


class State(TypedDict):
    homepage: Homepage


def _homepage(request: Request) -> Homepage:
    homepage: Homepage = request.state.homepage
    return homepage


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; ``settings`` default to the environment's."""
    settings = settings if settings is not None else Settings.from_env(os.environ)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with running(settings) as homepage:
            yield {"homepage": homepage}

    # No redirect from "/homepage/" to "/homepage": a 404, as in the Django app; 404 and 405
    # in the error shape of every other 4xx.
    app = FastAPI(
        title="batchpage homepage",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        exception_handlers={HTTPException: http_error_response},
    )

    @app.get("/homepage", **openapi.HOMEPAGE)
    async def homepage(request: Request) -> Response:
        """The whole homepage in one response."""
        return await page_response(_homepage(request).endpoint, request)

    @app.get("/homepage/stream", **openapi.STREAM)
    async def homepage_stream(request: Request) -> Response:
        """The homepage as NDJSON, each section as soon as it is ready."""
        return stream_response(_homepage(request).endpoint, request)

    @app.get("/rollout", **openapi.ROLLOUT)
    async def rollout(request: Request) -> Response:
        """Whether this user should call /homepage or the legacy endpoints."""
        return rollout_response(_homepage(request).rollout, request)

    for name, path in PATHS.items():
        app.add_api_route(path, _legacy_route(name), methods=["GET"], name=name, **openapi.LEGACY)

    @app.get("/offers", **openapi.OFFERS)
    async def offers(request: Request) -> Response:
        """Legacy: featured offers (featured=true) or flash sales (flashSale=true)."""
        return await _legacy(request, None)

    @app.get("/", response_class=HTMLResponse)
    async def demo() -> Response:
        """The demo page, which calls /homepage and /homepage/stream."""
        return HTMLResponse(DEMO_PAGE.read_bytes())

    if os.environ.get(BENCH_BARE_ENV) == "1":
        _add_bench_bare(app)
    if os.environ.get(VITALS_ENV) == "1":

        @app.get("/debug/vitals")
        async def debug_vitals(request: Request) -> Response:
            """This worker's resources and counters (tests and rehearsals only)."""
            return to_response(json_reply(200, vitals(_homepage(request))))

    return app


def _add_bench_bare(app: FastAPI) -> None:
    """``GET /bench/bare``: a page's bytes, fetched once, then answered as they are."""
    body: list[bytes] = []

    @app.get("/bench/bare")
    async def bench_bare(request: Request) -> Response:
        if not body:
            body.append((await _homepage(request).endpoint.respond(b"limit=10")).body)
        return Response(body[0], media_type="application/json")


async def _legacy(request: Request, name: str | None) -> Response:
    reply = await _homepage(request).legacy(name, request.scope.get("query_string", b""))
    return to_response(reply)


def _legacy_route(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def legacy(request: Request) -> Response:
        return await _legacy(request, name)

    legacy.__doc__ = f"Legacy: the {name} section alone."
    return legacy
