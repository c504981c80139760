"""The homepage's six sections over MongoDB, and the same queries for the legacy endpoints.

:func:`build_sections` gives the batch page's :class:`batchpage.Section` s;
:data:`LEGACY_QUERIES` gives the six old endpoints the very same functions,
so that the batch page and the legacy calls answer the same JSON.

``LEGACY_QUERIES`` maps each wire name in :data:`SECTION_NAMES` to an async
function ``(db, limit, user_id) -> list[dict]``:

* ``db`` is a pymongo ``AsyncDatabase``; ``limit`` an int from 1 to
  :data:`~examples.homepage.queries.MAX_LIMIT` (validate it first: an out of
  range value raises ``ValueError``); ``user_id`` a ``str`` or ``None``
  (anonymous). Only ``featuredProducts`` reads it; the others ignore it.
* the result is a list of JSON-ready dicts (``id`` strings, ISO-8601 dates).

:data:`LEGACY_ENDPOINTS` maps the same names to the old paths
(``/products/featured``, ..., ``/offers?flashSale=true``). ``flashSales``
reads the clock at call time; :func:`legacy_queries` builds the mapping on
another clock (tests pin it).

Why the sections are configured as they are:

* ``featuredProducts`` is the one personal section (``Scope.USER``): a known
  user with favourite categories gets featured products of those categories;
  a user without favourites, an unknown user, an anonymous request, or
  favourites without a featured product get the generic list. Its entries
  are per user, so they live shorter (60 s fresh).
* the five others are the same for everyone (``Scope.GLOBAL``): their sources
  never see the user id, so one shared entry can never leak anyone's data.
* catalogue sections: 180 s fresh, 120 s stale-while-revalidate, and a stale
  value stands in for 10 minutes when MongoDB fails.
* flash sales are time-bound: 15 s fresh, 15 s stale, and *no* stale value
  on error, since that could show a sale that has ended.
* no section has a fallback value: ``[]`` would tell the client "nothing
  featured" when the truth is "unknown". A failed section is ``null`` with an
  error entry, as in the seed, and a database that is down with nothing
  cached gives a 503 with ``Retry-After``, not a 200 page of empty lists
  that a CDN would keep for a minute.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import pymongo

from batchpage import CachePolicy, RequestContext, Scope, Section

from .mongo import Database, Document
from .queries import (
    MAX_LIMIT,
    featured_events,
    featured_offers,
    featured_products,
    featured_stores,
    flash_sales,
    new_arrivals,
    user_favorite_categories,
)

#: The sections' wire names, in page order.
SECTION_NAMES: Final[tuple[str, ...]] = (
    "featuredProducts",
    "newArrivals",
    "featuredStores",
    "featuredEvents",
    "featuredOffers",
    "flashSales",
)

#: ``limit`` when the request gives none.
DEFAULT_LIMIT: Final = 10

#: The legacy endpoint of each section.
LEGACY_ENDPOINTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "featuredProducts": "/products/featured",
        "newArrivals": "/products/new-arrivals",
        "featuredStores": "/stores/featured",
        "featuredEvents": "/events/featured",
        "featuredOffers": "/offers?featured=true",
        "flashSales": "/offers?flashSale=true",
    }
)

_CATALOGUE = CachePolicy(fresh=180, stale=120, stale_if_error=600)

#: Each section's cache policy (see the module docstring for why).
POLICIES: Final[Mapping[str, CachePolicy]] = MappingProxyType(
    {
        "featuredProducts": CachePolicy(fresh=60, stale=60, stale_if_error=300),
        "newArrivals": _CATALOGUE,
        "featuredStores": _CATALOGUE,
        "featuredEvents": _CATALOGUE,
        "featuredOffers": _CATALOGUE,
        "flashSales": CachePolicy(fresh=15, stale=15, stale_if_error=0),
    }
)

#: The one section whose value depends on the user.
PERSONAL: Final = frozenset({"featuredProducts"})

LegacyQuery: TypeAlias = Callable[[Database, int, str | None], Awaitable[list[Document]]]
Clock: TypeAlias = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def personal_featured_products(
    db: Database, limit: int, user_id: str | None
) -> list[Document]:
    """Featured products of the user's favourite categories, else the generic ones."""
    if user_id is not None:
        favourites = await user_favorite_categories(db, user_id)
        if favourites:
            mine = await featured_products(db, limit=limit, categories=favourites)
            if mine:
                return mine
    return await featured_products(db, limit=limit)


def legacy_queries(*, now: Clock = utc_now) -> dict[str, LegacyQuery]:
    """The six queries as ``(db, limit, user_id) -> list[dict]``, flash sales on ``now``."""

    async def new(db: Database, limit: int, user_id: str | None) -> list[Document]:
        return await new_arrivals(db, limit=limit)

    async def stores(db: Database, limit: int, user_id: str | None) -> list[Document]:
        return await featured_stores(db, limit=limit)

    async def events(db: Database, limit: int, user_id: str | None) -> list[Document]:
        return await featured_events(db, limit=limit)

    async def offers(db: Database, limit: int, user_id: str | None) -> list[Document]:
        return await featured_offers(db, limit=limit)

    async def flash(db: Database, limit: int, user_id: str | None) -> list[Document]:
        return await flash_sales(db, limit=limit, now=now())

    return {
        "featuredProducts": personal_featured_products,
        "newArrivals": new,
        "featuredStores": stores,
        "featuredEvents": events,
        "featuredOffers": offers,
        "flashSales": flash,
    }


#: The legacy endpoints' queries, on the real clock (see the module docstring).
LEGACY_QUERIES: Final[Mapping[str, LegacyQuery]] = MappingProxyType(legacy_queries())


def limit_from(ctx: RequestContext) -> int:
    """``ctx.params["limit"]`` (an int, or a string of digits), :data:`DEFAULT_LIMIT` if absent."""
    value: Any = ctx.params.get("limit", DEFAULT_LIMIT)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 4:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"limit must be an int, not {value!r}")
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {value!r}")
    return value


def _source(
    name: str, query: LegacyQuery, db: Database, timeout: float
) -> Callable[[RequestContext], Awaitable[list[Document]]]:
    personal = name in PERSONAL

    async def source(ctx: RequestContext) -> list[Document]:
        # pymongo gives up when the section does: a query left behind by a
        # timed-out section (see queries.detached) ends soon after.
        with pymongo.timeout(timeout):
            # A shared (global) entry must not depend on who asked first.
            return await query(db, limit_from(ctx), ctx.user_id if personal else None)

    source.__name__ = source.__qualname__ = name
    return source


def build_sections(db: Database, *, now: Clock = utc_now, timeout: float = 0.5) -> list[Section]:
    """The homepage's six sections over ``db``, in page order.

    ``now`` is the clock of the flash sales (tests pin it); ``timeout`` is
    each section's, in seconds.
    """
    queries = legacy_queries(now=now)
    return [
        Section(
            name=name,
            source=_source(name, queries[name], db, timeout),
            timeout=timeout,
            cache=POLICIES[name],
            scope=Scope.USER if name in PERSONAL else Scope.GLOBAL,
        )
        for name in SECTION_NAMES
    ]
