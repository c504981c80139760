"""Drive an example app in-process over ASGI, to time and profile a request's path.

``python -m benchmarks.profile_http [--app fastapi|django] [--target PATH]...
[--requests N] [--profile FILE.html]``

No server, no socket: the app's lifespan runs (over an embedded, seeded
MongoDB) and each target is called as an ASGI application, one request
after another, on asyncio. What it prints is the microseconds of the app's
own work per request (the framework, its middleware and batchpage), which a
server adds its own work to; ``--profile`` writes a pyinstrument profile
of the first target's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from ._servers import APPS
from .bench_http import SEED_NOW, seeded_mongo

Message = MutableMapping[str, Any]


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Run ``app``'s ASGI lifespan for the block; yields the state it set."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), 60)
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan: {started}")
    try:
        yield state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 30)


def http_scope(target: str, state: dict[str, Any]) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }


async def call(app: Any, scope: dict[str, Any]) -> tuple[int, bytes]:
    """One request: its status and body."""
    sent: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if requested:  # then only a disconnect, which never comes (Django listens for it)
            await asyncio.Future()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(dict(scope), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def per_request(
    app: Any, scopes: dict[str, dict[str, Any]], requests: int, rounds: int = 5
) -> dict[str, float]:
    """Microseconds per request of each target: the best of ``rounds`` loops, taken in turn.

    Best, not median: on a shared machine, what others run only ever adds time.
    """
    best = dict.fromkeys(scopes, float("inf"))
    for _ in range(rounds):
        for target, scope in scopes.items():
            start = time.perf_counter()
            for _ in range(requests):
                await call(app, scope)
            best[target] = min(best[target], (time.perf_counter() - start) / requests)
    return {target: seconds * 1e6 for target, seconds in best.items()}


async def main(args: argparse.Namespace) -> None:
    async with seeded_mongo() as mongo:
        os.environ.update(
            MONGODB_URL=mongo.url,
            BATCHPAGE_DB="homepage",
            BATCHPAGE_SEED="0",
            BATCHPAGE_EXAMPLE_NOW=SEED_NOW.isoformat(),
            BATCHPAGE_BENCH_BARE="1",
        )
        module, _, name = APPS[args.app].partition(":")
        app = getattr(__import__(module, fromlist=[name]), name)
        if args.app == "fastapi":
            app = app()
        async with lifespan(app) as state:
            if args.gc_freeze:
                import gc

                gc.collect()
                gc.freeze()
            for target in args.target:
                status, _ = await call(app, http_scope(target, state))  # warm the cache
                if status != 200:
                    raise RuntimeError(f"{target}: {status}")
            scopes = {target: http_scope(target, state) for target in args.target}
            times = await per_request(app, scopes, args.requests)
            for target, us in times.items():
                ratio = times[args.target[0]] / us
                print(
                    f"{args.app} {target}: {us:.1f} us per request ({ratio:.2f} x the first's rate)"
                )
            if args.profile:
                from pyinstrument import Profiler

                scope = http_scope(args.target[0], state)
                with Profiler(interval=0.0001, async_mode="disabled") as profiler:
                    for _ in range(args.requests):
                        await call(app, scope)
                profiler.write_html(args.profile)
                print(profiler.output_text(unicode=False, color=False, show_all=args.all))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--app", choices=sorted(APPS), default="fastapi")
    parser.add_argument("--target", action="append", default=[])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--all", action="store_true", help="show every frame of the profile")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start-up")
    parser.add_argument("--profile", help="write a pyinstrument HTML profile of the first target")
    args = parser.parse_args()
    args.target = args.target or ["/homepage?limit=10", "/bench/bare", "/bench/bare-no-identity"]
    asyncio.run(main(args))
