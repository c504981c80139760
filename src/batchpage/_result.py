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
from typing import Any

from ._errors import SectionError

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
        *,
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


class PageResult:
    """The batch page: ``sections``, ``errors``, ``metadata`` and ``status_code``."""

    __slots__ = ("generated_at", "required", "results", "total_ms", "version")

    def __init__(
        self,
        results: Mapping[str, SectionResult],
        *,
        version: str,
        generated_at: float,
        total_ms: float,
        required: frozenset[str] = frozenset(),
    ) -> None:
        self.results = results
        #: Names of the sections whose failure makes the page a 503.
        self.required = required
        self.version = version
        self.generated_at = generated_at
        self.total_ms = total_ms

    @property
    def sections(self) -> dict[str, Any]:
        return {name: r.value for name, r in self.results.items()}

    @property
    def errors(self) -> list[SectionError]:
        return [r.error for r in self.results.values() if r.error is not None]

    @property
    def status_code(self) -> int:
        """503 when a required section or every section is unavailable, else 200."""
        results = self.results.values()
        if not results:
            return 200
        if all(r.unavailable for r in results):
            return 503
        if any(r.unavailable and r.name in self.required for r in results):
            return 503
        return 200

    @property
    def partial_failure(self) -> bool:
        """Some section failed, yet the page is served (status 200)."""
        return any(r.error is not None for r in self.results.values()) and (self.status_code == 200)

    @property
    def metadata(self) -> dict[str, Any]:
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
        """The wire shape as bytes, joined from the sections' stored JSON."""
        results = self.results
        parts = [b'{"sections":{']
        cache = []
        timings = []
        errors = []
        first = True
        for name, r in results.items():
            if not first:
                parts.append(b",")
            first = False
            # Section names are validated to need no JSON escaping.
            parts.append(b'"%s":%s' % (name.encode(), r.encoded))
            cache.append(f'"{name}":"{r.cache.value}"')
            timings.append(f'"{name}":{round(r.elapsed_ms, 1)}')
            if r.error is not None:
                errors.append(r.error.to_dict())
        errors_json = json.dumps(errors, ensure_ascii=False, separators=(",", ":"))
        partial = "true" if self.partial_failure else "false"
        parts.append(
            (
                f'}},"errors":{errors_json},"metadata":{{"partialFailure":{partial},'
                f'"generatedAt":"{_iso_utc(self.generated_at)}",'
                f'"version":{json.dumps(self.version)},'
                f'"cache":{{{",".join(cache)}}},"timingsMs":{{{",".join(timings)}}},'
                f'"totalMs":{round(self.total_ms, 1)}}}}}'
            ).encode()
        )
        return b"".join(parts)

    def __repr__(self) -> str:
        return (
            f"PageResult(status={self.status_code}, sections={list(self.results)}, "
            f"errors={len(self.errors)})"
        )
