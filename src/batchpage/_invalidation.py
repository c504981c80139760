"""Which invalidations happened since a moment: so that invalidation wins over a fill.

A fill reads its source, then writes. If an invalidation of its key lands in
between, the value it is about to write is older than the invalidation and
must not be stored. A cache takes a :meth:`InvalidationLog.mark` when it
grants a fill its lock, and asks :meth:`InvalidationLog.invalidated_since`
before it writes.
"""

from __future__ import annotations

from collections import deque

from ._keys import KeyPattern


class InvalidationLog:
    """The last ``size`` invalidations (each a :class:`KeyPattern`), numbered in order.

    Bounded: a mark older than everything remembered is answered "yes,
    invalidated", which costs at most one write that is not kept.
    """

    __slots__ = ("_recent", "_seq")

    def __init__(self, size: int = 1024) -> None:
        self._seq = 0
        self._recent: deque[tuple[int, KeyPattern]] = deque(maxlen=size)

    def mark(self) -> int:
        """The current position; pass it to :meth:`invalidated_since` later."""
        return self._seq

    def record(self, pattern: KeyPattern | str) -> None:
        """An invalidation of every key ``pattern`` matches.

        A str is a literal prefix; ``""`` is every key.
        """
        self._seq += 1
        self._recent.append((self._seq, KeyPattern.of(pattern)))

    def invalidated_since(self, key: str, mark: int) -> bool:
        """Whether an invalidation recorded after ``mark`` covers ``key``."""
        if mark >= self._seq:
            return False
        recent = self._recent
        if not recent or recent[0][0] > mark + 1:
            return True  # some of what happened since is forgotten: assume the worst
        for seq, pattern in reversed(recent):
            if seq <= mark:
                return False
            if pattern.matches(key):
                return True
        return False
