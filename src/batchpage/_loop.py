"""The running event loop and its clock, without anyio's per-call dispatch.

``anyio.current_time()`` looks the backend up on every call; on the warm
path that lookup costs more than the page. A loop's clock is fixed for its
lifetime, so callers resolve it once per loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def running_loop() -> tuple[object, Callable[[], float]]:
    """An identity for the running loop (asyncio or trio) and its clock."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio  # only reached under trio, which is then installed

        return trio.lowlevel.current_trio_token(), trio.current_time
    return loop, loop.time
