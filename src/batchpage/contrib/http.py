"""A batch page over HTTP, framework-neutral: query in, status, headers and bytes out.

Everything a web framework would make each user rewrite lives here, so that
the FastAPI and Django adapters are a few lines each and answer identically:

* the query is parsed and validated against the parameters the application
  declares (:class:`Param`: its wire name, its parser, its default), and
  ``sections=``, before anything of it reaches a cache key or a source; bad
  input is an :class:`~batchpage.InvalidParameter`, answered ``400`` with
  ``{"error": {"field", "message"}}``, the shape of every 4xx
  (:func:`http_error_reply`: no route, a wrong method);
* who the user is comes from the application (its authentication: a FastAPI
  dependency, Django's session), passed in as ``user_id``; never from the
  query;
* ``Cache-Control``: anonymous pages are ``public`` with
  ``stale-while-revalidate`` (a CDN may keep them); personal pages are
  ``private, no-store``; every page ``Vary``s on what identifies the user
  (``Cookie`` by default); a 503 is ``no-store`` with ``Retry-After``;
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
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

import attrs

from batchpage import (
    Aggregator,
    InvalidParameter,
    PageResult,
    RequestContext,
    Scope,
    SectionResult,
)
from batchpage._result import WarmPage  # a page read from a memory view: see _render_key

__all__ = [
    "JSON",
    "NDJSON",
    "PageEndpoint",
    "PageRequest",
    "Param",
    "Reply",
    "StreamReply",
    "boolean",
    "error_reply",
    "http_error_reply",
    "if_none_match_matches",
    "integer",
    "json_reply",
    "one_of",
    "page_etag",
    "parse_query",
    "parse_sections",
    "server_timing",
    "text",
]

#: The ``Content-Type`` of a page and of every error reply.
JSON: Final = "application/json"
#: The ``Content-Type`` of a stream: one JSON document per line.
NDJSON: Final = "application/x-ndjson"

#: More fields than this is not a page request; parsing stops early.
_MAX_FIELDS = 16
_INTEGER = re.compile(r"-?[1-9][0-9]{0,17}|0")  # canonical: no '+', no leading zero, no '1.0'
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,32}")
_NO_STORE = "no-store"
_ETAG = re.compile(r'(?:W/)?"([^"]*)"')

Headers = tuple[tuple[str, str], ...]


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


def error_reply(error: InvalidParameter) -> Reply:
    """The ``400`` answer to bad input: ``{"error": {"field": ..., "message": ...}}``."""
    return json_reply(400, error.to_dict())


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
            raise InvalidParameter("query", "the query string must be ASCII") from None
    try:
        pairs = parse_qsl(
            query,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise InvalidParameter("query", "the query string must be percent-encoded UTF-8") from None
    except ValueError:
        raise InvalidParameter("query", f"at most {_MAX_FIELDS} parameters are allowed") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            field = name if _NAME.fullmatch(name) else "query"
            raise InvalidParameter(field, f"{field} must be given once")
        params[name] = value
    return params


# -- the application's parameters ---------------------------------------------

Parser = Callable[[str], Any]


def integer(minimum: int, maximum: int) -> Parser:
    """A plain integer from ``minimum`` to ``maximum`` (no sign games, no ``1.0``)."""
    if minimum > maximum:
        raise ValueError(f"minimum must be at most maximum, got {minimum!r} > {maximum!r}")

    def parse(raw: str) -> int:
        if _INTEGER.fullmatch(raw) is None or not minimum <= int(raw) <= maximum:
            raise ValueError(f"must be an integer between {minimum} and {maximum}")
        return int(raw)

    return parse


def one_of(*choices: str) -> Parser:
    """One of a fixed set of words (a locale, a region, a variant)."""
    if not choices:
        raise ValueError("one_of needs at least one choice")
    allowed = frozenset(choices)
    listed = ", ".join(choices)

    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of: {listed}")
        return raw

    return parse


def boolean() -> Parser:
    """``true`` or ``false`` (a feature flag), as a ``bool``."""

    def parse(raw: str) -> bool:
        if raw == "true":
            return True
        if raw == "false":
            return False
        raise ValueError("must be true or false")

    return parse


def text(*, max_length: int = 64, pattern: str = r"[A-Za-z0-9_.,-]+") -> Parser:
    """Free text of safe characters, at most ``max_length`` long (a search term, a tag)."""
    compiled = re.compile(pattern)

    def parse(raw: str) -> str:
        if not raw or len(raw) > max_length or compiled.fullmatch(raw) is None:
            raise ValueError(f"must be 1 to {max_length} characters matching {pattern}")
        return raw

    return parse


_ABSENT: Final = object()


@attrs.frozen
class Param:
    """A query parameter the application declares: its wire name, parser and default.

    ``parse(raw)`` turns the query's text into the value sources receive in
    ``RequestContext.params`` (and so in cache keys, typed); it raises
    ``ValueError`` with a client-safe message, answered ``400`` naming the
    field. A missing parameter takes ``default``; without one it is required.
    ``key`` is its name in ``params`` (default: the wire name)::

        Param("limit", integer(1, 50), default=10)
        Param("locale", one_of("en", "fr", "de"), default="en")
    """

    name: str = attrs.field()
    parse: Parser
    default: Any = _ABSENT
    key: str = attrs.field()

    @name.validator
    def _check_name(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or _NAME.fullmatch(value) is None:
            raise ValueError(
                f"name must be 1 to 32 letters, digits, '_', '.', '@' or '-', got {value!r}"
            )

    @key.default
    def _key(self) -> str:
        return self.name

    def value(self, query: dict[str, str]) -> Any:
        """This parameter's value in a parsed query; ``InvalidParameter`` if it is bad."""
        raw = query.get(self.name)
        if raw is None:
            if self.default is _ABSENT:
                raise InvalidParameter(self.name, f"{self.name} is required")
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise InvalidParameter(self.name, f"{self.name} {exc}") from None


