"""The running event loop and its clock, without anyio's per-call dispatch.

``anyio.current_time()`` looks the backend up on every call; on the warm
path that lookup costs more than the page. A loop's clock is fixed for its
lifetime, so callers resolve it once per loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# ``get_running_loop`` raises outside asyncio, and raising costs more than
# the lookup: under trio, on every call.
_get_running_loop = asyncio._get_running_loop


def running_loop() -> tuple[object, Callable[[], float]]:
    """An identity for the running loop (asyncio or trio) and its clock."""
    loop = _get_running_loop()
    if loop is None:
        import trio  # only reached under trio, which is then installed

        return trio.lowlevel.current_trio_token(), trio.current_time
    if type(loop).time is asyncio.BaseEventLoop.time:
        # asyncio's own loops read ``time.monotonic()`` in a Python method:
        # the same clock, without the call around it (a warm page reads it twice).
        return loop, time.monotonic
    return loop, loop.time


def same_loop(loop: object) -> bool:
    """Whether ``loop`` (from :func:`running_loop`) is the running loop: cheap on asyncio."""
    running = _get_running_loop()
    if running is not None:
        return running is loop
    import trio

    try:
        return trio.lowlevel.current_trio_token() is loop
    except RuntimeError:
        return False
