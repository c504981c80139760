"""The homepage's six sections, run by a real ``batchpage.Aggregator`` over the wire."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from examples.homepage.mongo import Database, connect
from examples.homepage.queries import featured_products, user_favorite_categories
from examples.homepage.sources import (
    DEFAULT_LIMIT,
    LEGACY_ENDPOINTS,
    LEGACY_QUERIES,
    POLICIES,
    SECTION_NAMES,
    build_sections,
    legacy_queries,
)

from batchpage import Aggregator, CacheStatus, ErrorCode, RequestContext, Scope, Section
from mongo_server import SeededMongo

pytestmark = [pytest.mark.anyio, pytest.mark.mongo]

# Generous: these tests check behaviour, not speed, on a possibly busy machine.
TIMEOUT = 5.0

HOSTILE_USER_IDS = ['{"$ne": null}', "*", ".*", "$where", "u1\x00", "x" * 10_000]


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """pymongo's AsyncMongoClient runs on asyncio only."""
    return "asyncio", {}


@pytest.fixture
def sections(db: Database, homepage_mongo: SeededMongo) -> list[Section]:
    now = homepage_mongo.now
    return build_sections(db, now=lambda: now, timeout=TIMEOUT)


@pytest.fixture
async def agg(sections: list[Section]) -> AsyncIterator[Aggregator]:
    async with Aggregator(sections, page="homepage") as aggregator:
        yield aggregator


def _ctx(user_id: str | None = None, limit: int = DEFAULT_LIMIT) -> RequestContext:
    return RequestContext(user_id=user_id, params={"limit": limit})


def _by_name(sections: list[Section]) -> dict[str, Section]:
    return {s.name: s for s in sections}


# -- configuration ------------------------------------------------------------


def test_six_sections_with_their_wire_names(sections: list[Section]) -> None:
    """build_sections gives the six sections, named as on the wire, in page order."""
    assert tuple(s.name for s in sections) == SECTION_NAMES
    assert SECTION_NAMES == (
        "featuredProducts",
        "newArrivals",
        "featuredStores",
        "featuredEvents",
        "featuredOffers",
        "flashSales",
    )


def test_only_featured_products_is_personal(sections: list[Section]) -> None:
    """featuredProducts is scoped per user; the five others are global."""
    scopes = {s.name: s.scope for s in sections}
    assert scopes.pop("featuredProducts") is Scope.USER
    assert set(scopes.values()) == {Scope.GLOBAL}


def test_every_section_is_cached_and_flash_sales_briefly(sections: list[Section]) -> None:
    """Every section has a cache policy; flash sales' is the shortest, with no stale-on-error."""
    policies = {s.name: s.cache for s in sections}
    assert policies == dict(POLICIES)
    flash = POLICIES["flashSales"]
    assert all(flash.expiry <= p.expiry for p in POLICIES.values())
    assert flash.stale_if_error == 0
    assert POLICIES["featuredProducts"].fresh < POLICIES["newArrivals"].fresh


def test_timeout_applies_to_every_section(db: Database) -> None:
    """The ``timeout`` argument is each section's timeout."""
    assert {s.timeout for s in build_sections(db, timeout=0.25)} == {0.25}


def test_legacy_queries_cover_the_six_sections() -> None:
    """Each wire name has a legacy query and a legacy endpoint."""
    assert tuple(LEGACY_QUERIES) == SECTION_NAMES
    assert tuple(LEGACY_ENDPOINTS) == SECTION_NAMES
    assert LEGACY_ENDPOINTS["flashSales"] == "/offers?flashSale=true"


# -- the page over the wire -------------------------------------------------------


async def test_the_page_has_all_six_sections(agg: Aggregator) -> None:
    """A cold page over MongoDB is a 200 with six non-empty lists and no error."""
    page = await agg.fetch(_ctx())
    assert page.status_code == 200
    assert page.errors == []
    assert list(page.sections) == list(SECTION_NAMES)
    assert all(isinstance(v, list) and v for v in page.sections.values())
    assert json.loads(page.to_json())["sections"] == page.sections


async def test_a_second_page_comes_from_the_cache(agg: Aggregator) -> None:
    """The same request again is answered by the cache: every section a HIT."""
    first = await agg.fetch(_ctx())
    second = await agg.fetch(_ctx())
    assert {r.cache for r in second.results.values()} == {CacheStatus.HIT}
    assert second.sections == first.sections


@pytest.mark.parametrize("limit", [1, 4])
async def test_limit_bounds_every_section(agg: Aggregator, limit: int) -> None:
    """``params["limit"]`` bounds every section of the page."""
    page = await agg.fetch(_ctx(limit=limit))
    assert all(1 <= len(items) <= limit for items in page.sections.values())


async def test_limit_defaults_to_ten(agg: Aggregator) -> None:
    """Without a ``limit`` parameter a section holds ten items."""
    page = await agg.fetch(RequestContext())
    assert len(page.sections["newArrivals"]) == DEFAULT_LIMIT


async def test_a_bad_limit_fails_in_the_source(sections: list[Section]) -> None:
    """A limit the HTTP layer should have refused never reaches MongoDB as ``limit(0)``."""
    source = _by_name(sections)["newArrivals"].source
    with pytest.raises(ValueError, match="limit must be between 1 and 50"):
        await source(RequestContext(params={"limit": 0}))


