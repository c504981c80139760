"""FastAPI (and plain Starlette) glue: a batch page as a route in a few lines.

Thin wrappers over :mod:`batchpage.contrib.http`, which does the parsing,
headers and streaming; importing this module needs Starlette (FastAPI's
base), nothing else::

    endpoint = PageEndpoint(aggregator, params=[Param("limit", integer(1, 50), default=10)])

    @app.get("/homepage")
    async def homepage(request: Request, user: str | None = Depends(current_user)) -> Response:
        return await page_response(endpoint, request, user_id=user)

    @app.get("/homepage/stream")
    async def stream(request: Request, user: str | None = Depends(current_user)) -> Response:
        return await stream_response(endpoint, request, user_id=user)

Who the user is comes from the application (``current_user`` above is your
own dependency: a session, a token); a query parameter is never an identity.
"""

from __future__ import annotations

import contextlib

import anyio

from batchpage import PageResult
from batchpage._extras import require
from batchpage.contrib.http import (
    PageEndpoint,
    PageRequest,
    Reply,
    StreamReply,
    http_error_reply,
)

require("starlette", extra="fastapi", what="batchpage.contrib.fastapi")

from starlette.exceptions import HTTPException  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response, StreamingResponse  # noqa: E402
from starlette.types import Receive, Scope, Send  # noqa: E402

__all__ = [
    "ClosingStreamingResponse",
    "http_error_response",
    "page_response",
    "render_page",
    "stream_response",
    "to_response",
    "to_streaming_response",
]


RawHeaders = tuple[tuple[bytes, bytes], ...]

#: Replies' headers as ASGI sends them, by the reply's headers: warm pages repeat theirs.
_raw_headers: dict[tuple[tuple[str, str], ...], tuple[RawHeaders, bool]] = {}
_RAW_HEADERS_SIZE = 256


def _encoded(headers: tuple[tuple[str, str], ...]) -> tuple[RawHeaders, bool]:
    """The headers lower-cased and encoded as Starlette does, and whether one is Content-Length."""
    found = _raw_headers.get(headers)
    if found is None:
        raw = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers)
        found = (raw, any(k == b"content-length" for k, _ in raw))
        if len(_raw_headers) >= _RAW_HEADERS_SIZE:
            _raw_headers.clear()
        _raw_headers[headers] = found
    return found


class _ReplyResponse(Response):
    """A response made of a reply as it is: what ``Response(...)`` would hold, built for less."""

    def __init__(self, reply: Reply) -> None:
        raw, sized = _encoded(reply.headers)
        self.status_code = reply.status
        self.background = None
        self.body = reply.body
        self.raw_headers = list(raw)  # middleware may change a response's headers in place
        if not sized and reply.status >= 200 and reply.status not in (204, 304):
            self.raw_headers.append((b"content-length", str(len(reply.body)).encode("latin-1")))


def to_response(reply: Reply) -> Response:
    """A Starlette response with the reply's status, headers (each of them) and body."""
    return _ReplyResponse(reply)


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that closes its iterator however the response ends.

    Starlette abandons the iterator when the client goes away; closing it
    here cancels the sources still running for that request at once,
    rather than whenever the generator is garbage-collected.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await aclose()


def to_streaming_response(reply: StreamReply) -> ClosingStreamingResponse:
    """A streaming response sending the reply's chunks as they come."""
    return ClosingStreamingResponse(
        reply.chunks, status_code=reply.status, headers=dict(reply.headers)
    )


def _query(request: Request) -> bytes:
    query: bytes = request.scope.get("query_string", b"")
    return query


def _if_none_match(request: Request) -> str | None:
    # Every line of the header, as one list (RFC 9110), not the first alone; Django joins too.
    # From the scope, as Starlette's Headers would read it, without building one.
    values = [v.decode("latin-1") for k, v in request.scope["headers"] if k == b"if-none-match"]
    return ", ".join(values) if values else None


async def page_response(
    endpoint: PageEndpoint, request: Request, *, user_id: str | None = None
) -> Response:
    """The whole page handler for ``user_id``: validate, fetch, answer 200/304/400/503."""
    reply = await endpoint.respond(
        _query(request), user_id=user_id, if_none_match=_if_none_match(request)
    )
    return to_response(reply)


def render_page(
    endpoint: PageEndpoint, page: PageResult, page_request: PageRequest, request: Request
) -> Response:
    """A page fetched by the caller, answered with every header (and 304 when it matches)."""
    reply = endpoint.render(page, page_request, if_none_match=_if_none_match(request))
    return to_response(reply)


async def stream_response(
    endpoint: PageEndpoint, request: Request, *, user_id: str | None = None
) -> Response:
    """The streaming handler for ``user_id``: NDJSON, a line per section as it completes.

    Awaited, like :func:`page_response` (a 400 is answered before any section).
    """
    reply = endpoint.open_stream(_query(request), user_id=user_id)
    if isinstance(reply, StreamReply):
        return to_streaming_response(reply)
    return to_response(reply)


async def http_error_response(request: Request, exc: Exception) -> Response:
    """The exception handler of Starlette's ``HTTPException`` (no route: 404, a wrong method: 405).

    Register it so those answers have the error shape of every other 4xx::

        app.add_exception_handler(HTTPException, http_error_response)
    """
    if not isinstance(exc, HTTPException):
        raise TypeError(f"http_error_response handles HTTPException, not {exc!r}")
    allow = (exc.headers or {}).get("Allow")
    return to_response(http_error_reply(exc.status_code, allow=allow))
