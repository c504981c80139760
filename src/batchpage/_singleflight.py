"""One call per key at a time: concurrent callers share the leader's result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Call(Generic[V]):
    __slots__ = ("done", "finished", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.finished = False
        self.result: V


class SingleFlight(Generic[K, V]):
    """Deduplicates concurrent calls by key, like Go's ``singleflight``.

    The first caller (the leader) runs ``fn`` in its own task, so its
    cancellation scope governs the work. Followers wait; if the leader is
    cancelled before it has a result, one follower takes over as leader.
    ``fn`` should return failures as values: a raised exception reaches only
    the leader, and followers retry.
    """

    def __init__(self) -> None:
        self._calls: dict[K, _Call[V]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    async def do(self, key: K, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """Return ``fn()``'s result and whether it was shared with a leader."""
        while True:
            call = self._calls.get(key)
            if call is None:
                break
            await call.done.wait()
            if call.finished:
                return call.result, True
        call = _Call[V]()
        self._calls[key] = call
        try:
            result = await fn()
            call.result = result
            call.finished = True
            return result, False
        finally:
            del self._calls[key]
            call.done.set()
