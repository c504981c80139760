"""What a reader builds from some entries of a memory cache, kept until one of them changes."""

from __future__ import annotations

from typing import Protocol


class BodyBudget(Protocol):
    """Where views account for the bodies they keep (a :class:`MemoryCache`)."""

    def _keep_body(self, view: View, size: int) -> bool: ...


class View:
    """Built from the entries of ``keys`` as a :class:`MemoryCache` held them.

    The cache keeps it (``MemoryCache._keep_view``) and drops it the moment
    any of those entries is replaced, removed, evicted or expires, so a view
    that is found is true; how fresh its entries still are, by the clock, is
    for the reader to check. A view may keep bytes of its own (a body it
    wrote) within the cache's budget for them: ``cache._keep_body``.
    """

    __slots__ = ("body_size", "cache", "keys", "slot", "touched")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        #: Where the cache keeps it; ``None`` once dropped.
        self.slot: object = None
        #: The cache keeping it, for the bytes it keeps; ``None`` once dropped.
        self.cache: BodyBudget | None = None
        #: Bytes of its own the cache counts for it.
        self.body_size = 0
        #: Read since the cache last applied reads to its recency order.
        self.touched = False

    def release(self) -> None:
        """Dropped by the cache: let go of the bytes it kept of its own."""
