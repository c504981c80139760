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
``GET /rollout``                    ``{"userId", "useBatch", "percentage", "enabled"}``
``GET|POST|DELETE /session``        who is signed in; demo sign-in ``{"userId"}``
                                    (a signed, HttpOnly cookie); sign-out
``GET /``                           the demo page (``examples/demo/index.html``)
``GET|POST /demo/faults``           only with ``BATCHPAGE_DEMO_FAULTS=1``: the demo's
                                    run-time fault switch
                                    (:mod:`examples.service.demo`)
``GET /bench/bare``                 only with ``BATCHPAGE_BENCH_BARE=1``: see below
``GET /bench/bare-no-identity``     the same
``GET /debug/vitals``               only with ``BATCHPAGE_DEBUG_VITALS=1``: this
                                    worker's tasks, threads, sockets, memory and
                                    counters (:mod:`examples.service.vitals`)
==================================  =============================================

Every route honours ``X-Simulated-Latency-Ms: <0..2000>``: the answer comes
that many ms late, marked ``no-store`` (:class:`examples.service.demo.SimulatedLatency`).

``BATCHPAGE_BENCH_BARE=1`` (off by default) adds two bare endpoints for
``benchmarks/``: each answers the bytes of one ``/homepage?limit=10`` page
(fetched by its first call) with ``Content-Type: application/json`` and does
nothing else, so a benchmark can compare ``/homepage`` with them on the same
server. ``/bench/bare`` first asks who the user is, through the same
dependency as ``/homepage`` (the application's work, not batchpage's);
``/bench/bare-no-identity`` does not, and is the framework's floor.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import Response
from starlette.routing import Route

from batchpage import InvalidParameter
from batchpage.contrib.fastapi import (
    http_error_response,
    page_response,
    stream_response,
    to_response,
)
from batchpage.contrib.http import error_reply, http_error_reply, json_reply
from examples.fastapi_app import openapi
from examples.service.demo import SimulatedLatency
from examples.service.legacy import PATHS
from examples.service.lifetime import Homepage, running
from examples.service.request import (
    SESSION_KEY,
    rollout_reply,
    session_reply,
    session_user,
    sign_in_request,
)
from examples.service.settings import Settings, session_secret
from examples.service.vitals import VITALS_ENV, vitals

DEMO_PAGE = Path(__file__).resolve().parent.parent / "demo" / "index.html"
BENCH_BARE_ENV = "BATCHPAGE_BENCH_BARE"


class State(TypedDict):
    homepage: Homepage


def _homepage(request: Request) -> Homepage:
    homepage: Homepage = request.state.homepage
    return homepage


async def current_user(request: Request) -> str | None:
    """The signed-in user: the signed session cookie's, else ``None`` (anonymous).

    ``async``, so FastAPI calls it on the event loop, not in a worker thread.

    Starlette's ``SessionMiddleware`` verifies the cookie's signature and age:
    a tampered or expired cookie is an empty session, so anonymous. This is
    the app's identity hook; a real service would read its own session or
    token here. A ``userId`` in the query is never an identity.
    """
    return session_user(request.session)


