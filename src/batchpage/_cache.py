"""The cache-layer interface the aggregator talks to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ._entry import Entry
from ._keys import KeyPattern


@runtime_checkable
class Cache(Protocol):
    """A store of :class:`Entry` by key; an async context manager for its lifetime.

    The rules every implementation keeps (``tests/redis/test_cache_contract.py``
    holds each one to them):

    * A failing or slow store never raises from these methods and never
      holds a page up: it answers misses (and grants local locks), logs,
      and keeps each call within a small budget of its own. Cancellation
      still propagates.
    * ``get_many`` answers a whole page's keys at once (one round trip for a
      remote store), within ``budget`` seconds when one is given.
    * ``try_lock``/``unlock`` elect one filler of a key across processes; a
      process-local cache grants every lock. The token also stands for the
      moment the lock was granted: ``set(..., token=t)`` stores nothing if
      an invalidation of the key happened since, so invalidation wins over
      a fill that began before it.
    * Payloads read from a shared store are checked to be one JSON value
      before they are returned.

    ``clock`` is the wall clock entries are written and judged by (seconds);
    tests pass a fake one.
    """

    clock: Callable[[], float]

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...

    async def get_many(
        self, keys: Sequence[str], /, *, budget: float | None = None
    ) -> list[Entry | None]:
        """Each key's entry, or ``None``; a key not read within ``budget`` seconds is ``None``."""
        ...

    async def set(self, key: str, entry: Entry, /, *, token: str | None = None) -> bool:
        """Store ``entry``; with ``token``, only if no invalidation of ``key`` came since
        that lock was granted. True if stored (in at least the nearest layer)."""
        ...

    async def invalidate(self, pattern: KeyPattern | str, /) -> bool:
        """Drop every entry whose key ``pattern`` matches (a str: a literal prefix).

        The aggregator passes a :class:`KeyPattern` (``pattern.matches(key)``;
        ``pattern.glob()`` for a Redis ``SCAN MATCH``); a store that can only
        drop by prefix may drop ``pattern.literal_prefix``, more than asked.
        False when a layer could not be reached (the old value may come back).
        """
        ...

    async def try_lock(self, key: str, ttl: float, /) -> str | None:
        """A token if this caller may fill ``key`` now, else ``None``."""
        ...

    async def unlock(self, key: str, token: str, /) -> None:
        """Release ``key``'s lock if ``token`` holds it; may finish in the background."""
        ...

    async def wait_for(self, key: str, wait: float, /) -> Entry | None:
        """Wait up to ``wait`` seconds for another process to fill ``key``."""
        ...
