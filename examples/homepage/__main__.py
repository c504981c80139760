"""Seed the homepage's collections: ``python -m examples.homepage seed [--products N]``.

Seeds the MongoDB named by ``MONGODB_URL``. Without it, an embedded server
is started for the run only, and its in-memory data ends with it: the apps
seed their own embedded server at start-up, so this command is for a real
MongoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .data import seed
from .mongo import DEFAULT_DB, URL_ENV, connect, mongo_url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.homepage")
    commands = parser.add_subparsers(dest="command", required=True)
    seeding = commands.add_parser("seed", help="drop, refill and index the homepage collections")
    seeding.add_argument("--products", type=int, default=5000, help="how many (default 5000)")
    seeding.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    seeding.add_argument("--db", default=DEFAULT_DB, help=f"database (default {DEFAULT_DB})")
    return parser


async def _seed(args: argparse.Namespace) -> None:
    if not os.environ.get(URL_ENV):
        print(
            f"{URL_ENV} is not set: seeding an embedded server whose data ends with this run",
            file=sys.stderr,
        )
    async with mongo_url() as url:
        client = connect(url)
        try:
            summary = await seed(client[args.db], products=args.products, seed=args.seed)
        finally:
            await client.close()
    print(
        f"seeded {args.db}: {summary.products} products, {summary.stores} stores, "
        f"{summary.events} events, {summary.offers} offers ({summary.flash_sales} flash sales), "
        f"{summary.users} users; dates relative to {summary.now.isoformat()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.products < 1:
        _parser().error("--products must be at least 1")
    asyncio.run(_seed(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
