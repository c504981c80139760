"""The peer homepage on FastAPI: ``uvicorn examples.peers.fastapi_app:create_app --factory``."""

from __future__ import annotations

import os
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.sessions import SessionMiddleware

from .homepage import PeerHomepage, parse_limit


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    secret = os.environ.get("BATCHPAGE_SESSION_SECRET") or secrets.token_urlsafe(32)
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie="batchpage_session")
    homepage = PeerHomepage()

    @app.get("/homepage")
    async def page(request: Request) -> JSONResponse:
        limit = parse_limit(request.query_params.get("limit"))
        if limit is None:
            return JSONResponse({"error": "limit must be 1 to 50"}, status_code=400)
        user = request.session.get("userId")
        return JSONResponse(await homepage.page(limit, user if isinstance(user, str) else None))

    @app.get("/rollout")
    async def ready() -> JSONResponse:
        """What the benchmarks' servers poll until it answers."""
        return JSONResponse({"ready": True})

    return app
