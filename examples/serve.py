"""Start the homepage: ``python -m examples.serve [--app fastapi|django] [--port 8000]``.

The FastAPI app (or, with ``--app django``, the Django one) under uvicorn
with uvloop and httptools, the stack the benchmarks chose
(``benchmarks/bench_stack.py``), on its embedded defaults unless the
environment says otherwise (see :mod:`examples.service.settings`): an
nx-27017 MongoDB-compatible server on a free loopback port, seeded with
deterministic data, and an in-memory cache. Once it answers, the URL and a
few ``curl`` commands are printed. Ctrl-C stops it, and everything it started.

It serves the demo page at ``/`` with the demo's run-time fault switch on
(``/demo/faults``, see :mod:`examples.service.demo`), so the page can break
a section; ``--no-demo-faults`` (or ``BATCHPAGE_DEMO_FAULTS=0``) turns it
off. The switch lets anyone who reaches the server break its page: keep it
on loopback, and off in production.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import uvicorn
from uvicorn.supervisors import Multiprocess

from examples.service.settings import Settings, SettingsError

#: The apps, by name: their ASGI import path (a factory for FastAPI).
APPS = {
    "fastapi": "examples.fastapi_app.app:create_app",
    "django": "examples.django_app.asgi:application",
}
#: uvicorn's event loop and HTTP parser: uvloop and httptools, which the examples extra
#: installs (``auto`` falls back to asyncio and h11 where they are missing, on Windows).
LOOP, HTTP = "auto", "auto"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.serve", description=__doc__)
    parser.add_argument(
        "--app", choices=sorted(APPS), default="fastapi", help="which example (default fastapi)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes (default 1); with more, one embedded MongoDB is shared by all",
    )
    parser.add_argument(
        "--demo-faults",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the demo page's fault switch, /demo/faults (default: on, unless "
        "BATCHPAGE_DEMO_FAULTS=0)",
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _banner(base: str, settings: Settings, app: str = "fastapi") -> str:
    mongo = "embedded nx-27017, seeded" if settings.embedded else "MONGODB_URL"
    cache = "memory + Redis (REDIS_URL)" if settings.redis_url else "memory"
    switch = (
        f"on: POST {base}/demo/faults can break a section (--no-demo-faults turns it off)"
        if settings.demo_faults
        else "off (--demo-faults turns it on)"
    )
    return "\n".join(
        [
            "",
            f"batchpage homepage ({app}) on {base}  (MongoDB: {mongo}; cache: {cache})",
            "",
            f"  curl -s '{base}/homepage?limit=3'",
            f"  curl -sN '{base}/homepage/stream?limit=3'",
            f"  curl -s '{base}/products/featured?limit=3'   # one of the six legacy calls",
            f"  curl -s -c jar -H 'Content-Type: application/json' -d '{{\"userId\": \"u1\"}}' "
            f"'{base}/session'   # sign in",
            f"  curl -si -b jar '{base}/homepage?limit=3'   # u1's page (private)",
            f"  curl -s -H 'X-Simulated-Latency-Ms: 300' '{base}/homepage?limit=3'   # simulated",
            "",
            f"  open {base}/ in a browser for the demo page: six calls vs one batch vs the stream",
            f"  demo fault switch {switch}",
            "",
            "Ctrl-C to stop.",
            "",
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn's server, printing the banner once it listens."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self.banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self.banner, flush=True)


def _carry(settings: Settings) -> None:
    """Put what the command line decided in the environment, where the apps read it.

    The Django app reads its settings from the environment when it is
    imported, and so does each worker process: the demo fault switch goes
    there too.
    """
    os.environ["BATCHPAGE_DEMO_FAULTS"] = "1" if settings.demo_faults else "0"


def serve(host: str, port: int, settings: Settings, app: str = "fastapi") -> None:
    """Run until interrupted."""
    _carry(settings)
    config = uvicorn.Config(
        _app(app, settings),
        host=host,
        port=port,
        loop=LOOP,
        http=HTTP,
        log_level="warning",
        lifespan="on",
    )
    _Server(config, _banner(f"http://{host}:{port}", settings, app)).run()


def _app(app: str, settings: Settings) -> Callable[..., Any]:
    if app == "fastapi":
        from examples.fastapi_app.app import create_app

        return create_app(settings)
    from examples.django_app.asgi import application

    return application


def serve_workers(
    host: str, port: int, settings: Settings, workers: int, app: str = "fastapi"
) -> None:
    """Several uvicorn workers, each its own app, aggregator and memory layer.

    They share what must be shared: one database (an embedded server started
    here and seeded once, unless ``MONGODB_URL`` is set), the session key
    (so a sign-in holds on every worker), and Redis when ``REDIS_URL`` is set.
    """
    from examples.homepage.data import seed
    from examples.homepage.mongo import EmbeddedMongo, connect

    env = os.environ
    _carry(settings)  # each worker reads its settings from the environment
    if not settings.session_secret:
        env["BATCHPAGE_SESSION_SECRET"] = secrets.token_urlsafe(32)
    with contextlib.ExitStack() as stack:
        if settings.embedded:
            server = stack.enter_context(EmbeddedMongo())
            env["MONGODB_URL"] = server.url
            env["BATCHPAGE_SEED"] = "0"

            async def seed_once() -> None:
                client = connect(server.url)
                try:
                    await seed(
                        client[settings.db_name], products=settings.products, now=settings.now
                    )
                finally:
                    await client.close()

            anyio.run(seed_once)
        banner = _banner(f"http://{host}:{port}", settings, app)
        print(banner + f"({workers} workers)\n", flush=True)
        config = uvicorn.Config(
            APPS[app],
            factory=app == "fastapi",
            host=host,
            port=port,
            loop=LOOP,
            http=HTTP,
            workers=workers,
            log_level="warning",
            lifespan="on",
        )
        # What uvicorn.run does for workers, plus TCP_NODELAY on the listening
        # socket (accepted sockets inherit it): uvicorn binds a socket whose
        # protocol reads 0, so asyncio's loop does not set TCP_NODELAY on
        # connections, and a keep-alive request then waits ~40 ms for a delayed
        # ACK. uvloop sets it on every TCP connection; this keeps it so where
        # uvloop is missing.
        sock = config.bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Multiprocess(config, sockets=[sock]).run()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.app == "fastapi":  # Django's LOGGING setting configures the Django app's
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("batchpage").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env(os.environ)
        if args.demo_faults is not None:
            settings = attrs.evolve(settings, demo_faults=args.demo_faults)
        elif "BATCHPAGE_DEMO_FAULTS" not in os.environ:
            settings = attrs.evolve(settings, demo_faults=True)  # the demo page's switch
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"starting the {args.app} homepage (MongoDB, seed, aggregator)...", flush=True)
    try:
        if args.workers > 1:
            serve_workers(args.host, args.port, settings, args.workers, args.app)
        else:
            serve(args.host, args.port, settings, args.app)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
