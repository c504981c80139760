"""A page's outcome: per-section results, errors, metadata, and the HTTP status.

Every section value is held as the JSON bytes its serializer wrote (or the
cache stored): :meth:`PageResult.to_json` joins those bytes into the page
without decoding them, which is what keeps a warm page cheap.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from ._errors import SectionError
from ._view import View

NULL = b"null"


class CacheStatus(enum.StrEnum):
    """Where a section's value came from; ``metadata.cache`` on the wire."""

    HIT = "HIT"  #: fresh from a cache layer
    STALE = "STALE"  #: past fresh, served at once while a refresh runs in the background
    MISS = "MISS"  #: fetched from the source (now cached)
    STALE_IF_ERROR = "STALE_IF_ERROR"  #: the source failed; a stale entry stands in
    BYPASS = "BYPASS"  #: the section is not cached


class SectionResult:
    """One section of a page: its encoded value, error, cache status and time."""

    __slots__ = ("_decode", "cache", "elapsed_ms", "encoded", "error", "name", "stand_in")

    def __init__(
        self,
        name: str,
        encoded: bytes,
        cache: CacheStatus,
        elapsed_ms: float,
        error: SectionError | None = None,
        stand_in: bool = False,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> None:
        self.name = name
        self.encoded = encoded
        self.cache = cache
        self.elapsed_ms = elapsed_ms
        self.error = error
        #: True when the value is a fallback or a stale entry standing in for a failure.
        self.stand_in = stand_in
        self._decode = decode

    @property
    def value(self) -> Any:
        """The section's value, decoded from its JSON bytes."""
        return self._decode(self.encoded)

    @property
    def failed(self) -> bool:
        """The section has an error, whether or not something stands in for it."""
        return self.error is not None

    @property
    def unavailable(self) -> bool:
        """Failed, and nothing (fallback or stale value) stands in."""
        return self.error is not None and not self.stand_in

    def to_dict(self) -> dict[str, Any]:
        """The NDJSON line of a streamed section."""
        return {
            "section": self.name,
            "data": self.value,
            "error": None if self.error is None else self.error.to_dict(),
            "cache": self.cache.value,
            "timingMs": round(self.elapsed_ms, 1),
        }

    def to_json(self) -> bytes:
        """:meth:`to_dict` as bytes, with the section's stored JSON as it is.

        Not decoded and encoded again: a value such as an exact decimal keeps
        every digit, as it does in :meth:`PageResult.to_json`.
        """
        error = b"null" if self.error is None else _compact(self.error.to_dict())
        # Section names are validated to need no JSON escaping.
        return b"".join(
            (
                b'{"section":"',
                self.name.encode(),
                b'","data":',
                self.encoded,
                b',"error":',
                error,
                b',"cache":"',
                self.cache.value.encode(),
                b'","timingMs":',
                _ms(self.elapsed_ms).encode(),
                b"}",
            )
        )

    def __repr__(self) -> str:
        return (
            f"SectionResult({self.name!r}, cache={self.cache.value}, "
            f"error={self.error!r}, elapsed_ms={self.elapsed_ms:.1f})"
        )


_iso_memo: tuple[int, str] = (0, "")


def _iso_utc(epoch: float) -> str:
    # Formatting a timestamp costs more than the rest of a warm page; a page
    # per second shares one string.
    global _iso_memo
    whole = int(epoch)
    if _iso_memo[0] != whole:
        _iso_memo = (whole, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole)))
    return _iso_memo[1]


# Per section name, the bytes and text fragments of the page that never change.
_fragments: dict[str, tuple[bytes, dict[CacheStatus, str]]] = {}


def _fragment(name: str) -> tuple[bytes, dict[CacheStatus, str]]:
    frag = _fragments.get(name)
    if frag is None:
        # Section names are validated to need no JSON escaping.
        frag = (f'"{name}":'.encode(), {s: f'"{name}":"{s.value}"' for s in CacheStatus})
        if len(_fragments) < 10_000:
            _fragments[name] = frag
    return frag


_new = object.__new__


def _ms(ms: float) -> str:
    # A JSON number with one decimal. ``f"{x:.1f}"`` rounds as ``round(x, 1)``
    # does and costs a third of ``repr(round(x, 1))``.
    return f"{ms:.1f}"


_NO_BODY: tuple[int, str, str, bytes] = (-1, "", "", b"")


