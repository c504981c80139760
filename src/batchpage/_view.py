"""What a reader builds from some entries of a memory cache, kept until one of them changes."""

from __future__ import annotations


class View:
    """Built from the entries of ``keys`` as a :class:`MemoryCache` held them.

    The cache keeps it (``MemoryCache._keep_view``) and drops it the moment
    any of those entries is replaced, removed, evicted or expires, so a view
    that is found is true; how fresh its entries still are, by the clock, is
    for the reader to check.
    """

    __slots__ = ("keys", "slot", "touched")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        #: Where the cache keeps it; ``None`` once dropped.
        self.slot: object = None
        #: Read since the cache last applied reads to its recency order.
        self.touched = False
