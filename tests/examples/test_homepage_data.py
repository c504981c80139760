"""The homepage's data over the wire: the embedded server, the seed, the six queries.

Everything runs against a real MongoDB wire-protocol server (the session's
seeded one, see ``mongo_server.py``), never a mock client.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import re
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from examples.homepage.data import CATEGORIES, COLLECTIONS, INDEXES, seed, seed_if_empty
from examples.homepage.mongo import (
    Database,
    Document,
    EmbeddedMongo,
    EmbeddedMongoError,
    connect,
    mongo_url,
)
from examples.homepage.queries import (
    EVENT_FIELDS,
    MAX_LIMIT,
    OFFER_FIELDS,
    PRODUCT_FIELDS,
    STORE_FIELDS,
    detached,
    featured_events,
    featured_offers,
    featured_products,
    featured_stores,
    flash_sales,
    iso_utc,
    jsonable,
    new_arrivals,
    user_favorite_categories,
)

from mongo_server import TEST_DB, SeededMongo, seed_at

pytestmark = [pytest.mark.anyio, pytest.mark.mongo]

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
OBJECT_ID = re.compile(r"[0-9a-f]{24}")

Query = Callable[[Database, int], Awaitable[list[Document]]]


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """pymongo's AsyncMongoClient runs on asyncio only."""
    return "asyncio", {}


@pytest.fixture
def now(homepage_mongo: SeededMongo) -> datetime:
    return homepage_mongo.now


def _queries(now: datetime) -> dict[str, Query]:
    return {
        "featured_products": lambda db, limit: featured_products(db, limit=limit),
        "new_arrivals": lambda db, limit: new_arrivals(db, limit=limit),
        "featured_stores": lambda db, limit: featured_stores(db, limit=limit),
        "featured_events": lambda db, limit: featured_events(db, limit=limit),
        "featured_offers": lambda db, limit: featured_offers(db, limit=limit),
        "flash_sales": lambda db, limit: flash_sales(db, limit=limit, now=now),
    }


QUERY_NAMES = list(_queries(datetime.now(UTC)))


async def _all(db: Database, collection: str) -> list[Document]:
    return await db[collection].find({}).sort("_id", 1).to_list()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the embedded server ------------------------------------------------------


def test_embedded_server_is_stopped_by_pid() -> None:
    """Leaving the block ends the nx-27017 process it started."""
    with EmbeddedMongo() as server:
        pid = server.pid
        was_running = server.running
        assert server.url.startswith("mongodb://127.0.0.1:")
    assert was_running
    assert pid is not None
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_forgotten_server_ends_with_its_object() -> None:
    """A server nobody stopped is stopped when its EmbeddedMongo is collected."""
    server = EmbeddedMongo()
    server.start()
    pid = server.pid
    assert pid is not None
    del server
    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_embedded_server_answers_async_clients() -> None:
    """As an async context manager it serves pymongo's AsyncMongoClient."""
    async with EmbeddedMongo() as server:
        client = connect(server.url)
        try:
            assert (await client.admin.command("ping"))["ok"] == 1
        finally:
            await client.close()


def test_missing_executable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without nx-27017 installed, starting says what to install or set."""
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedMongoError, match=r"nx-27017.*MONGODB_URL"):
        EmbeddedMongo().start()


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    """A server process that dies at start-up is an error naming its exit status."""
    fake = tmp_path / "nx-27017"
    fake.write_text("#!/bin/sh\necho 'cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedMongoError, match=r"(?s)exited with status 3.*cannot bind"):
        EmbeddedMongo(executable=str(fake), startup_timeout=5).start()


async def test_mongo_url_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MONGODB_URL, when set, is used as is and nothing is started."""
    monkeypatch.setenv("MONGODB_URL", "mongodb://db.example:27017")
    monkeypatch.setattr("subprocess.Popen", _no_popen)
    async with mongo_url() as url:
        assert url == "mongodb://db.example:27017"


def _no_popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
    raise AssertionError("no server may be started when MONGODB_URL is set")


# -- seeding ------------------------------------------------------------------


async def test_same_seed_gives_the_same_documents(homepage_mongo: SeededMongo) -> None:
    """Seeding twice with one seed and one ``now`` writes identical documents, ids included."""
    url, now = homepage_mongo.url, homepage_mongo.now
    await seed_at(url, f"{TEST_DB}_a", products=300, seed_value=7, now=now)
    await seed_at(url, f"{TEST_DB}_b", products=300, seed_value=7, now=now)
    client = connect(url)
    try:
        first, second = client[f"{TEST_DB}_a"], client[f"{TEST_DB}_b"]
        for name in COLLECTIONS:
            assert await _all(first, name) == await _all(second, name), name
    finally:
        await client.close()