class WarmPage(View):
    """A page whose every section is a fresh entry in memory, built once and served many times.

    It holds the entries' bytes and the fixed parts of the page's JSON; what
    changes per request (the lookup's time, ``generatedAt``, ``totalMs``) is
    filled in by :meth:`to_json`, which keeps the last body it wrote (within
    the memory cache's budget for such bodies, 1 MiB for all its views): a
    hot page asked for many times a second is written once per second and
    per distinct timing. A :class:`MemoryCache` keeps it while none of its
    entries changes; ``until`` is when the first of them stops being fresh
    or leaves memory, after which the aggregator reads them again.
    """

    __slots__ = (
        "_instant",
        "_last",
        "_parts",
        "_timings",
        "decode",
        "names",
        "payloads",
        "required",
        "until",
        "version",
    )

    def __init__(
        self,
        keys: tuple[str, ...],
        names: tuple[str, ...],
        payloads: tuple[bytes, ...],
        *,
        version: str,
        required: frozenset[str],
        decode: Callable[[bytes], Any],
        until: float,
    ) -> None:
        super().__init__(keys)
        self.names = names
        self.payloads = payloads
        self.version = version
        self.required = required
        self.decode = decode
        self.until = until
        # The body around the timings: the sections' bytes as stored, the
        # statuses (every one HIT) and each timing's place.
        parts: list[bytes] = [b'{"sections":{']
        for i, (name, payload) in enumerate(zip(names, payloads, strict=True)):
            parts.append(_fragment(name)[0] if i == 0 else b"," + _fragment(name)[0])
            parts.append(payload)
        parts.append(b'},"errors":[],"metadata":{"partialFailure":false,"generatedAt":"')
        self._parts = parts
        cache = ",".join(_fragment(n)[1][CacheStatus.HIT] for n in names)
        timings = [
            f'","version":{_json_str(version)},"cache":{{{cache}}},"timingsMs":{{"{names[0]}":'
        ]
        timings.extend(f',"{n}":' for n in names[1:])
        timings.append('},"totalMs":')
        self._timings = timings
        # The last body written, and what it was written for: the second of
        # ``generatedAt`` and the two timings' texts.
        self._last: tuple[int, str, str, bytes] = _NO_BODY
        # The results of a read the wire shows as "0.0" ms: built once, shared.
        self._instant: Mapping[str, SectionResult] | None = None

    def results(self, elapsed_ms: float) -> Mapping[str, SectionResult]:
        """The page's :class:`SectionResult` objects, every one a HIT read in ``elapsed_ms``.

        A read under 0.05 ms, which the page's JSON writes as ``0.0``, gives
        results of 0.0 ms, built once and shared by every such page (they are
        never changed once made).
        """
        if elapsed_ms < 0.05:
            instant = self._instant
            if instant is None:
                instant = self._instant = MappingProxyType(self._build(0.0))
            return instant
        return self._build(elapsed_ms)

    def _build(self, elapsed_ms: float) -> dict[str, SectionResult]:
        decode = self.decode
        hit = CacheStatus.HIT
        return {
            name: SectionResult(name, payload, hit, elapsed_ms, None, False, decode)
            for name, payload in zip(self.names, self.payloads, strict=True)
        }

    def to_json(self, generated_at: float, elapsed_ms: float, total_ms: float) -> bytes:
        """The page's body: what :meth:`PageResult.to_json` writes for these results."""
        second = int(generated_at)
        # Read from memory, a page takes microseconds: "0.0" ms, not formatted each time.
        elapsed = "0.0" if elapsed_ms < 0.05 else f"{elapsed_ms:.1f}"
        total = elapsed if total_ms == elapsed_ms else f"{total_ms:.1f}"
        last = self._last
        if last[0] == second and last[1] == elapsed and last[2] == total:
            return last[3]
        tail = f"{_iso_utc(generated_at)}{elapsed.join(self._timings)}{total}}}}}"
        body = b"".join([*self._parts, tail.encode()])
        cache = self.cache
        if cache is not None and cache._keep_body(self, len(body)):
            self._last = (second, elapsed, total, body)
        return body

    def release(self) -> None:
        """Dropped by the memory cache: the last body goes (a page still held rebuilds it)."""
        self._last = _NO_BODY


