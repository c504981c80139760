"""Starting a coroutine in the current task, and going on with it only if it waits.

Most cold pages spawn a task per section, and most of what a task costs
(creating it, scheduling it, collecting it) buys nothing when the source
answers without waiting: a memory hit, a value computed in place, a fallback.
:func:`start_eagerly` runs a coroutine's first step at once, in the calling
task, like asyncio's eager task factory. If it finishes there, no task is
made. If it waits, the caller must go on driving it, *in the same task*, by
awaiting what :func:`start_eagerly` returned.

The same task, because a coroutine that has begun may have tied itself to
its task in its first step: an anyio or trio cancel scope (which must be
exited in the task it was entered in), a lock (which knows its owner), an
``asyncio.timeout`` (which cancels the task it was entered in). Handing it to
another task would break every one of those; so at most one started
coroutine per task may be waiting, and the caller spawns tasks for the rest.

Each coroutine runs in a copy of the caller's context, as it would in a task
of its own: a context variable one sets is not seen by the others, nor by
the caller.
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class Started:
    """A coroutine whose first step ran and waits: ``await`` it in the task that started it."""

    __slots__ = ("_context", "_coro", "_yielded")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], context: contextvars.Context, yielded: Any
    ) -> None:
        self._coro = coro
        self._context = context
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        return _drive(self._coro, self._context, self._yielded)

    def close(self) -> None:
        """Close the coroutine without finishing it (its ``finally`` blocks run)."""
        self._context.run(self._coro.close)


def _drive(
    coro: Coroutine[Any, Any, T], context: contextvars.Context, yielded: Any
) -> Generator[Any, Any, T]:
    # A plain generator, as ``__await__`` must return (an iterator, not a
    # coroutine). Between the event loop and the coroutine: what the
    # coroutine yields goes to the loop as this task's own, and what the loop
    # sends or throws in (a result, a cancellation) goes to the coroutine. On
    # asyncio and trio alike, since both drive a task with send() and throw().
    send = coro.send
    throw = coro.throw
    run = context.run
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            run(coro.close)
            raise
        except BaseException as exc:
            try:
                yielded = run(throw, exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = run(send, sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


class Waiting:
    """A coroutine that waits after its first step, run in this very task and context.

    For a caller that runs the first step itself, in its own context (the
    executor, around a source, so that the source's timeout is armed only if
    the source waits): ``await Waiting(coro, yielded)`` finishes it.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        return _drive_here(self._coro, self._yielded)


def _drive_here(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    # _drive, in the caller's own context.
    send = coro.send
    throw = coro.throw
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> Started | None:
    """Run ``coro`` until it first waits; ``None`` if it finished, else what to await.

    What ``coro`` raises in its first step propagates. The result of a
    coroutine that finishes at once is dropped: callers record their results
    themselves.
    """
    context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    return Started(coro, context, yielded)