async def test_another_seed_gives_other_documents(homepage_mongo: SeededMongo) -> None:
    """A different seed gives different products."""
    url, now = homepage_mongo.url, homepage_mongo.now
    await seed_at(url, f"{TEST_DB}_c", products=300, seed_value=8, now=now)
    await seed_at(url, f"{TEST_DB}_d", products=300, seed_value=9, now=now)
    client = connect(url)
    try:
        first, second = client[f"{TEST_DB}_c"], client[f"{TEST_DB}_d"]
        assert await _all(first, "products") != await _all(second, "products")
    finally:
        await client.close()


async def test_seeding_again_replaces_the_data(homepage_mongo: SeededMongo) -> None:
    """Seeding is idempotent: the second run drops what the first wrote."""
    url, now = homepage_mongo.url, homepage_mongo.now
    first = await seed_at(url, f"{TEST_DB}_e", products=200, seed_value=1, now=now)
    second = await seed_at(url, f"{TEST_DB}_e", products=200, seed_value=1, now=now)
    client = connect(url)
    try:
        db = client[f"{TEST_DB}_e"]
        assert first == second
        assert await db.products.count_documents({}) == second.products
        assert await db.offers.count_documents({}) == second.offers
    finally:
        await client.close()


async def test_seed_if_empty_leaves_seeded_data_alone(db: Database) -> None:
    """An app's start-up seeding does nothing when products are already there."""
    assert await seed_if_empty(db, products=50) is None


async def test_seed_summary_counts_what_is_stored(
    db: Database, homepage_mongo: SeededMongo
) -> None:
    """The summary's counts are the collections' counts."""
    summary = homepage_mongo.summary
    assert await db.products.count_documents({}) == summary.products
    assert await db.stores.count_documents({}) == summary.stores
    assert await db.events.count_documents({}) == summary.events
    assert await db.offers.count_documents({}) == summary.offers
    assert await db.offers.count_documents({"flashSale": True}) == summary.flash_sales
    assert await db.users.count_documents({}) == summary.users


async def test_seeding_creates_the_indexes_of_the_queries(db: Database) -> None:
    """Every index the six queries need exists on its collection."""
    for collection, wanted in INDEXES.items():
        info = await db[collection].index_information()
        # Compared by fields only: nx-27017 reports every index as ascending.
        have = {tuple(field for field, _ in index["key"]) for index in info.values()}
        for keys in wanted:
            assert tuple(field for field, _ in keys) in have, (collection, keys)


async def test_seed_refuses_a_naive_now(db: Database) -> None:
    """Dates are anchored to an aware ``now``: a naive one is refused before writing."""
    with pytest.raises(ValueError, match="timezone-aware"):
        await seed(db, products=10, now=datetime(2026, 1, 1))


async def test_a_few_percent_of_products_are_featured(
    db: Database, homepage_mongo: SeededMongo
) -> None:
    """Featured products are a small share, and every category has some."""
    featured = await db.products.count_documents({"featured": True})
    assert (
        0.02 * homepage_mongo.summary.products
        <= featured
        <= 0.08 * (homepage_mongo.summary.products)
    )
    for category in CATEGORIES:
        assert await db.products.count_documents({"featured": True, "category": category}) >= 3


async def test_flash_sales_are_over_running_and_to_come(db: Database, now: datetime) -> None:
    """At the seed's ``now`` some flash sales run, some are over and some have not begun."""
    sales = await db.offers.find({"flashSale": True}).to_list()
    assert any(s["endsAt"] <= now for s in sales)
    assert any(s["startsAt"] <= now < s["endsAt"] for s in sales)
    assert any(s["startsAt"] > now for s in sales)


async def test_users_have_string_ids_and_known_categories(db: Database) -> None:
    """Users are ``u1``, ``u2``, ... with favourites drawn from the fixed categories."""
    users = await db.users.find({}).to_list()
    assert {u["_id"] for u in users} == {f"u{i}" for i in range(1, len(users) + 1)}
    assert all(set(u["favoriteCategories"]) <= set(CATEGORIES) for u in users)
    assert any(u["favoriteCategories"] for u in users)
    assert any(not u["favoriteCategories"] for u in users)


