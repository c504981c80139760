"""Django glue: a batch page from async views, and the lifespan Django's ASGI lacks.

Thin wrappers over :mod:`batchpage.contrib.http`, which does the parsing,
headers and streaming, so a Django view answers exactly as the FastAPI one::

    async def homepage(request: HttpRequest) -> HttpResponseBase:
        user = request.session.get("userId")  # your own authentication: request.user, ...
        return await page_response(lifespan_state(request).endpoint, request, user_id=user)

Who the user is comes from the application (Django's session or
``request.user``); a query parameter is never an identity.

The aggregator owns background tasks and must outlive requests; Django's
ASGI handler refuses the ``lifespan`` protocol that would give it a
lifetime. :class:`Lifespan` wraps the Django ASGI application, runs an async
context manager from server start-up to shutdown (in one task, as anyio's
task groups require), and hands what it yields to every request; where the
server would end the process without a shutdown (hypercorn's workers), it
exits the context first.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, NoReturn

import anyio

from batchpage._extras import require

require("django", extra="django", what="batchpage.contrib.django")

# Django ships no type information (django-stubs is not a dependency): its
# classes are Any here, and subclassing them is marked below.
from django.http import (  # type: ignore[import-untyped]  # noqa: E402
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    StreamingHttpResponse,
)

from batchpage import InvalidParameter, PageResult  # noqa: E402
from batchpage.contrib.http import (  # noqa: E402
    PageEndpoint,
    PageRequest,
    Reply,
    StreamReply,
    error_reply,
    http_error_reply,
)

__all__ = [
    "ClosingStreamingHttpResponse",
    "Lifespan",
    "error_view",
    "lifespan_state",
    "page_response",
    "render_page",
    "stream_response",
    "to_response",
    "to_streaming_response",
]

logger = logging.getLogger("batchpage.contrib.django")

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]

STATE_KEY = "batchpage"
#: Seconds between two checks that a worker's master process still lives.
PARENT_POLL: Final = 0.5


def to_response(reply: Reply) -> HttpResponse:
    """A Django response with the reply's status, headers and body."""
    headers = dict(reply.headers)
    if reply.status == 304:
        return HttpResponseNotModified(headers=headers)
    return HttpResponse(reply.body, status=reply.status, headers=headers)


class ClosingStreamingHttpResponse(StreamingHttpResponse):  # type: ignore[misc]  # Any base
    """A streaming response whose async iterator is closed however the response ends.

    Django closes the wrapper it iterates, not the iterator inside it; closing
    ours cancels the sources still running for that request at once.
    """

    def __init__(self, chunks: AsyncIterator[bytes], **kwargs: Any) -> None:
        self._chunks = chunks
        super().__init__(chunks, **kwargs)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._chunks
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()


def to_streaming_response(reply: StreamReply) -> ClosingStreamingHttpResponse:
    """A streaming response sending the reply's chunks as they come."""
    response = ClosingStreamingHttpResponse(reply.chunks, status=reply.status)
    for name, value in reply.headers:
        response[name] = value
    return response


def _query(request: HttpRequest) -> str | bytes:
    # Under ASGI, the raw bytes, as the FastAPI adapter reads them: both judge the same
    # input (Django's QUERY_STRING is those bytes decoded, non-ASCII and all).
    scope = getattr(request, "scope", None)
    if scope is not None:
        raw: bytes = scope.get("query_string", b"")
        return raw
    query: str = request.META.get("QUERY_STRING", "")
    return query


def _if_none_match(request: HttpRequest) -> str | None:
    # What request.headers.get("If-None-Match") reads, without building every header's entry.
    value: str | None = request.META.get("HTTP_IF_NONE_MATCH")
    return value


async def page_response(
    endpoint: PageEndpoint, request: HttpRequest, *, user_id: str | None = None
) -> HttpResponse:
    """The whole page view for ``user_id``: validate, fetch, answer 200/304/400/503."""
    reply = await endpoint.respond(
        _query(request), user_id=user_id, if_none_match=_if_none_match(request)
    )
    return to_response(reply)


def render_page(
    endpoint: PageEndpoint, page: PageResult, page_request: PageRequest, request: HttpRequest
) -> HttpResponse:
    """A page fetched by the caller, answered with every header (and 304 when it matches)."""
    return to_response(endpoint.render(page, page_request, if_none_match=_if_none_match(request)))


async def stream_response(
    endpoint: PageEndpoint, request: HttpRequest, *, user_id: str | None = None
) -> HttpResponse | ClosingStreamingHttpResponse:
    """The streaming view for ``user_id``: NDJSON, a line per section as it completes.

    Awaited, like :func:`page_response` (a 400 is answered before any section).
    """
    reply = endpoint.open_stream(_query(request), user_id=user_id)
    if isinstance(reply, StreamReply):
        return to_streaming_response(reply)
    return to_response(reply)