def parse_sections(value: str | None, known: Iterable[str]) -> tuple[str, ...] | None:
    """``sections``: a comma list of known names, each once; ``None`` means all.

    The result is in the page's order (``known``'s), whatever the query's.
    """
    if value is None:
        return None
    names = list(known)
    if not value:
        raise InvalidParameter("sections", "sections must name at least one section")
    wanted = value.split(",")
    if len(set(wanted)) != len(wanted):
        raise InvalidParameter("sections", "sections must not name a section twice")
    if not set(wanted) <= set(names):
        raise InvalidParameter(
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
        """Who asked (``None``: anonymous), as the application said."""
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


# -- the render cache ------------------------------------------------------


class _Rendered:
    """A rendered page: its reply, its ETag, and how many headers a 304 keeps."""

    __slots__ = ("_not_modified", "bare", "etag", "reply")

    def __init__(self, reply: Reply, etag: str, bare: int) -> None:
        self.reply = reply
        self.etag = etag
        self.bare = bare
        self._not_modified: Reply | None = None

    def not_modified(self) -> Reply:
        """The 304: the 200's headers up to (not including) its body's."""
        if self._not_modified is None:
            self._not_modified = Reply(304, self.reply.headers[: self.bare])
        return self._not_modified


RenderKey = tuple[object, ...]


def _render_key(page: PageResult, personal: bool) -> RenderKey:
    """Everything :meth:`PageEndpoint._render` reads of a page, as the wire shows it.

    Times as the body writes them (``repr(round(ms, 1))``, which also fixes
    ``Server-Timing``'s ``f"{ms:.1f}"``), ``generatedAt`` to its second; the
    sections' bytes are compared as bytes (for a warm page, the very object
    the cache holds: a cheap comparison).
    """
    warm = page._warm
    if warm is not None:
        # Answered from a memory view: the view fixes the sections' bytes, the
        # version and the status (200, every section a HIT); each section's
        # time is the page's.
        return (personal, warm, int(page.generated_at), repr(round(page.total_ms, 1)))
    key: list[object] = [
        personal,
        page.status_code,
        page.version,
        int(page.generated_at),
        repr(round(page.total_ms, 1)),
    ]
    last_ms, last = -1.0, ""
    for name, result in page.results.items():
        ms = result.elapsed_ms
        if ms != last_ms:  # a warm page's sections share one lookup time
            last_ms, last = ms, repr(round(ms, 1))
        key += (name, result.encoded, result.cache, last, result.error)
    return tuple(key)


class _RenderCache:
    """Replies by render key, oldest out first, within a budget of bytes kept alive."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[RenderKey, tuple[_Rendered, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: RenderKey) -> _Rendered | None:
        found = self._entries.get(key)
        return None if found is None else found[0]

    def put(self, key: RenderKey, rendered: _Rendered) -> None:
        # The body, and the sections' bytes the key holds (the cache may drop them first).
        size = len(rendered.reply.body) + sum(
            len(k) if isinstance(k, bytes) else sum(map(len, k.payloads))
            for k in key
            if isinstance(k, bytes | WarmPage)
        )
        if size > self.max_bytes:
            return
        entries = self._entries
        while entries and self.bytes + size > self.max_bytes:
            oldest = next(iter(entries))
            self.bytes -= entries.pop(oldest)[1]
        previous = entries.pop(key, None)
        if previous is not None:
            self.bytes -= previous[1]
        entries[key] = (rendered, size)
        self.bytes += size


# -- the page endpoint -----------------------------------------------------


def _check_count(value: int, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return value


class PageEndpoint:
    """One aggregator's page as HTTP: parse, fetch, render, stream.

    ``params`` are the query parameters the application declares
    (:class:`Param`); ``sections_param`` names the one that picks sections
    (``None``: the whole page, always). Who the user is, the application
    says: each handler takes ``user_id`` from its own authentication.

    ``max_age`` and ``stale_while_revalidate`` (seconds) go into the
    ``Cache-Control`` of healthy anonymous pages; a page with a failed
    section is kept only ``partial_max_age`` seconds, so a CDN soon asks
    again; ``retry_after`` (seconds) goes with a 503. ``vary`` names the
    request headers that identify the user (``Cookie`` by default), so a
    shared cache never answers one user with another's page.

    A page is *personal*, and never public, when it has a user id and asks
    for a section that is not global (a per-user section, or a custom scope,
    which may read the user id). An anonymous page, or a user's page of
    global sections only, is the same for everyone who sends that URL.

    Warm pages repeat: :meth:`render` keeps the last replies it made, keyed
    by everything a reply is made of (each section's stored bytes, cache
    status, error and time as rounded on the wire, the page's status,
    version, total time as rounded and ``generatedAt`` second, and whether
    the page is personal), and answers an identical page with the identical
    reply, without joining the body, hashing the ``ETag`` or formatting
    ``Server-Timing`` again. Whatever changes the page (a fill, a stale or
    expired entry, an invalidation, another user's or another query's
    sections, the next second) changes the key, so a reply is never
    reused for a page it was not made for. ``render_cache_bytes`` bounds
    the bytes those replies keep alive (their bodies and the section bytes
    in their keys); ``0`` turns the memo off.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        params: Sequence[Param] = (),
        sections_param: str | None = "sections",
        vary: str | None = "Cookie",
        max_age: int = 60,
        stale_while_revalidate: int = 120,
        partial_max_age: int = 5,
        retry_after: int = 5,
        render_cache_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if not isinstance(aggregator, Aggregator):
            raise TypeError(f"aggregator must be an Aggregator, not {aggregator!r}")
        self.aggregator = aggregator
        self.params = tuple(params)
        for param in self.params:
            if not isinstance(param, Param):
                raise TypeError(f"params must be Param objects, not {param!r}")
        names = [p.name for p in self.params] + ([sections_param] if sections_param else [])
        keys = [p.key for p in self.params]
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise ValueError(f"params must have distinct names and keys, got {names}")
        self.sections_param = sections_param
        max_age = _check_count(max_age, "max_age", minimum=0)
        swr = _check_count(stale_while_revalidate, "stale_while_revalidate", minimum=0)
        partial = _check_count(partial_max_age, "partial_max_age", minimum=0)
        self.retry_after = _check_count(retry_after, "retry_after", minimum=0)
        self._public = f"public, max-age={max_age}, stale-while-revalidate={swr}"
        self._partial = f"public, max-age={partial}"
        self._vary: tuple[tuple[str, str], ...] = (("Vary", vary),) if vary else ()
        self._personal: dict[tuple[str, ...] | None, bool] = {}
        # Valid requests seen lately: parsing is most of a warm page's own cost.
        self._parsed: dict[tuple[str | bytes, str | None], PageRequest] = {}
        self._renders = _RenderCache(
            _check_count(render_cache_bytes, "render_cache_bytes", minimum=0)
        )

    # -- requests -----------------------------------------------------------

    def parse(self, query: str | bytes, *, user_id: str | None = None) -> PageRequest:
        """Validate a page request's query string for ``user_id`` (``None``: anonymous).

        Raises :class:`~batchpage.InvalidParameter` naming the bad field.
        """
        memo = (query, user_id)
        request = self._parsed.get(memo)
        if request is None:
            request = self._parse(query, user_id)
            if len(self._parsed) >= 1024:  # bounded, whatever clients send
                self._parsed.clear()
            self._parsed[memo] = request
        return request

    def _parse(self, query: str | bytes, user_id: str | None) -> PageRequest:
        raw = parse_query(query)
        values = {p.key: p.value(raw) for p in self.params}
        sections = None
        if self.sections_param is not None:
            sections = parse_sections(raw.get(self.sections_param), self.aggregator.sections)
            if sections is not None and len(sections) == len(self.aggregator.sections):
                sections = None  # one plan, one set of memoised keys for the whole page
        return PageRequest(RequestContext(user_id=user_id, params=values), sections)

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

    async def respond(
        self,
        query: str | bytes,
        *,
        user_id: str | None = None,
        if_none_match: str | None = None,
    ) -> Reply:
        """Parse, fetch and render: the whole ``GET /page`` handler, for ``user_id``."""
        try:
            request = self.parse(query, user_id=user_id)
        except InvalidParameter as error:
            return error_reply(error)
        page = await self.aggregator.fetch(request.context, sections=request.sections)
        return self.render(page, request, if_none_match=if_none_match)

    def cache_control(self, page: PageResult, request: PageRequest) -> str:
        """``Cache-Control`` for a page: public and long when a CDN may share it, else less.

        A 503 is ``no-store``; a personal page ``private, no-store``; a page
        with a failed section public for ``partial_max_age`` seconds only.
        """
        return self._cache_control(page, self.is_personal(request))

    def _cache_control(self, page: PageResult, personal: bool) -> str:
        if page.status_code != 200:
            return _NO_STORE
        if personal:
            return "private, no-store"
        if any(r.error is not None for r in page.results.values()):
            return self._partial
        return self._public

    def render(
        self, page: PageResult, request: PageRequest, *, if_none_match: str | None = None
    ) -> Reply:
        """The response for a fetched page: 200, 304 or 503, with every header.

        A page identical to one rendered lately gets that reply again (see
        the class's docs): the same bytes a new rendering would make.
        """
        personal = self.is_personal(request)
        key = _render_key(page, personal)
        rendered = self._renders.get(key)
        if rendered is None:
            rendered = self._render(page, personal)
            self._renders.put(key, rendered)
        reply = rendered.reply
        if reply.status == 200 and if_none_match_matches(if_none_match, rendered.etag):
            return rendered.not_modified()
        return reply

    def _render(self, page: PageResult, personal: bool) -> _Rendered:
        status = page.status_code
        etag = page_etag(page)
        headers: list[tuple[str, str]] = [
            ("Cache-Control", self._cache_control(page, personal)),
            ("ETag", etag),
            ("Server-Timing", server_timing(page)),
            *self._vary,
        ]
        bare = len(headers)  # what a 304 says
        if status == 503:
            headers.append(("Retry-After", str(self.retry_after)))
        body = page.to_json()
        headers.append(("Content-Type", JSON))
        headers.append(("Content-Length", str(len(body))))
        return _Rendered(Reply(status, tuple(headers), body), etag, bare)

    # -- streaming ----------------------------------------------------------

    def open_stream(self, query: str | bytes, *, user_id: str | None = None) -> Reply | StreamReply:
        """The streaming handler: a 400 :class:`Reply`, or NDJSON as sections complete.

        The status of a stream is sent before any section is known, so it is
        always 200, and the stream is never cached; the last line carries
        the page's status, errors and metadata.
        """
        try:
            request = self.parse(query, user_id=user_id)
        except InvalidParameter as error:
            return error_reply(error)
        headers = (
            ("Content-Type", NDJSON),
            ("Cache-Control", _NO_STORE),
            ("X-Accel-Buffering", "no"),  # proxies must pass each line on at once
            *self._vary,
        )
        return StreamReply(200, headers, self.ndjson(request))

    async def ndjson(self, request: PageRequest) -> AsyncGenerator[bytes, None]:
        """One line per section as it completes (:meth:`~batchpage.SectionResult.to_json`: the
        section's stored JSON, not re-encoded), then ``{"errors", "metadata", "status"}``."""
        agg = self.aggregator
        start = time.perf_counter()
        results: dict[str, SectionResult] = {}
        stream = agg.stream(request.context, sections=request.sections)
        async with contextlib.aclosing(stream) as sections:
            async for result in sections:
                results[result.name] = result
                yield result.to_json() + b"\n"
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