class PageResult:
    """The batch page: ``sections``, ``errors``, ``metadata`` and ``status_code``."""

    __slots__ = (
        "_elapsed_ms",
        "_results",
        "_status",
        "_warm",
        "generated_at",
        "required",
        "total_ms",
        "version",
    )

    def __init__(
        self,
        results: Mapping[str, SectionResult],
        *,
        version: str,
        generated_at: float,
        total_ms: float,
        required: frozenset[str] = frozenset(),
    ) -> None:
        self._results: Mapping[str, SectionResult] | None = results
        self.version = version
        self.generated_at = generated_at
        self.total_ms = total_ms
        #: Names of the sections whose failure makes the page a 503.
        self.required = required
        self._status: int | None = None
        self._warm: WarmPage | None = None
        self._elapsed_ms = 0.0

    @property
    def results(self) -> Mapping[str, SectionResult]:
        """Each section's :class:`SectionResult` by name, in the page's order."""
        results = self._results
        if results is None:
            assert self._warm is not None
            results = self._results = self._warm.results(self._elapsed_ms)
        return results

    @property
    def sections(self) -> dict[str, Any]:
        """Each section's value by name, decoded (the wire's ``sections``)."""
        return {name: r.value for name, r in self.results.items()}

    @property
    def errors(self) -> list[SectionError]:
        """One entry per failed section, stand-ins or not (the wire's ``errors``)."""
        return [r.error for r in self.results.values() if r.error is not None]

    @property
    def status_code(self) -> int:
        """503 when a required section or every section is unavailable, else 200."""
        if self._status is None:
            results = self.results.values()
            unavailable = [r.name for r in results if r.unavailable]
            if results and (
                len(unavailable) == len(results) or not self.required.isdisjoint(unavailable)
            ):
                self._status = 503
            else:
                self._status = 200
        return self._status

    @property
    def partial_failure(self) -> bool:
        """Some section failed, yet the page is served (status 200)."""
        return self.status_code == 200 and any(r.error is not None for r in self.results.values())

    @property
    def metadata(self) -> dict[str, Any]:
        """``partialFailure``, ``generatedAt``, ``version``, and each section's cache status
        and time (the wire's ``metadata``; it changes on every request)."""
        return {
            "partialFailure": self.partial_failure,
            "generatedAt": _iso_utc(self.generated_at),
            "version": self.version,
            "cache": {n: r.cache.value for n, r in self.results.items()},
            "timingsMs": {n: round(r.elapsed_ms, 1) for n, r in self.results.items()},
            "totalMs": round(self.total_ms, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        """The wire shape as Python objects (decodes every section)."""
        return {
            "sections": self.sections,
            "errors": [e.to_dict() for e in self.errors],
            "metadata": self.metadata,
        }

    def to_json(self) -> bytes:
        """The wire shape as bytes, joined from the sections' stored JSON.

        No section value is decoded or re-encoded: this is the warm path.
        """
        view = self._warm
        if view is not None:
            # The view's last body, when this page's metadata writes the same:
            # the same second, and (nearly always, from memory) "0.0" ms.
            last = view._last
            if (
                self._elapsed_ms < 0.05
                and self.total_ms == self._elapsed_ms
                and last[0] == int(self.generated_at)
                and last[1] == last[2] == "0.0"
            ):
                return last[3]
            return view.to_json(self.generated_at, self._elapsed_ms, self.total_ms)
        parts = [b'{"sections":{']
        cache: list[str] = []
        timings: list[str] = []
        errors: list[dict[str, str]] = []
        last_ms = -1.0
        last_text = ""
        sep = b""
        for name, r in self.results.items():
            prefix, statuses = _fragment(name)
            parts.append(sep)
            parts.append(prefix)
            parts.append(r.encoded)
            sep = b","
            cache.append(statuses[r.cache])
            ms = r.elapsed_ms
            if ms != last_ms:
                last_ms, last_text = ms, _ms(ms)
            timings.append(f'"{name}":{last_text}')
            if r.error is not None:
                errors.append(r.error.to_dict())
        errors_json = (
            json.dumps(errors, ensure_ascii=False, separators=(",", ":")) if errors else "[]"
        )
        partial = "true" if errors and self.status_code == 200 else "false"
        parts.append(
            f'}},"errors":{errors_json},"metadata":{{"partialFailure":{partial},'
            f'"generatedAt":"{_iso_utc(self.generated_at)}",'
            f'"version":{_json_str(self.version)},'
            f'"cache":{{{",".join(cache)}}},"timingsMs":{{{",".join(timings)}}},'
            f'"totalMs":{_ms(self.total_ms)}}}}}'.encode()
        )
        return b"".join(parts)

    def __repr__(self) -> str:
        return (
            f"PageResult(status={self.status_code}, sections={list(self.results)}, "
            f"errors={len(self.errors)})"
        )


def page_from_view(view: WarmPage, generated_at: float, elapsed_ms: float) -> PageResult:
    """The page of ``view``'s entries, read in ``elapsed_ms`` (the page's whole time).

    Every section is a HIT. Its :class:`SectionResult` objects are made when
    ``results`` is first read; :meth:`PageResult.to_json` needs none of them.
    """
    page = _new(PageResult)  # a function and eight stores: this is the warm path
    page._results = None
    page._warm = view
    page._elapsed_ms = elapsed_ms
    page._status = 200
    page.version = view.version
    page.generated_at = generated_at
    page.total_ms = elapsed_ms
    page.required = view.required
    return page


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


_json_strs: dict[str, str] = {}


def _json_str(text: str) -> str:
    out = _json_strs.get(text)
    if out is None:
        out = json.dumps(text)
        if len(_json_strs) < 1000:
            _json_strs[text] = out
    return out