def error_view(status: int, *, allow: str | None = None) -> Callable[..., HttpResponse]:
    """An error view: the one JSON error shape instead of Django's HTML page.

    In the URLconf::

        handler400 = error_view(400)  # a request Django refused (SuspiciousOperation)
        handler404 = error_view(404)  # no route

    and, for a method a view does not take, ``error_view(405, allow="GET")(request)``
    (with the ``Allow`` header). The page views answer any method they are
    routed: route only GET to them.
    """

    def view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        return to_response(http_error_reply(status, allow=allow))

    return view


# -- lifespan --------------------------------------------------------------


class Lifespan:
    """An ASGI application: ``app`` plus a lifespan that runs ``context``.

    On ``lifespan.startup`` it enters ``context()``; what that yields is put
    in every HTTP request's ``scope["state"][state_key]`` (read it with
    :func:`lifespan_state`); on ``lifespan.shutdown`` it exits. Run it under
    an ASGI server that speaks the lifespan protocol (uvicorn, hypercorn).

    A query string that is not UTF-8, which Django would refuse with an empty
    HTML 400, gets the adapter's JSON 400 (field ``query``) instead.

    Some servers end a process without a ``lifespan.shutdown``: hypercorn's
    worker processes leave SIGTERM unhandled (they wait for their master's
    word), so a SIGTERM to the process group kills them outright, and when
    the master is SIGKILLed they serve on, orphaned. What the context started
    (child processes above all) would outlive them. So, with
    ``guard_process`` (the default) and SIGTERM unhandled in this process when
    the lifespan starts, a SIGTERM, or the death of the multiprocessing parent,
    exits the context and then ends the process with SIGTERM, as asked.
    Where the server handles SIGTERM itself (uvicorn, hypercorn without
    workers), nothing changes.
    """

    def __init__(
        self,
        app: ASGIApp,
        context: Callable[[], AbstractAsyncContextManager[Any]],
        *,
        state_key: str = STATE_KEY,
        guard_process: bool = True,
    ) -> None:
        self.app = app
        self.context = context
        self.state_key = state_key
        self.guard_process = guard_process
        self._state: dict[str, Any] | None = None

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and not _is_utf8(scope.get("query_string", b"")):
            # Django refuses it before any view, with an empty text/html 400.
            error = InvalidParameter("query", "the query string must be ASCII")
            await _send_reply(send, error_reply(error))
            return
        if self._state is not None and scope["type"] == "http":
            scope = {**scope, "state": {**scope.get("state", {}), **self._state}}
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        started = False
        ended_by: str | None = None
        try:
            async with self.context() as value:
                self._state = {self.state_key: value}
                await send({"type": "lifespan.startup.complete"})
                started = True
                ended_by = await _until_shutdown(receive, guard=self.guard_process)
                self._state = None
        except Exception as exc:
            logger.exception("lifespan %s failed", "shutdown" if started else "startup")
            if ended_by is None:
                failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
                await send({"type": failed, "message": type(exc).__name__})
                return
        finally:
            self._state = None
        if ended_by is not None:
            _end_process(ended_by)
        await send({"type": "lifespan.shutdown.complete"})


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


async def _send_reply(send: ASGISend, reply: Reply) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _until_shutdown(receive: ASGIReceive, *, guard: bool) -> str | None:
    """Wait for ``lifespan.shutdown`` and return None.

    With ``guard``, where SIGTERM is unhandled, SIGTERM or the death of the
    multiprocessing parent ends the wait too, and the reason is returned.
    """
    ended_by: str | None = None
    async with anyio.create_task_group() as tg:

        def end(reason: str | None) -> None:
            nonlocal ended_by
            if not tg.cancel_scope.cancel_called:
                ended_by = reason
                tg.cancel_scope.cancel()

        async def shutdown() -> None:
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            end(None)

        async def sigterm() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    end("SIGTERM")

        async def orphaned(parent: multiprocessing.process.BaseProcess) -> None:
            # A poll, not a wait on parent.sentinel: anyio.wait_readable needs anyio 4.7.
            while parent.is_alive():  # noqa: ASYNC110 (nothing to wait on: see above)
                await anyio.sleep(PARENT_POLL)
            end(f"the parent process {parent.pid} died")

        tg.start_soon(shutdown)
        if guard and _sigterm_unhandled():
            tg.start_soon(sigterm)
            parent = multiprocessing.parent_process()
            if parent is not None:
                tg.start_soon(orphaned, parent)
    return ended_by


def _sigterm_unhandled() -> bool:
    """SIGTERM would kill this process outright (and a handler can be installed here)."""
    return (
        sys.platform != "win32"
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )


def _end_process(reason: str) -> NoReturn:
    """End the process by SIGTERM, as the server would have without the guard."""
    logger.warning("%s: the lifespan's context is exited; ending the process", reason)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)  # not reached: the signal is delivered before kill returns


def lifespan_state(request: HttpRequest, key: str = STATE_KEY) -> Any:
    """What :class:`Lifespan`'s context yielded, from a request it served."""
    scope = getattr(request, "scope", None) or {}
    state = scope.get("state") or {}
    if key not in state:
        raise RuntimeError(
            f"no {key!r} in the request's lifespan state: serve the app wrapped in "
            "batchpage.contrib.django.Lifespan under an ASGI server with lifespan on"
        )
    return state[key]
