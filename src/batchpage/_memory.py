"""The in-process cache layer (L1): an LRU bounded by entries and bytes."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from types import TracebackType
from typing import Any, Self

from ._entry import Entry
from ._invalidation import InvalidationLog
from ._keys import KeyPattern
from ._units import Seconds, positive_seconds
from ._view import View

logger = logging.getLogger("batchpage.memory")

# Per-entry bookkeeping in bytes, counted with the payload and the key so that
# many small values are bounded too: the Entry and its four times, this
# layer's item, the key's and the payload's object headers, and the LRU's
# share (its dict slots, which churn leaves up to half empty, and its ordering
# link). Measured with tracemalloc on CPython 3.11: about 550 bytes at worst
# under churn (``tests/core/test_memory_bound.py`` holds the count to what
# the process really allocates).
_OVERHEAD = 600

# Views kept at once (see ``MemoryCache._keep_view``): past this many, all go.
_MAX_VIEWS = 256
# Bytes the views may keep of their own (a page's last body), all together.
_VIEW_BODY_BYTES = 1 << 20


class _Item:
    """An entry as this layer holds it, with the moment it leaves."""

    __slots__ = ("entry", "leaves_at")

    def __init__(self, entry: Entry, leaves_at: float) -> None:
        self.entry = entry
        self.leaves_at = leaves_at


class MemoryCache:
    """Entries in this process: microseconds to read, gone on restart.

    Bounded by ``max_entries`` and, when given, ``max_bytes``, which counts
    each entry's payload and key plus a fixed overhead per entry (what the
    entry's bookkeeping costs); the least recently used entry goes first.
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
        # Least recently used first. An OrderedDict, not cachetools: a read is
        # two C calls (lookup, move_to_end), which a warm page makes per section.
        self._data: OrderedDict[str, _Item] = OrderedDict()
        self._bytes = 0
        self.invalidations = InvalidationLog()
        #: Entries not kept because they were bigger than ``max_bytes``.
        self.too_big = 0
        # Views by slot (each reader's own View subclass: Any to the cache's
        # type), and the views built on each key: a change to a key drops
        # those views, and only those.
        self._views: dict[Hashable, Any] = {}
        self._viewing: dict[str, list[View]] = {}
        self._body_bytes = 0  # what the views keep of their own
        # Views read since their reads were last applied to the LRU order.
        self._touched: list[View] = []

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
        """Bytes held now, counted as ``max_bytes`` counts them (payloads, keys, overhead)."""
        return self._bytes

    def get(self, key: str) -> Entry | None:
        """One key's entry, or ``None``; without awaiting (for tests and tools)."""
        return self.get_many_now((key,))[0]

    def get_many_now(self, keys: Sequence[str]) -> list[Entry | None]:
        """The entries of ``keys`` still of some use, without awaiting: the hot path."""
        if self._touched:
            self._flush_touched()
        data = self._data
        now = self.clock()
        recent = data.move_to_end
        out: list[Entry | None] = []
        for key in keys:
            item = data.get(key)
            if item is None:
                out.append(None)
            elif now >= item.leaves_at:
                self._remove(key)
                out.append(None)
            else:
                recent(key)
                out.append(item.entry)
        return out

    async def get_many(
        self, keys: Sequence[str], /, *, budget: float | None = None
    ) -> list[Entry | None]:
        """:meth:`get_many_now`; memory answers at once, so ``budget`` never applies."""
        return self.get_many_now(keys)

    def put(self, key: str, entry: Entry) -> bool:
        """Keep ``entry``; False if it is bigger than ``max_bytes`` (then nothing is kept)."""
        if self._touched:
            self._flush_touched()
        size = _size(key, entry)
        data = self._data
        if self.max_bytes is not None and size > self.max_bytes:
            if key in data:
                self._remove(key)  # too big to keep; never serve an older value
            if not self.too_big:
                logger.warning(
                    "an entry of %d bytes (%d of payload) is bigger than the memory cache "
                    "(max_bytes=%d): not cached; counted in MemoryCache.too_big",
                    size,
                    len(entry.payload),
                    self.max_bytes,
                )
            self.too_big += 1
            return False
        leaves_at = entry.useless_after
        if self.ttl is not None:
            leaves_at = min(leaves_at, self.clock() + self.ttl)
        old = data.pop(key, None)
        if old is not None:
            self._bytes -= _size(key, old.entry)
            if self._viewing:
                self._drop_views_of(key)
        data[key] = _Item(entry, leaves_at)
        self._bytes += size
        max_bytes = self.max_bytes
        while len(data) > self.max_entries or (max_bytes is not None and self._bytes > max_bytes):
            gone, item = data.popitem(last=False)
            self._bytes -= _size(gone, item.entry)
            if self._viewing:
                self._drop_views_of(gone)
        return True

    def _remove(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= _size(key, item.entry)
            if self._viewing:
                self._drop_views_of(key)

    # -- views: what a reader built from entries, kept until one of them changes --

    def _keep_view(
        self, slot: Hashable, view: View, entries: Sequence[Entry | None]
    ) -> float | None:
        """Keep ``view`` in ``slot`` if ``entries``, read for ``view.keys``, are still here.

        Returns the moment the first of them leaves this cache (its ``ttl``
        included), or ``None`` when one is gone or replaced since it was
        read (then nothing is kept). Readers find it in ``_views[slot]``
        until any of its entries changes; reading it is a read of its keys,
        which :meth:`_touch` counts.
        """
        data = self._data
        leaves = float("inf")
        for k, entry in zip(view.keys, entries, strict=True):
            item = data.get(k)
            if item is None or item.entry is not entry:
                return None
            leaves = min(leaves, item.leaves_at)
        views = self._views
        if len(views) >= _MAX_VIEWS:
            for dropped in views.values():
                self._drop_view(dropped)
            views.clear()
            self._viewing.clear()
        replaced = views.get(slot)
        if replaced is not None:
            self._drop_view(replaced)
        view.slot = slot
        view.cache = self
        views[slot] = view
        viewing = self._viewing
        for k in view.keys:
            built_on = viewing.get(k)
            if built_on is None:
                viewing[k] = [view]
            else:
                built_on[:] = [v for v in built_on if v.slot is not None]
                built_on.append(view)
        return leaves

    def _drop_views_of(self, key: str) -> None:
        views = self._views
        for view in self._viewing.pop(key, ()):
            slot = view.slot
            if slot is not None:
                if views.get(slot) is view:
                    del views[slot]
                self._drop_view(view)

    def _drop_view(self, view: View) -> None:
        view.slot = None
        view.cache = None
        self._body_bytes -= view.body_size
        view.body_size = 0
        view.release()

    def _keep_body(self, view: View, size: int) -> bool:
        """Whether ``view``, still kept here, may keep ``size`` bytes of its own (in place
        of what it kept before): all views together keep at most ``_VIEW_BODY_BYTES``."""
        if view.cache is not self:
            return False
        total = self._body_bytes - view.body_size + size
        if total > _VIEW_BODY_BYTES:
            return False
        self._body_bytes = total
        view.body_size = size
        return True

    def _touch(self, view: View) -> None:
        """Count a read of ``view`` in its keys' recency, as of the next read or write here.

        Reads of views since then are applied in the order of their first
        read: the keys of every page read since are more recent than any
        key not read, which is what eviction looks at.
        """
        view.touched = True
        self._touched.append(view)

    def _flush_touched(self) -> None:
        data = self._data
        recent = data.move_to_end
        for view in self._touched:
            view.touched = False
            for key in view.keys:
                if key in data:
                    recent(key)
        self._touched.clear()

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
            self._remove(k)
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


def _size(key: str, entry: Entry) -> int:
    return len(entry.payload) + len(key) + _OVERHEAD
