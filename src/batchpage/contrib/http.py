"""A batch page over HTTP, framework-neutral: query in, status, headers and bytes out.

Everything a web framework would make each user rewrite lives here, so that
the FastAPI and Django adapters are a few lines each and answer identically:

* the query (``limit``, ``sections``, ``userId``) is parsed and validated
  before anything of it reaches a cache key or a source; bad input is a
  :class:`RequestError`, answered ``400`` with ``{"error": {"field", "message"}}``,
  the shape of every 4xx (:func:`http_error_reply`: no route, a wrong method);
* ``Cache-Control``: anonymous pages are ``public`` with
  ``stale-while-revalidate`` (a CDN may keep them); personal pages are
  ``private, no-store``; a 503 is ``no-store`` with ``Retry-After``;
* ``ETag`` hashes the page's content (sections and errors, not the metadata
  that changes on every request), and ``If-None-Match`` gives ``304``;
* ``Server-Timing`` has one entry per section and the total;
* the streaming variant sends NDJSON, one line per section as it completes.

This module imports no web framework.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Final
from urllib.parse import parse_qsl

import attrs

from batchpage import (
    Aggregator,
    BatchpageError,
    PageResult,
    RequestContext,
    Rollout,
    Scope,
    SectionResult,
)

__all__ = [
    "DEFAULT_LIMIT",
    "JSON",
    "MAX_LIMIT",
    "MAX_USER_ID_LENGTH",
    "NDJSON",
    "PageEndpoint",
    "PageRequest",
    "Reply",
    "RequestError",
    "StreamReply",
    "error_reply",
    "http_error_reply",
    "if_none_match_matches",
    "json_reply",
    "page_etag",
    "parse_limit",
    "parse_query",
    "parse_sections",
    "parse_user_id",
    "rollout_reply",
    "server_timing",
]

DEFAULT_LIMIT: Final = 10
MAX_LIMIT: Final = 50
MAX_USER_ID_LENGTH: Final = 128
JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"

#: More fields than this is not a page request; parsing stops early.
_MAX_FIELDS = 16
_LIMIT = re.compile(r"[1-9][0-9]{0,2}")  # canonical: no sign, no leading zero, no '1.0'
_USER_ID = re.compile(r"[A-Za-z0-9_.@-]+")
_USER_ID_CHARS = "letters, digits, '_', '.', '@' and '-'"
_NO_STORE = "no-store"
_ETAG = re.compile(r'(?:W/)?"([^"]*)"')

Headers = tuple[tuple[str, str], ...]


class RequestError(BatchpageError, ValueError):
    """A query parameter is missing, malformed or out of range: answered ``400``.

    ``field`` is the parameter's wire name; ``message`` is safe to show and
    never echoes the offending value.
    """

    status_code: Final = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"field": self.field, "message": self.message}}


# -- replies ---------------------------------------------------------------


@attrs.frozen
class Reply:
    """A complete HTTP response: status, headers and body bytes."""

    status: int
    headers: Headers
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


@attrs.frozen(eq=False)
class StreamReply:
    """A streamed HTTP response; the framework sends ``chunks`` as they come.

    ``chunks`` is an async generator: whoever consumes it must close it
    (``contextlib.aclosing``), which cancels the sources still running.
    """

    status: int
    headers: Headers
    chunks: AsyncGenerator[bytes, None]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def json_reply(status: int, value: Any, *, cache_control: str = _NO_STORE) -> Reply:
    """``value`` as a JSON response."""
    body = _dumps(value)
    return Reply(
        status,
        (
            ("Content-Type", JSON),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache_control),
        ),
        body,
    )


def error_reply(error: RequestError) -> Reply:
    """The ``400`` answer to bad input: ``{"error": {"field": ..., "message": ...}}``."""
    return json_reply(error.status_code, error.to_dict())


#: What a 4xx that no page handler answered names: the path for a 404, the method for a 405.
_STATUS_ERRORS: Final = {
    404: ("path", "nothing is served at this path"),
    405: ("method", "this method is not allowed here"),
}


def http_error_reply(status: int, *, allow: str | None = None) -> Reply:
    """A 4xx the framework answers before any handler, in the same error shape.

    No route (``404``, the ``path``), a method the route does not take
    (``405``, the ``method``, with ``Allow`` when ``allow`` is given), or
    any other request the framework refused (the ``request``).
    """
    field, message = _STATUS_ERRORS.get(status, ("request", "the request was refused"))
    if status == 405 and allow:
        message = f"the method must be {allow}"
    reply = json_reply(status, {"error": {"field": field, "message": message}})
    if allow:
        return attrs.evolve(reply, headers=(*reply.headers, ("Allow", allow)))
    return reply


# -- parsing ---------------------------------------------------------------


def parse_query(query: str | bytes) -> dict[str, str]:
    """The query string's parameters, one value each, percent-decoded as UTF-8.

    A parameter given twice is an error (which value would count?), and so is
    a query that is not UTF-8 or has more than a handful of parameters.
    """
    if isinstance(query, bytes):
        try:
            query = query.decode("ascii")
        except UnicodeDecodeError:
            raise RequestError("query", "the query string must be ASCII") from None
    try:
        pairs = parse_qsl(
            query,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise RequestError("query", "the query string must be percent-encoded UTF-8") from None
    except ValueError:
        raise RequestError("query", f"at most {_MAX_FIELDS} parameters are allowed") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            field = name if _USER_ID.fullmatch(name) and len(name) <= 32 else "query"
            raise RequestError(field, f"{field} must be given once")
        params[name] = value
    return params


def parse_limit(
    value: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT
) -> int:
    """``limit``: missing gives ``default``; else a plain integer from 1 to ``maximum``."""
    if value is None:
        return default
    if _LIMIT.fullmatch(value) is None or not 1 <= int(value) <= maximum:
        raise RequestError("limit", f"limit must be an integer between 1 and {maximum}")
    return int(value)


def parse_user_id(value: str | None) -> str | None:
    """``userId``: missing is anonymous; else 1 to 128 safe characters.

    The safe set (no ``:``, ``*``, spaces or control characters) keeps ids
    readable in logs and cache keys; the cache escapes them anyway.
    """
    if value is None:
        return None
    if not value:
        raise RequestError("userId", "userId must not be empty")
    if len(value) > MAX_USER_ID_LENGTH:
        raise RequestError("userId", f"userId must be at most {MAX_USER_ID_LENGTH} characters")
    if _USER_ID.fullmatch(value) is None:
        raise RequestError("userId", f"userId may hold only {_USER_ID_CHARS}")
    return value


def parse_sections(value: str | None, known: Iterable[str]) -> tuple[str, ...] | None:
    """``sections``: a comma list of known names, each once; ``None`` means all.

    The result is in the page's order (``known``'s), whatever the query's.
    """
    if value is None:
        return None
    names = list(known)
    if not value:
        raise RequestError("sections", "sections must name at least one section")
    wanted = value.split(",")
    if len(set(wanted)) != len(wanted):
        raise RequestError("sections", "sections must not name a section twice")
    if not set(wanted) <= set(names):
        raise RequestError(
            "sections", f"sections must be a comma-separated list of: {', '.join(names)}"
        )
    return tuple(n for n in names if n in wanted)


@attrs.frozen
class PageRequest:
    """A validated page request: the context sources see, and the sections asked for."""

    context: RequestContext
    sections: tuple[str, ...] | None = None  #: ``None``: the whole page

    @property
    def user_id(self) -> str | None:
        return self.context.user_id


# -- headers ---------------------------------------------------------------


#: Recent pages' ETags by content. Warm pages reuse the cache's bytes objects,
#: whose hashes Python keeps, so a hit costs a tuple, not a digest of the page.
#: Bounded: at most this many pages' bytes are kept alive here.
_ETAG_MEMO_SIZE = 256
_etags: dict[tuple[object, ...], str] = {}


def page_etag(page: PageResult) -> str:
    """A weak ETag of the page's content: sections' bytes, errors and version.

    Weak, because the body also carries metadata (``generatedAt``, timings,
    cache statuses) that differs between two answers with the same content.
    Stable across processes and restarts (blake2b, not Python's ``hash``), so
    a CDN revalidates against any instance.
    """
    key = (page.version, *((n, r.encoded, r.error) for n, r in page.results.items()))
    etag = _etags.get(key)
    if etag is not None:
        return etag
    digest = hashlib.blake2b(page.version.encode(), digest_size=16)
    for name, result in page.results.items():
        encoded = result.encoded
        digest.update(b"\x00%b\x00%d\x00" % (name.encode(), len(encoded)))
        digest.update(encoded)
        error = result.error
        if error is not None:
            digest.update(b"\x01%b\x00%b\x00" % (error.code.encode(), error.message.encode()))
    etag = f'W/"{digest.hexdigest()}"'
    if len(_etags) >= _ETAG_MEMO_SIZE:
        _etags.clear()
    _etags[key] = etag
    return etag


def if_none_match_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 ``If-None-Match`` with weak comparison: ``*`` or any listed tag."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(f'"{m.group(1)}"' == wanted for m in _ETAG.finditer(header))


_timing_parts: dict[tuple[str, str], tuple[str, str]] = {}


def server_timing(page: PageResult) -> str:
    """``Server-Timing``: each section's time and cache status, then the total."""
    entries: list[str] = []
    last_ms, last_text = -1.0, ""
    for name, result in page.results.items():
        status = result.cache.value
        parts = _timing_parts.get((name, status))
        if parts is None:
            parts = (f"{name};dur=", f';desc="{status}"')
            if len(_timing_parts) < 10_000:
                _timing_parts[name, status] = parts
        ms = result.elapsed_ms
        if ms != last_ms:  # a warm page's sections share one lookup time
            last_ms, last_text = ms, f"{ms:.1f}"
        entries.append(parts[0] + last_text + parts[1])
    entries.append(f"total;dur={page.total_ms:.1f}")
    return ", ".join(entries)


# -- the page endpoint -----------------------------------------------------


def _check_count(value: int, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return value


class PageEndpoint:
    """One aggregator's page as HTTP: parse, fetch, render, stream.

    ``max_age`` and ``stale_while_revalidate`` (seconds) go into the
    ``Cache-Control`` of healthy anonymous pages; a page with a failed
    section is kept only ``partial_max_age`` seconds, so a CDN soon asks
    again; ``retry_after`` (seconds) goes with a 503.

    A page is *personal*, and never public, when it has a user id and asks
    for a section that is not global (a per-user section, or a custom scope,
    which may read the user id). An anonymous page, or a user's page of
    global sections only, is the same for everyone who sends that URL.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        default_limit: int = DEFAULT_LIMIT,
        max_limit: int = MAX_LIMIT,
        max_age: int = 60,
        stale_while_revalidate: int = 120,
        partial_max_age: int = 5,
        retry_after: int = 5,
    ) -> None:
        if not isinstance(aggregator, Aggregator):
            raise TypeError(f"aggregator must be an Aggregator, not {aggregator!r}")
        self.aggregator = aggregator
        self.max_limit = _check_count(max_limit, "max_limit", minimum=1)
        self.default_limit = _check_count(default_limit, "default_limit", minimum=1)
        if self.default_limit > self.max_limit:
            raise ValueError(
                f"default_limit must be at most max_limit ({max_limit}), got {default_limit!r}"
            )
        max_age = _check_count(max_age, "max_age", minimum=0)
        swr = _check_count(stale_while_revalidate, "stale_while_revalidate", minimum=0)
        partial = _check_count(partial_max_age, "partial_max_age", minimum=0)
        self.retry_after = _check_count(retry_after, "retry_after", minimum=0)
        self._public = f"public, max-age={max_age}, stale-while-revalidate={swr}"
        self._partial = f"public, max-age={partial}"
        self._personal: dict[tuple[str, ...] | None, bool] = {}
        # Valid query strings seen lately: parsing is most of a warm page's own cost.
        self._parsed: dict[str | bytes, PageRequest] = {}

    # -- requests -----------------------------------------------------------

    def parse(self, query: str | bytes) -> PageRequest:
        """Validate a page request's query string; raises :class:`RequestError`."""
        request = self._parsed.get(query)
        if request is None:
            request = self._parse(query)
            if len(self._parsed) >= 1024:  # bounded, whatever clients send
                self._parsed.clear()
            self._parsed[query] = request
        return request

    def _parse(self, query: str | bytes) -> PageRequest:
        params = parse_query(query)
        limit = parse_limit(params.get("limit"), default=self.default_limit, maximum=self.max_limit)
        sections = parse_sections(params.get("sections"), self.aggregator.sections)
        if sections is not None and len(sections) == len(self.aggregator.sections):
            sections = None  # one plan, one set of memoised keys for the whole page
        user_id = parse_user_id(params.get("userId"))
        return PageRequest(RequestContext(user_id=user_id, params={"limit": limit}), sections)

    def is_personal(self, request: PageRequest) -> bool:
        """Whether the page differs per user (then it is never publicly cacheable)."""
        if request.user_id is None:
            return False
        personal = self._personal.get(request.sections)
        if personal is None:
            plan = self.aggregator.plan(request.sections)
            personal = any(s.scope is not Scope.GLOBAL for s in plan)
            self._personal[request.sections] = personal
        return personal

    # -- whole pages --------------------------------------------------------

    async def respond(self, query: str | bytes, *, if_none_match: str | None = None) -> Reply:
        """Parse, fetch and render: the whole ``GET /page`` handler."""
        try:
            request = self.parse(query)
        except RequestError as error:
            return error_reply(error)
        page = await self.aggregator.fetch(request.context, sections=request.sections)
        return self.render(page, request, if_none_match=if_none_match)

    def cache_control(self, page: PageResult, request: PageRequest) -> str:
        if page.status_code != 200:
            return _NO_STORE
        if self.is_personal(request):
            return "private, no-store"
        if any(r.error is not None for r in page.results.values()):
            return self._partial
        return self._public

    def render(
        self, page: PageResult, request: PageRequest, *, if_none_match: str | None = None
    ) -> Reply:
        """The response for a fetched page: 200, 304 or 503, with every header."""
        status = page.status_code
        etag = page_etag(page)
        headers: list[tuple[str, str]] = [
            ("Cache-Control", self.cache_control(page, request)),
            ("ETag", etag),
            ("Server-Timing", server_timing(page)),
        ]
        if status == 200 and if_none_match_matches(if_none_match, etag):
            return Reply(304, tuple(headers))
        if status == 503:
            headers.append(("Retry-After", str(self.retry_after)))
        body = page.to_json()
        headers.append(("Content-Type", JSON))
        headers.append(("Content-Length", str(len(body))))
        return Reply(status, tuple(headers), body)

    # -- streaming ----------------------------------------------------------

    def open_stream(self, query: str | bytes) -> Reply | StreamReply:
        """The streaming handler: a 400 :class:`Reply`, or NDJSON as sections complete.

        The status of a stream is sent before any section is known, so it is
        always 200, and the stream is never cached; the last line carries
        the page's status, errors and metadata.
        """
        try:
            request = self.parse(query)
        except RequestError as error:
            return error_reply(error)
        headers = (
            ("Content-Type", NDJSON),
            ("Cache-Control", _NO_STORE),
            ("X-Accel-Buffering", "no"),  # proxies must pass each line on at once
        )
        return StreamReply(200, headers, self.ndjson(request))

    async def ndjson(self, request: PageRequest) -> AsyncGenerator[bytes, None]:
        """One line per section as it completes (:meth:`SectionResult.to_dict`), then
        ``{"errors", "metadata", "status"}``."""
        agg = self.aggregator
        start = time.perf_counter()
        results: dict[str, SectionResult] = {}
        stream = agg.stream(request.context, sections=request.sections)
        async with contextlib.aclosing(stream) as sections:
            async for result in sections:
                results[result.name] = result
                yield _dumps(result.to_dict()) + b"\n"
        plan = agg.plan(request.sections)
        page = PageResult(
            {s.name: results[s.name] for s in plan if s.name in results},
            version=agg.version,
            generated_at=time.time(),
            total_ms=(time.perf_counter() - start) * 1000,
            required=frozenset(s.name for s in plan if s.required),
        )
        last = {
            "errors": [e.to_dict() for e in page.errors],
            "metadata": page.metadata,
            "status": page.status_code,
        }
        yield _dumps(last) + b"\n"


# -- the rollout -----------------------------------------------------------


def rollout_reply(rollout: Rollout, query: str | bytes) -> Reply:
    """``GET /rollout?userId=...``: which path this user should take, and why.

    The body is ``{"userId", "useBatch", "percentage", "enabled"}`` and the
    ``X-Batch-Rollout`` header says ``batch`` or ``legacy``.
    """
    try:
        user_id = parse_user_id(parse_query(query).get("userId"))
    except RequestError as error:
        return error_reply(error)
    use_batch = rollout.use_batch(user_id)
    reply = json_reply(
        200,
        {
            "userId": user_id,
            "useBatch": use_batch,
            "percentage": rollout.percentage,
            "enabled": rollout.enabled,
        },
        cache_control="private, no-store",
    )
    return attrs.evolve(
        reply, headers=(*reply.headers, ("X-Batch-Rollout", "batch" if use_batch else "legacy"))
    )
