"""What a running worker holds, for the soak and multi-worker tests. Off by default.

``BATCHPAGE_DEBUG_VITALS=1`` adds ``GET /debug/vitals`` to the FastAPI app
and to the Django app (its setting ``HOMEPAGE_DEBUG_VITALS``), same JSON:
this worker's pid, its asyncio tasks, threads, open file descriptors,
resident memory and TCP connections, and the counters of its aggregator,
executor and caches. A soak reads it before and after a load to show that
nothing accumulates; with several workers, each answer names its pid. It
exposes internals, so it is for tests and rehearsals, never production.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any, Final

import attrs

from batchpage import LayeredCache, MemoryCache, RedisCache

from .lifetime import Homepage

VITALS_ENV: Final = "BATCHPAGE_DEBUG_VITALS"


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _tcp_connections() -> int:
    """Sockets this process holds (listening and connected)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def _connections_by_peer_port() -> dict[str, int]:
    """Established TCP connections of this process, by the port they are connected to."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    counts: dict[str, int] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                port = str(int(fields[2].rsplit(":", 1)[1], 16))
                counts[port] = counts.get(port, 0) + 1
    return counts


def vitals(homepage: Homepage) -> dict[str, Any]:
    """This worker's resources and counters, as JSON-ready values."""
    agg = homepage.aggregator
    cache = agg.cache
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "sockets": _tcp_connections(),
        "connections": _connections_by_peer_port(),
        "rssBytes": _rss_bytes(),
        "aggregator": attrs.asdict(agg.stats),
        "executor": attrs.asdict(agg.executor.stats),
        "refreshing": agg.refreshing,
        "breakers": {name: agg.breaker_state(name).value for name in agg.sections},
    }
    redis: RedisCache | None = None
    memory: MemoryCache | None = None
    if isinstance(cache, LayeredCache):
        redis, memory = cache.redis, cache.memory
        out["layered"] = attrs.asdict(cache.stats)
    elif isinstance(cache, MemoryCache):
        memory = cache
    if redis is not None:
        # A cluster client has a pool per node, not one: not counted here.
        pool: Any = getattr(redis.client, "connection_pool", None)
        out["redis"] = {
            **attrs.asdict(redis.stats),
            "inFlight": redis.in_flight,
            "cluster": redis.cluster,
            # redis-py keeps these private; a debugging aid, read defensively.
            # Pooled connection objects, connected or not (they reconnect lazily).
            "poolConnections": len(getattr(pool, "_available_connections", ()))
            + len(getattr(pool, "_in_use_connections", ())),
        }
    if memory is not None:
        out["memory"] = {"entries": len(memory), "bytes": memory.size_bytes}
    return out
