"""Start the homepage: ``python -m examples.serve [--host 127.0.0.1] [--port 8000]``.

The FastAPI app under uvicorn, on its embedded defaults unless the
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
import logging
import os
import socket
import sys

import attrs
import uvicorn

from examples.fastapi_app.app import create_app
from examples.service.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--demo-faults",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the demo page's fault switch, /demo/faults (default: on, unless "
        "BATCHPAGE_DEMO_FAULTS=0)",
    )
    return parser


def _banner(base: str, settings: Settings) -> str:
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
            f"batchpage homepage on {base}  (MongoDB: {mongo}; cache: {cache})",
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


def serve(host: str, port: int, settings: Settings) -> None:
    """Run until interrupted."""
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="warning", lifespan="on"
    )
    _Server(config, _banner(f"http://{host}:{port}", settings)).run()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    print("starting the homepage (MongoDB, seed, aggregator)...", flush=True)
    try:
        serve(args.host, args.port, settings)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
