"""A cached section value: its encoded bytes and the moments its windows end."""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Callable
from typing import Any

from ._policy import CachePolicy


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)

# orjson's loads, when orjson is installed (looked up once, on first use).
_unset: Any = object()
_orjson_loads: Any = _unset


def _fast_loads() -> Callable[[bytes], object] | None:
    global _orjson_loads
    if _orjson_loads is _unset:
        try:
            import orjson  # the orjson extra: not a dependency of the core
        except ImportError:
            _orjson_loads = None
        else:
            _orjson_loads = orjson.loads
    return _orjson_loads  # type: ignore[no-any-return]


def check_json(payload: bytes) -> None:
    """Raise ``ValueError`` unless ``payload`` is one UTF-8 JSON value and nothing else.

    With orjson installed, orjson reads it first (about three times faster
    than ``json`` on a section of ten documents: every entry read from Redis
    pays this). orjson accepts no more than ``json`` does; what it refuses
    (a number beyond a double, an escaped lone surrogate, deep nesting) is
    for ``json`` to judge, so both accept the same payloads.
    """
    fast = _fast_loads()
    if fast is not None:
        try:
            fast(payload)
        except ValueError:  # orjson.JSONDecodeError is one
            pass
        else:
            return
    _DECODER.decode(payload.decode("utf-8"))  # 'Extra data' past the first value


class Freshness(enum.Enum):
    """What an entry is good for at a given moment (:meth:`Entry.freshness`)."""

    FRESH = "fresh"  #: serve as HIT
    STALE = "stale"  #: serve as STALE, refresh in the background
    EXPIRED = "expired"  #: fetch; may still stand in if the fetch fails


class Entry:
    """Encoded value plus absolute times (seconds on the cache clock).

    ``fresh_until <= stale_until`` and ``fresh_until <= error_until``; the
    entry is of no use at all after ``max(stale_until, error_until)``.
    """

    __slots__ = (
        "error_until",
        "fresh_until",
        "payload",
        "stale_until",
        "stored_at",
        "useless_after",
    )

    def __init__(
        self,
        payload: bytes,
        *,
        stored_at: float,
        fresh_until: float,
        stale_until: float,
        error_until: float,
    ) -> None:
        self.payload = payload
        self.stored_at = stored_at
        self.fresh_until = fresh_until
        self.stale_until = stale_until
        self.error_until = error_until
        self.useless_after = max(stale_until, error_until)

    @classmethod
    def create(
        cls,
        payload: bytes,
        policy: CachePolicy,
        now: float,
        *,
        rand: Callable[[], float] = random.random,
    ) -> Entry:
        """An entry written ``now``, its windows shortened by the policy's jitter."""
        scale = 1.0 - policy.jitter * rand() if policy.jitter else 1.0
        fresh_until = now + policy.fresh * scale
        return cls(
            payload,
            stored_at=now,
            fresh_until=fresh_until,
            stale_until=fresh_until + policy.stale * scale,
            error_until=fresh_until + policy.stale_if_error * scale,
        )

    def freshness(self, now: float) -> Freshness:
        """Fresh, stale or expired at ``now`` (seconds on the cache clock)."""
        if now < self.fresh_until:
            return Freshness.FRESH
        if now < self.stale_until:
            return Freshness.STALE
        return Freshness.EXPIRED

    def usable_on_error(self, now: float) -> bool:
        """Whether it may stand in for a failed fetch at ``now`` (``stale_if_error``)."""
        return now < self.error_until

    def dead(self, now: float) -> bool:
        """Of no use at all at ``now``: a store may forget it."""
        return now >= self.useless_after

    # The wire format of an entry in a shared store: a short text header, then
    # the payload untouched. Never pickle: a store's bytes are not trusted.
    _MAGIC = b"bp1"

    def dumps(self) -> bytes:
        """The entry for a shared store: a short text header, then the payload untouched."""
        header = (
            f"{self.stored_at!r} {self.fresh_until!r} {self.stale_until!r} {self.error_until!r}"
        ).encode()
        return b"%s %s\n%s" % (self._MAGIC, header, self.payload)

    @classmethod
    def loads(cls, data: bytes) -> Entry:
        """Parse :meth:`dumps`'s bytes; ``ValueError`` on anything else.

        The payload is checked to be exactly one JSON value: it is spliced
        into pages as it is, so whoever can write the shared store must not
        be able to write around it into the page.
        """
        header, sep, payload = data.partition(b"\n")
        fields = header.split(b" ")
        if not sep or len(fields) != 5 or fields[0] != cls._MAGIC:
            raise ValueError("not a batchpage cache entry")
        stored_at, fresh_until, stale_until, error_until = (float(f) for f in fields[1:])
        if not (fresh_until <= stale_until and fresh_until <= error_until):
            raise ValueError("inconsistent cache entry windows")
        check_json(payload)
        return cls(
            payload,
            stored_at=stored_at,
            fresh_until=fresh_until,
            stale_until=stale_until,
            error_until=error_until,
        )

    def __repr__(self) -> str:
        return (
            f"Entry({len(self.payload)} bytes, fresh_until={self.fresh_until}, "
            f"stale_until={self.stale_until}, error_until={self.error_until})"
        )
