"""The seed's six homepage queries, and the users lookup of the personal one.

Each is a plain async function over an ``AsyncDatabase`` that returns
JSON-ready dicts: ``_id`` becomes a string ``id``, every ObjectId a string,
every datetime an ISO-8601 UTC string ending in ``Z`` (milliseconds, as
JavaScript's ``toISOString`` writes them). Every query is bounded by
``limit``, 1 to :data:`MAX_LIMIT`: MongoDB reads ``limit(0)`` as "no limit",
so zero is refused rather than passed on.

Sort orders end with ``_id``, so that equal ratings or dates still give one
stable order (and one cache entry's worth of bytes).

A user id is only ever a query *value* (``{"_id": {"$eq": user_id}}``), and
must be a ``str``: no request can turn it into an operator or a field name.

No query can be cancelled half-way: each runs in an asyncio task of its own
(:func:`detached`) and ends by pymongo's own timeout. Cancelling an
``AsyncMongoClient`` operation while it waits for a server (pymongo 4.20 on
Python 3.11, where ``asyncio.wait_for`` cleans up in a second step that a
cancel scope interrupts) can leave the client's topology lock held for good:
every later operation, and ``close()``, then hang. A batchpage section that
times out stops *waiting*; the query itself gives up at its pymongo deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import pymongo
from bson import ObjectId

from .mongo import Database, Document

#: The largest ``limit`` any query accepts (the page's contract: 1 to 50).
MAX_LIMIT: Final = 50

#: pymongo's deadline for one query, in seconds; a caller's ``pymongo.timeout`` shortens it.
QUERY_TIMEOUT: Final = 5.0

#: Longer user ids cannot exist (the HTTP contract refuses them): no lookup is made.
MAX_USER_ID_LENGTH: Final = 128

PRODUCT_FIELDS: Final = (
    "name",
    "category",
    "price",
    "rating",
    "reviewCount",
    "featured",
    "createdAt",
    "storeId",
)
STORE_FIELDS: Final = ("name", "city", "rating", "featured", "openedAt")
EVENT_FIELDS: Final = ("title", "city", "storeId", "startsAt", "endsAt", "featured")
OFFER_FIELDS: Final = (
    "title",
    "category",
    "storeId",
    "discountPercent",
    "featured",
    "flashSale",
    "startsAt",
    "endsAt",
)


def iso_utc(value: datetime) -> str:
    """``2026-11-23T21:00:00.000Z``; a naive datetime is read as UTC (pymongo's default)."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def jsonable(value: Any) -> Any:
    """A document (or any BSON value) as JSON-ready Python: ``_id`` → ``id``, no ObjectId."""
    if isinstance(value, Mapping):
        # ``id`` first, wherever the server put ``_id``.
        out = {"id": jsonable(value["_id"])} if "_id" in value else {}
        out.update((k, jsonable(v)) for k, v in value.items() if k != "_id")
        return out
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    return value


T = TypeVar("T")


# asyncio holds tasks weakly: a query whose caller gave up is kept alive here.
_running: set[asyncio.Task[Any]] = set()


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    # Nobody may await a task whose caller gave up: retrieve its outcome here.
    if not task.cancelled():
        task.exception()


async def detached(operation: Callable[[], Awaitable[T]]) -> T:
    """Await ``operation()`` in a task that the caller's cancellation cannot reach.

    The caller may stop waiting at any time (it gets ``CancelledError`` at
    once); the operation runs on to its ``pymongo.timeout`` deadline, at most
    :data:`QUERY_TIMEOUT`, or to the caller's shorter one. See the module
    docstring for why.
    """

    async def bounded() -> T:
        with pymongo.timeout(QUERY_TIMEOUT):
            return await operation()

    # The task copies the caller's context, and with it any pymongo deadline.
    task = asyncio.ensure_future(bounded())
    _running.add(task)
    task.add_done_callback(_finished)
    return await asyncio.shield(task)


def _projection(fields: tuple[str, ...]) -> dict[str, int]:
    return dict.fromkeys(fields, 1)


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {limit!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit!r}")
    return limit


def _check_now(now: datetime) -> datetime:
    if not isinstance(now, datetime):
        raise TypeError(f"now must be a datetime, not {now!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


async def _find(
    db: Database,
    collection: str,
    query: Mapping[str, Any],
    fields: tuple[str, ...],
    sort: list[tuple[str, int]],
    limit: int,
) -> list[Document]:
    cursor = db[collection].find(query, _projection(fields)).sort(sort).limit(_check_limit(limit))
    # Keys in one fixed order (``id``, then ``fields``), whatever order the
    # server keeps them in: the same data gives the same bytes (and ETag).
    return [
        {"id": jsonable(doc["_id"])} | {f: jsonable(doc[f]) for f in fields if f in doc}
        for doc in await detached(cursor.to_list)
    ]


async def featured_products(
    db: Database, *, limit: int, categories: Iterable[str] | None = None
) -> list[Document]:
    """Featured products, best rated first; only of ``categories`` when given."""
    query: dict[str, Any] = {"featured": True}
    if categories is not None:
        wanted = list(categories)
        if not all(isinstance(c, str) for c in wanted):
            raise TypeError(f"categories must be strings, not {wanted!r}")
        query["category"] = {"$in": wanted}
    return await _find(db, "products", query, PRODUCT_FIELDS, [("rating", -1), ("_id", 1)], limit)


async def new_arrivals(db: Database, *, limit: int) -> list[Document]:
    """The newest products, ``createdAt`` descending."""
    return await _find(db, "products", {}, PRODUCT_FIELDS, [("createdAt", -1), ("_id", 1)], limit)


async def featured_stores(db: Database, *, limit: int) -> list[Document]:
    """Featured stores, best rated first."""
    return await _find(
        db, "stores", {"featured": True}, STORE_FIELDS, [("rating", -1), ("_id", 1)], limit
    )


async def featured_events(db: Database, *, limit: int) -> list[Document]:
    """Featured events, soonest first."""
    return await _find(
        db, "events", {"featured": True}, EVENT_FIELDS, [("startsAt", 1), ("_id", 1)], limit
    )


async def featured_offers(db: Database, *, limit: int) -> list[Document]:
    """Featured standing offers, biggest discount first; flash sales have their own section."""
    return await _find(
        db,
        "offers",
        {"featured": True, "flashSale": False},
        OFFER_FIELDS,
        [("discountPercent", -1), ("_id", 1)],
        limit,
    )


async def flash_sales(db: Database, *, limit: int, now: datetime) -> list[Document]:
    """Flash sales running at ``now`` (``startsAt <= now < endsAt``), ending soonest first."""
    at = _check_now(now)
    return await _find(
        db,
        "offers",
        {"flashSale": True, "startsAt": {"$lte": at}, "endsAt": {"$gt": at}},
        OFFER_FIELDS,
        [("endsAt", 1), ("_id", 1)],
        limit,
    )


async def user_favorite_categories(db: Database, user_id: str) -> list[str] | None:
    """A user's favourite categories; ``[]`` for none, ``None`` for an unknown user."""
    if not isinstance(user_id, str):
        raise TypeError(f"user_id must be a str, not {type(user_id).__name__}")
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH:
        return None
    doc = await detached(
        lambda: db.users.find_one({"_id": {"$eq": user_id}}, {"favoriteCategories": 1})
    )
    if doc is None:
        return None
    favourites = doc.get("favoriteCategories")
    if not isinstance(favourites, list):
        return []
    return [c for c in favourites if isinstance(c, str)]
