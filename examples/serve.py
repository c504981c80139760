"""Start the homepage: ``python -m examples.serve [--host 127.0.0.1] [--port 8000]``.

The FastAPI app under uvicorn, on its embedded defaults unless the
environment says otherwise (see :mod:`examples.service.settings`): an
nx-27017 MongoDB-compatible server on a free loopback port, seeded with
deterministic data, and an in-memory cache. Once it answers, the URL and a
few ``curl`` commands are printed. Ctrl-C stops it, and everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import socket
import sys

import anyio
import uvicorn

from examples.fastapi_app.app import create_app
from examples.service.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes (default 1); with more, one embedded MongoDB is shared by all",
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _banner(base: str, settings: Settings) -> str:
    mongo = "embedded nx-27017, seeded" if settings.embedded else "MONGODB_URL"
    cache = "memory + Redis (REDIS_URL)" if settings.redis_url else "memory"
    return "\n".join(
        [
            "",
            f"batchpage homepage on {base}  (MongoDB: {mongo}; cache: {cache})",
            "",
            f"  curl -s '{base}/homepage?limit=3'",
            f"  curl -si '{base}/homepage?userId=u1&limit=3'",
            f"  curl -sN '{base}/homepage/stream?limit=3'",
            f"  curl -s '{base}/products/featured?limit=3'   # one of the six legacy calls",
            f"  curl -s '{base}/rollout?userId=u1'",
            f"  open {base}/ in a browser for the demo page",
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


def serve(host: str, port: int, settings: Settings) -> None:
    """Run until interrupted."""
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="warning", lifespan="on"
    )
    _Server(config, _banner(f"http://{host}:{port}", settings)).run()


def serve_workers(host: str, port: int, settings: Settings, workers: int) -> None:
    """Several uvicorn workers, each its own app, aggregator and memory layer.

    They share what must be shared: one database (an embedded server started
    here and seeded once, unless ``MONGODB_URL`` is set), the session key
    (so a sign-in holds on every worker), and Redis when ``REDIS_URL`` is set.
    """
    from examples.homepage.data import seed
    from examples.homepage.mongo import EmbeddedMongo, connect

    env = os.environ
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
        print(_banner(f"http://{host}:{port}", settings) + f"({workers} workers)\n", flush=True)
        uvicorn.run(
            "examples.fastapi_app.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            lifespan="on",
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("batchpage").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("starting the homepage (MongoDB, seed, aggregator)...", flush=True)
    try:
        if args.workers > 1:
            serve_workers(args.host, args.port, settings, args.workers)
        else:
            serve(args.host, args.port, settings)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