# -- the queries ----------------------------------------------------------------


@pytest.mark.parametrize("name", QUERY_NAMES)
@pytest.mark.parametrize("limit", [1, 3, MAX_LIMIT])
async def test_every_query_is_bounded_by_limit(
    db: Database, now: datetime, name: str, limit: int
) -> None:
    """No query returns more than ``limit`` items."""
    items = await _queries(now)[name](db, limit)
    assert 1 <= len(items) <= limit


@pytest.mark.parametrize("name", QUERY_NAMES)
async def test_every_query_returns_json_ready_documents(
    db: Database, now: datetime, name: str
) -> None:
    """Results dump as JSON: string ids, no ``_id``, ISO-8601 UTC dates ending in Z."""
    items = await _queries(now)[name](db, 10)
    json.dumps(items)
    for item in items:
        assert "_id" not in item
        assert OBJECT_ID.fullmatch(item["id"])
        for field in ("createdAt", "startsAt", "endsAt", "openedAt"):
            if field in item:
                assert ISO_Z.fullmatch(item[field]), item[field]


FIELDS = {
    "featured_products": PRODUCT_FIELDS,
    "new_arrivals": PRODUCT_FIELDS,
    "featured_stores": STORE_FIELDS,
    "featured_events": EVENT_FIELDS,
    "featured_offers": OFFER_FIELDS,
    "flash_sales": OFFER_FIELDS,
}


@pytest.mark.parametrize("name", QUERY_NAMES)
async def test_every_query_gives_its_fields_in_one_order(
    db: Database, now: datetime, name: str
) -> None:
    """Items hold ``id`` then the query's fields, in that order (same data, same bytes)."""
    for item in await _queries(now)[name](db, 5):
        assert list(item) == ["id", *FIELDS[name]]


@pytest.mark.parametrize("name", QUERY_NAMES)
@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
async def test_a_limit_out_of_range_is_refused(
    db: Database, now: datetime, name: str, limit: int
) -> None:
    """``limit(0)`` means "everything" to MongoDB: zero and friends are refused."""
    with pytest.raises(ValueError, match="limit must be between 1 and 50"):
        await _queries(now)[name](db, limit)


async def test_featured_products_are_featured_best_rated_first(db: Database) -> None:
    """Featured products are only featured ones, by rating, the best of all of them."""
    items = await featured_products(db, limit=20)
    assert all(p["featured"] for p in items)
    ratings = [p["rating"] for p in items]
    assert ratings == sorted(ratings, reverse=True)
    best = await db.products.find({"featured": True}).sort("rating", -1).limit(1).to_list()
    assert ratings[0] == best[0]["rating"]


async def test_featured_products_of_categories_stay_in_them(db: Database) -> None:
    """Given categories, featured products come from those categories only."""
    items = await featured_products(db, limit=20, categories=["books", "toys"])
    assert items
    assert {p["category"] for p in items} <= {"books", "toys"}
    assert all(p["featured"] for p in items)


async def test_new_arrivals_are_newest_first(db: Database) -> None:
    """New arrivals are sorted by ``createdAt`` strictly descending, from the newest."""
    items = await new_arrivals(db, limit=25)
    created = [_parse(p["createdAt"]) for p in items]
    assert all(a > b for a, b in itertools.pairwise(created))
    newest = await db.products.find({}).sort("createdAt", -1).limit(1).to_list()
    assert created[0] == newest[0]["createdAt"]


async def test_featured_stores_are_featured(db: Database) -> None:
    """Featured stores are only featured stores, best rated first."""
    items = await featured_stores(db, limit=MAX_LIMIT)
    assert len(items) == await db.stores.count_documents({"featured": True})
    assert all(s["featured"] for s in items)
    assert [s["rating"] for s in items] == sorted((s["rating"] for s in items), reverse=True)


async def test_featured_events_are_featured_soonest_first(db: Database) -> None:
    """Featured events are only featured events, soonest first."""
    items = await featured_events(db, limit=MAX_LIMIT)
    assert len(items) == await db.events.count_documents({"featured": True})
    assert all(e["featured"] for e in items)
    starts = [_parse(e["startsAt"]) for e in items]
    assert starts == sorted(starts)


