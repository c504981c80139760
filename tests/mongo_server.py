"""The MongoDB of the homepage tests: one seeded server per test session.

``MONGODB_URL`` names a real server when set; otherwise the embedded
nx-27017 is started on a free loopback port. Either way the data is seeded
once, into :data:`TEST_DB`, with a fixed ``now`` so that which flash sales
are running is known. Tests then open their own ``AsyncMongoClient`` in
their own event loop (pymongo's async client belongs to one loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Final, TypeVar

import attrs
import pytest
from examples.homepage.data import SeedSummary, seed
from examples.homepage.mongo import (
    URL_ENV,
    Database,
    EmbeddedMongo,
    EmbeddedMongoError,
    connect,
)

#: A database of its own, so a real server's ``homepage`` data is never touched.
TEST_DB: Final = "batchpage_test_homepage"
#: The seeded data's "now": flash sales running, over and to come are relative to it.
SEED_NOW: Final = datetime(2026, 11, 23, 21, 0, 0, tzinfo=UTC)
TEST_PRODUCTS: Final = 1500
TEST_SEED: Final = 42

T = TypeVar("T")


@attrs.frozen
class SeededMongo:
    """A running, seeded server: where it is and what was written."""

    url: str
    db_name: str
    summary: SeedSummary
    now: datetime


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` on a fresh asyncio loop in another thread.

    Session fixtures are set up between tests, where an event loop of the
    test runner may exist; a thread of its own keeps the two apart.
    """

    async def main() -> T:
        return await fn()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


async def seed_at(
    url: str, db_name: str, *, products: int, seed_value: int, now: datetime
) -> SeedSummary:
    client = connect(url)
    try:
        return await seed(client[db_name], products=products, seed=seed_value, now=now)
    finally:
        await client.close()


@contextmanager
def seeded_mongo(
    *, products: int = TEST_PRODUCTS, seed_value: int = TEST_SEED, now: datetime = SEED_NOW
) -> Iterator[SeededMongo]:
    """A seeded server for a block: ``MONGODB_URL``'s, or an embedded one stopped afterwards.

    An embedded server that cannot start fails the tests (never skips them):
    the examples' sources are only proven over the wire.
    """
    url = os.environ.get(URL_ENV)
    server: EmbeddedMongo | None = None
    if not url:
        server = EmbeddedMongo()
        try:
            server.start()
        except EmbeddedMongoError as exc:
            pytest.fail(f"the embedded MongoDB (nx-27017) did not start: {exc}", pytrace=False)
        url = server.url
    try:
        summary = run_async(
            lambda: seed_at(url, TEST_DB, products=products, seed_value=seed_value, now=now)
        )
        yield SeededMongo(url=url, db_name=TEST_DB, summary=summary, now=summary.now)
    finally:
        if server is not None:
            server.stop()


@asynccontextmanager
async def open_db(mongo: SeededMongo) -> AsyncIterator[Database]:
    """A client in the running loop, closed afterwards; yields the seeded database."""
    client = connect(mongo.url)
    try:
        yield client[mongo.db_name]
    finally:
        await client.close()


@pytest.fixture
async def db(homepage_mongo: SeededMongo, anyio_backend: object) -> AsyncIterator[Database]:
    """A client on the session's seeded database, opened in the test's own event loop.

    Test modules pin ``anyio_backend`` to asyncio: pymongo's async client needs it.
    """
    async with open_db(homepage_mongo) as database:
        yield database


@pytest.fixture(scope="session")
def homepage_mongo() -> Iterator[SeededMongo]:
    """One seeded MongoDB-compatible server for the session (``MONGODB_URL``'s if set)."""
    with seeded_mongo() as mongo:
        yield mongo