User = Depends(current_user)


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
        exception_handlers={HTTPException: _http_error},
    )
    # A signed (not encrypted), HttpOnly, SameSite=Lax cookie holding the user id.
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="batchpage_session",
        max_age=settings.session_max_age,
        same_site="lax",
        https_only=settings.session_secure,
    )
    # Outermost: a simulated network delay is paid before anything else runs.
    app.add_middleware(SimulatedLatency)

    @app.get("/homepage", **openapi.HOMEPAGE)
    async def homepage(request: Request, user: str | None = User) -> Response:
        """The whole homepage in one response, for the signed-in user."""
        return await page_response(_homepage(request).endpoint, request, user_id=user)

    @app.get("/homepage/stream", **openapi.STREAM)
    async def homepage_stream(request: Request, user: str | None = User) -> Response:
        """The homepage as NDJSON, each section as soon as it is ready."""
        return await stream_response(_homepage(request).endpoint, request, user_id=user)

    @app.get("/rollout", **openapi.ROLLOUT)
    async def rollout(request: Request, user: str | None = User) -> Response:
        """Whether the signed-in user should call /homepage or the legacy endpoints."""
        query = request.scope.get("query_string", b"")
        return to_response(rollout_reply(_homepage(request).rollout, user, query))

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """This worker's Prometheus metrics (per section: times, cache statuses, breakers)."""
        return to_response(_homepage(request).metrics_reply())

    @app.get("/session", **openapi.SESSION)
    async def who(user: str | None = User) -> Response:
        """Who is signed in: ``{"userId": ...}`` (``null``: anonymous)."""
        return to_response(session_reply(user))

    @app.post("/session", **openapi.SIGN_IN)
    async def sign_in(request: Request) -> Response:
        """Demo sign-in: ``{"userId": "..."}`` sets the signed session cookie."""
        try:
            user = sign_in_request(await request.body())
        except InvalidParameter as error:
            return to_response(error_reply(error))
        request.session.clear()
        request.session[SESSION_KEY] = user
        return to_response(session_reply(user))

    @app.delete("/session", **openapi.SESSION)
    async def sign_out(request: Request) -> Response:
        """Sign out: the session cookie is cleared."""
        request.session.clear()
        return to_response(session_reply(None))

    for name, path in PATHS.items():
        app.add_api_route(path, _legacy_route(name), methods=["GET"], name=name, **openapi.LEGACY)

    @app.get("/offers", **openapi.OFFERS)
    async def offers(request: Request, user: str | None = User) -> Response:
        """Legacy: featured offers (featured=true) or flash sales (flashSale=true)."""
        return await _legacy(request, None, user)

    @app.get("/", response_class=HTMLResponse)
    async def demo() -> Response:
        """The demo page, which calls /homepage and /homepage/stream."""
        return HTMLResponse(DEMO_PAGE.read_bytes())

    if settings.demo_faults:
        _add_demo_faults(app)
    if os.environ.get(BENCH_BARE_ENV) == "1":
        _add_bench_bare(app)
    if os.environ.get(VITALS_ENV) == "1":

        @app.get("/debug/vitals")
        async def debug_vitals(request: Request) -> Response:
            """This worker's resources and counters (tests and rehearsals only)."""
            return to_response(json_reply(200, vitals(_homepage(request))))

    return app


#: The order ``Allow`` lists methods in, as the Django app's views do.
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 in the error shape; a 405's ``Allow`` names every method of the path.

    Starlette's own 405 names only the first route of the path (``GET`` for
    ``/session``, which takes ``POST`` and ``DELETE`` too); the Django app
    names them all, and so does this.
    """
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        path = request.scope.get("path", "")
        methods = {
            method
            for route in request.app.routes
            if isinstance(route, Route) and route.path_regex.fullmatch(path)
            for method in route.methods or ()
        }
        allow = ", ".join(m for m in _METHODS if m in methods)
        if allow:
            return to_response(http_error_reply(405, allow=allow))
    return await http_error_response(request, exc)


def _add_demo_faults(app: FastAPI) -> None:
    """``GET|POST /demo/faults``: the demo page's run-time fault switch."""

    @app.get("/demo/faults", **openapi.DEMO_FAULTS)
    async def demo_faults(request: Request) -> Response:
        """Which sections the demo's fault switch breaks now, and their circuit breakers."""
        return to_response(_homepage(request).demo_faults())

    @app.post("/demo/faults", **openapi.SET_DEMO_FAULT)
    async def set_demo_fault(request: Request) -> Response:
        """Break one section, or mend it: ``{"section": ..., "fault": "error|hang|none"}``."""
        reply = await _homepage(request).set_demo_fault(
            await request.body(), request.headers.get("content-type")
        )
        return to_response(reply)


def _add_bench_bare(app: FastAPI) -> None:
    """The bare endpoints: a page's bytes, fetched once, then answered as they are."""
    body: list[bytes] = []

    async def page_bytes(request: Request) -> bytes:
        if not body:
            body.append((await _homepage(request).endpoint.respond(b"limit=10")).body)
        return body[0]

    @app.get("/bench/bare", include_in_schema=False)
    async def bench_bare(request: Request, user: str | None = User) -> Response:
        """The page's bytes, for a user known as ``/homepage`` knows them."""
        return Response(await page_bytes(request), media_type="application/json")

    @app.get("/bench/bare-no-identity", include_in_schema=False)
    async def bench_bare_no_identity(request: Request) -> Response:
        """The page's bytes, and nothing else."""
        return Response(await page_bytes(request), media_type="application/json")


async def _legacy(request: Request, name: str | None, user: str | None) -> Response:
    query = request.scope.get("query_string", b"")
    return to_response(await _homepage(request).legacy(name, query, user_id=user))


def _legacy_route(name: str) -> Callable[..., Awaitable[Response]]:
    async def legacy(request: Request, user: str | None = User) -> Response:
        return await _legacy(request, name, user)

    legacy.__doc__ = f"Legacy: the {name} section alone."
    return legacy
