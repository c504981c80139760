"""The in-process cache layer (L1): an LRU bounded by entries and bytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import cachetools

from ._entry import Entry
from ._invalidation import InvalidationLog
from ._keys import KeyPattern
from ._units import Seconds, positive_seconds

logger = logging.getLogger("batchpage.memory")

# Per-entry bookkeeping (the Entry object, its key, the LRU links) in bytes,
# counted with the payload so that many tiny values are bounded too.
_OVERHEAD = 200


class MemoryCache:
    """Entries in this process: microseconds to read, gone on restart.

    Bounded by ``max_entries`` and, when given, ``max_bytes`` (payload plus a
    fixed overhead per entry); the least recently used entry goes first.
    ``ttl`` (seconds) caps how long an entry stays here whatever its policy:
    under a :class:`LayeredCache` it bounds how long this instance serves its
    own copy without looking at Redis (the seed's memory layer: 50 entries,
    60 s). ``clock`` (seconds) judges freshness; tests pass a fake one. Locks
    are always granted: in one process, single-flight is the aggregator's job;
    a lock's token still lets :meth:`set` refuse a value that an invalidation
    overtook. ``too_big`` counts the entries not kept for being bigger than
    ``max_bytes`` (the first is logged).
    """

    def __init__(
        self,
        *,
        max_entries: int = 1000,
        max_bytes: int | None = None,
        ttl: Seconds | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int, got {max_entries!r}")
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1
        ):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        if max_bytes is not None and max_bytes < _OVERHEAD:
            # Every entry counts at least the overhead: such a cache could keep nothing.
            raise ValueError(
                f"max_bytes must be at least {_OVERHEAD} (each entry's overhead), got {max_bytes!r}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be a callable () -> seconds, not {clock!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = None if ttl is None else positive_seconds(ttl, name="ttl")
        self.clock = clock
        # Each entry with the moment it leaves: the earlier of its own end and the ttl.
        self._data: cachetools.LRUCache[str, tuple[Entry, float]]
        if max_bytes is None:
            self._data = cachetools.LRUCache(max_entries)
        else:
            self._data = cachetools.LRUCache(max_bytes, getsizeof=_item_size)
        self.invalidations = InvalidationLog()
        #: Entries not kept because they were bigger than ``max_bytes``.
        self.too_big = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """Bytes held now, counted as ``max_bytes`` counts them (payloads plus overhead)."""
        return sum(_item_size(item) for item in self._data.values())

    def get(self, key: str) -> Entry | None:
        """One key's entry, or ``None``; without awaiting (for tests and tools)."""
        return self.get_many_now((key,))[0]

    def get_many_now(self, keys: Sequence[str]) -> list[Entry | None]:
        """The entries of ``keys`` still of some use, without awaiting: the hot path."""
        data = self._data
        now = self.clock()
        out: list[Entry | None] = []
        for key in keys:
            try:
                entry, leaves_at = data[key]  # refreshes the key's recency
            except KeyError:
                out.append(None)
                continue
            if now >= leaves_at:
                data.pop(key, None)
                out.append(None)
            else:
                out.append(entry)
        return out

    async def get_many(
        self, keys: Sequence[str], /, *, budget: float | None = None
    ) -> list[Entry | None]:
        """:meth:`get_many_now`; memory answers at once, so ``budget`` never applies."""
        return self.get_many_now(keys)

    def put(self, key: str, entry: Entry) -> bool:
        """Keep ``entry``; False if it is bigger than ``max_bytes`` (then nothing is kept)."""
        if self.max_bytes is not None and _size(entry) > self.max_bytes:
            self._data.pop(key, None)  # too big to keep; never serve an older value
            if not self.too_big:
                logger.warning(
                    "an entry of %d bytes (%d of payload) is bigger than the memory cache "
                    "(max_bytes=%d): not cached; counted in MemoryCache.too_big",
                    _size(entry),
                    len(entry.payload),
                    self.max_bytes,
                )
            self.too_big += 1
            return False
        leaves_at = entry.useless_after
        if self.ttl is not None:
            leaves_at = min(leaves_at, self.clock() + self.ttl)
        self._data[key] = (entry, leaves_at)
        while len(self._data) > self.max_entries:
            self._data.popitem()
        return True

    def lease_valid(self, key: str, token: str | None) -> bool:
        """Whether a write under ``token`` may still land (no invalidation of ``key`` since)."""
        if token is None:
            return True
        try:
            mark = int(token)
        except ValueError:
            return False
        return not self.invalidations.invalidated_since(key, mark)

    async def set(self, key: str, entry: Entry, /, *, token: str | None = None) -> bool:
        """:meth:`put`, unless an invalidation of ``key`` came since ``token``'s lock."""
        if not self.lease_valid(key, token):
            return False
        return self.put(key, entry)

    def drop_matching(self, pattern: KeyPattern | str) -> int:
        """Drop every entry ``pattern`` matches (a str: a literal prefix); how many went."""
        pattern = KeyPattern.of(pattern)
        if pattern.is_prefix:
            prefix = pattern.literal_prefix
            doomed = [k for k in self._data if k.startswith(prefix)]
        else:
            doomed = [k for k in self._data if pattern.matches(k)]
        for k in doomed:
            self._data.pop(k, None)
        return len(doomed)

    def drop_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with ``prefix``."""
        return self.drop_matching(KeyPattern.prefix(prefix))

    async def invalidate(self, pattern: KeyPattern | str, /) -> bool:
        """Drop what ``pattern`` matches and refuse fills that began before; always True."""
        pattern = KeyPattern.of(pattern)
        self.invalidations.record(pattern)
        self.drop_matching(pattern)
        return True

    async def try_lock(self, key: str, ttl: float, /) -> str | None:
        """Always granted (one process has one filler); the token marks the moment."""
        return str(self.invalidations.mark())

    async def unlock(self, key: str, token: str, /) -> None:
        """Nothing to release: memory's locks hold nobody back."""

    async def wait_for(self, key: str, wait: float, /) -> Entry | None:
        """``None`` at once: no other process fills this memory."""
        return None


def _size(entry: Entry) -> int:
    return len(entry.payload) + _OVERHEAD


def _item_size(item: tuple[Entry, float]) -> int:
    return _size(item[0])
