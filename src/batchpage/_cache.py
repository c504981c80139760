"""The cache-layer interface the aggregator talks to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ._entry import Entry


@runtime_checkable
class Cache(Protocol):
    """A store of :class:`Entry` by key; an async context manager for its lifetime.

    ``get_many`` answers a whole page's keys at once (one round trip for a
    remote store). ``try_lock``/``unlock`` elect one filler of a key across
    processes; a process-local cache grants every lock. A failing store
    must not raise from these methods: it answers misses and logs.

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

    async def get_many(self, keys: Sequence[str], /) -> list[Entry | None]: ...

    async def set(self, key: str, entry: Entry, /) -> None: ...

    async def invalidate(self, prefix: str, /) -> bool:
        """Drop every entry whose key starts with ``prefix``.

        False when a layer could not be reached (the old value may come back).
        """
        ...

    async def try_lock(self, key: str, ttl: float, /) -> str | None:
        """A token if this caller may fill ``key`` now, else ``None``."""
        ...

    async def unlock(self, key: str, token: str, /) -> None: ...

    async def wait_for(self, key: str, wait: float, /) -> Entry | None:
        """Wait up to ``wait`` seconds for another process to fill ``key``."""
        ...