async def test_featured_offers_are_featured_and_not_flash_sales(db: Database) -> None:
    """Featured offers are featured standing offers; flash sales have their own section."""
    items = await featured_offers(db, limit=MAX_LIMIT)
    assert items
    assert all(o["featured"] and not o["flashSale"] for o in items)
    discounts = [o["discountPercent"] for o in items]
    assert discounts == sorted(discounts, reverse=True)


async def test_flash_sales_are_those_running_now(db: Database, now: datetime) -> None:
    """Flash sales are exactly those with ``startsAt <= now < endsAt``, ending soonest first."""
    items = await flash_sales(db, limit=MAX_LIMIT, now=now)
    sales = await db.offers.find({"flashSale": True}).to_list()
    running = {str(s["_id"]) for s in sales if s["startsAt"] <= now < s["endsAt"]}
    assert {s["id"] for s in items} == running
    ends = [_parse(s["endsAt"]) for s in items]
    assert ends == sorted(ends)


async def test_a_flash_sale_starting_now_runs_and_one_ending_now_does_not(
    db: Database, now: datetime
) -> None:
    """The window is half-open: the start instant is in, the end instant is out."""
    items = await flash_sales(db, limit=MAX_LIMIT, now=now)
    stamp = iso_utc(now)
    assert any(s["startsAt"] == stamp for s in items)
    assert not any(s["endsAt"] == stamp for s in items)


async def test_no_flash_sale_runs_long_after_the_seed(db: Database, now: datetime) -> None:
    """A week after the seed's ``now`` every flash sale is over."""
    assert await flash_sales(db, limit=MAX_LIMIT, now=now + timedelta(days=7)) == []


async def test_flash_sales_need_an_aware_now(db: Database) -> None:
    """A naive ``now`` is ambiguous: refused."""
    with pytest.raises(ValueError, match="timezone-aware"):
        await flash_sales(db, limit=5, now=datetime(2026, 11, 23, 21, 0))


async def test_a_known_user_has_favourite_categories(db: Database) -> None:
    """``u1`` has favourite categories, from the fixed list."""
    favourites = await user_favorite_categories(db, "u1")
    assert favourites
    assert set(favourites) <= set(CATEGORIES)


async def test_a_user_without_favourites_has_an_empty_list(db: Database) -> None:
    """``u2`` exists and has no favourites: ``[]``, not ``None``."""
    assert await user_favorite_categories(db, "u2") == []


async def test_an_unknown_user_is_none(db: Database) -> None:
    """A user id nobody has gives ``None``."""
    assert await user_favorite_categories(db, "u999999") is None


@pytest.mark.parametrize(
    "user_id",
    [
        '{"$ne": null}',
        '{"$gt": ""}',
        "*",
        ".*",
        "$where",
        "u1\x00",
        "u1 ",
        "",
        "u" * 128,
        "x" * 10_000,
    ],
)
async def test_a_hostile_user_id_is_only_a_value(db: Database, user_id: str) -> None:
    """Operator-like, wildcard, empty or huge user ids match no user and raise nothing."""
    assert await user_favorite_categories(db, user_id) is None


async def test_a_user_id_that_is_not_a_string_is_refused(db: Database) -> None:
    """A parsed-JSON operator object never reaches the query."""
    with pytest.raises(TypeError, match="user_id must be a str"):
        await user_favorite_categories(db, {"$ne": None})  # type: ignore[arg-type]


def test_jsonable_renames_ids_and_formats_dates() -> None:
    """``_id`` becomes ``id``; naive datetimes are read as UTC; nested values convert too."""
    doc = {"_id": "x", "at": datetime(2026, 1, 2, 3, 4, 5, 678_000), "tags": [{"_id": "y"}]}
    assert jsonable(doc) == {"id": "x", "at": "2026-01-02T03:04:05.678Z", "tags": [{"id": "y"}]}


def test_jsonable_puts_the_id_first() -> None:
    """``id`` leads wherever the server put ``_id``, so every server gives the same bytes."""
    assert list(jsonable({"name": "n", "_id": "x"})) == ["id", "name"]


async def test_a_caller_that_gives_up_does_not_cancel_the_query() -> None:
    """``detached``: the caller is cancelled at once; the operation itself runs to its end."""
    release, finished = asyncio.Event(), asyncio.Event()

    async def operation() -> None:
        await release.wait()
        finished.set()

    with anyio.CancelScope() as scope:
        scope.cancel()
        await detached(operation)
    assert scope.cancelled_caught
    release.set()
    with anyio.fail_after(10):  # a hang guard, not a timing assertion
        await finished.wait()
