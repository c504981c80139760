"""Django's session middleware, run on the event loop: no worker thread per request.

Django's ``SessionMiddleware`` is synchronous. Under ASGI, Django runs a
synchronous middleware's ``process_request`` and ``process_response`` with
``sync_to_async``: two hops to a worker thread on every request, whether
the view reads the session or not. The example keeps its sessions in
signed cookies (``SESSION_ENGINE = "...signed_cookies"``), whose loading
and saving are a signature and a JSON document, with no I/O: this
subclass runs the same two methods on the event loop instead. On the
machine the benchmarks ran on, that saved about a fifth of a bare Django
request (``benchmarks/profile_http.py --app django``).

A session engine that does I/O (the database, the cache) must not run on
the event loop: with any other engine this middleware refuses to start.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings  # type: ignore[import-untyped]  # Django ships no types
from django.contrib.sessions import middleware  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]

NO_IO_ENGINE = "django.contrib.sessions.backends.signed_cookies"


class SessionMiddleware(middleware.SessionMiddleware):  # type: ignore[misc]  # an Any base
    """``django.contrib.sessions.middleware.SessionMiddleware``, on the loop under ASGI."""

    def __init__(self, get_response: Any) -> None:
        if settings.SESSION_ENGINE != NO_IO_ENGINE:
            raise ImproperlyConfigured(
                f"{__name__}.SessionMiddleware runs the session engine on the event loop: "
                f"SESSION_ENGINE must be {NO_IO_ENGINE!r} (no I/O), not {settings.SESSION_ENGINE!r}"
            )
        super().__init__(get_response)

    async def __acall__(self, request: Any) -> Any:
        # What MiddlewareMixin.__acall__ does, without sync_to_async: nothing here waits.
        response = self.process_request(request)
        response = response or await self.get_response(request)
        return self.process_response(request, response)