async def test_flash_sales_follow_the_injected_clock(
    db: Database, homepage_mongo: SeededMongo
) -> None:
    """The flashSales section asks ``now()`` at fetch time: a week later nothing runs."""
    later = homepage_mongo.now + timedelta(days=7)
    async with Aggregator(
        build_sections(db, now=lambda: later, timeout=TIMEOUT), page="homepage"
    ) as agg:
        page = await agg.fetch(_ctx(), sections=["flashSales"])
    assert page.sections["flashSales"] == []


# -- the personal section -----------------------------------------------------


async def test_a_user_gets_featured_products_of_their_favourites(
    agg: Aggregator, db: Database
) -> None:
    """u1's featuredProducts are featured products of u1's favourite categories."""
    favourites = await user_favorite_categories(db, "u1")
    assert favourites
    page = await agg.fetch(_ctx("u1"))
    items = page.sections["featuredProducts"]
    assert items
    assert all(p["featured"] and p["category"] in favourites for p in items)
    assert items == await featured_products(db, limit=DEFAULT_LIMIT, categories=favourites)


async def test_anonymous_gets_the_generic_featured_products(agg: Aggregator, db: Database) -> None:
    """Without a user id, featuredProducts is the generic featured list."""
    page = await agg.fetch(_ctx())
    assert page.sections["featuredProducts"] == await featured_products(db, limit=DEFAULT_LIMIT)


async def test_personal_and_anonymous_pages_differ(agg: Aggregator) -> None:
    """A user with favourites sees other featured products than an anonymous visitor."""
    mine = await agg.fetch(_ctx("u1"))
    anonymous = await agg.fetch(_ctx())
    assert mine.sections["featuredProducts"] != anonymous.sections["featuredProducts"]


@pytest.mark.parametrize("user_id", ["u2", "u999999"])
async def test_users_without_favourites_get_the_generic_list(
    agg: Aggregator, db: Database, user_id: str
) -> None:
    """A user without favourites, or an unknown one, gets the generic featured products."""
    page = await agg.fetch(_ctx(user_id))
    assert page.sections["featuredProducts"] == await featured_products(db, limit=DEFAULT_LIMIT)


@pytest.mark.parametrize("user_id", HOSTILE_USER_IDS)
async def test_a_hostile_user_id_gets_the_generic_page(
    agg: Aggregator, db: Database, user_id: str
) -> None:
    """Operator-like, wildcard or huge user ids are plain values: a 200 generic page."""
    page = await agg.fetch(_ctx(user_id))
    assert page.status_code == 200
    assert page.errors == []
    assert page.sections["featuredProducts"] == await featured_products(db, limit=DEFAULT_LIMIT)


async def test_only_featured_products_is_keyed_per_user(
    agg: Aggregator, sections: list[Section]
) -> None:
    """Two users share every cache key except featuredProducts'."""
    alice, bob = _ctx("u1"), _ctx("u3")
    differing = {s.name for s in sections if agg.key_for(s, alice) != agg.key_for(s, bob)}
    assert differing == {"featuredProducts"}


async def test_global_sources_never_see_the_user(db: Database, homepage_mongo: SeededMongo) -> None:
    """A global section's value is the same whoever asks first (it is one shared entry)."""
    sections = _by_name(build_sections(db, now=lambda: homepage_mongo.now, timeout=TIMEOUT))
    for name in SECTION_NAMES[1:]:
        source = sections[name].source
        assert await source(_ctx("u1")) == await source(_ctx())


# -- legacy endpoints and failure -----------------------------------------------


@pytest.mark.parametrize("user_id", [None, "u1"])
async def test_legacy_queries_answer_what_the_page_does(
    agg: Aggregator, db: Database, homepage_mongo: SeededMongo, user_id: str | None
) -> None:
    """Each legacy query gives the same items as the batch page's section."""
    now = homepage_mongo.now
    page = await agg.fetch(_ctx(user_id, limit=5))
    for name, query in legacy_queries(now=lambda: now).items():
        assert await query(db, 5, user_id) == page.sections[name], name


def _dead_url() -> str:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"mongodb://127.0.0.1:{sock.getsockname()[1]}"


async def test_a_database_that_is_down_gives_a_503_of_nulls() -> None:
    """With MongoDB unreachable and nothing cached, every section is null: a 503, not []s."""
    client = connect(_dead_url())
    try:
        now = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
        down = build_sections(client["homepage"], now=lambda: now, timeout=0.2)
        async with Aggregator(down, page="homepage") as agg:
            page = await agg.fetch(_ctx())
    finally:
        await client.close()
    assert page.status_code == 503
    assert set(page.sections.values()) == {None}
    assert {e.section for e in page.errors} == set(SECTION_NAMES)
    assert {e.code for e in page.errors} <= {ErrorCode.TIMEOUT_ERROR, ErrorCode.SOURCE_ERROR}


async def test_timed_out_sections_never_wedge_the_client() -> None:
    """Sections cut off while pymongo waits for a server leave the client able to close.

    Cancelling pymongo mid server-selection could leave its topology lock
    held (a page in four hung here before queries ran detached).
    """
    now = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
    for _ in range(10):
        client = connect(_dead_url())
        try:
            down = build_sections(client["homepage"], now=lambda: now, timeout=0.05)
            async with Aggregator(down, page="homepage") as agg:
                with anyio.fail_after(30):  # hang guards, not timing assertions
                    await agg.fetch(_ctx())
        finally:
            with anyio.fail_after(30):
                await client.close()
