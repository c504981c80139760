"""The homepage's data: the seed's five collections, filled deterministically.

``await seed(db)`` drops and refills ``products``, ``stores``, ``events``,
``offers`` and ``users`` from ``random.Random(seed)`` and creates the indexes
the six queries need (:data:`INDEXES`). Same seed and same ``now``, same
documents, ``_id`` included. Dates are relative to ``now``, so flash sales
are running, over and upcoming at the moment of seeding.

Every date is a whole second: nx-27017 compares dates in filters at second
precision (MongoDB to the millisecond), and whole seconds make both agree.

Two users are fixed for demos and tests: ``u1`` always has favourite
categories, ``u2`` never has.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs
from bson import ObjectId

from .mongo import Database, Document

#: The product categories; users' favourites are drawn from these.
CATEGORIES: Final = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "books",
    "toys",
    "grocery",
    "garden",
    "automotive",
)

COLLECTIONS: Final = ("products", "stores", "events", "offers", "users")

IndexKeys = Sequence[tuple[str, int]]

#: The indexes of the six queries, per collection (equality, then sort, then range).
INDEXES: Final[Mapping[str, Sequence[IndexKeys]]] = {
    "products": (
        (("featured", 1), ("rating", -1)),  # featured products
        (("featured", 1), ("category", 1), ("rating", -1)),  # ... of favourite categories
        (("createdAt", -1),),  # new arrivals
    ),
    "stores": ((("featured", 1), ("rating", -1)),),
    "events": ((("featured", 1), ("startsAt", 1)),),
    "offers": (
        (("featured", 1), ("flashSale", 1), ("discountPercent", -1)),  # featured offers
        (("flashSale", 1), ("endsAt", 1), ("startsAt", 1)),  # flash sales running now
    ),
    "users": (),  # looked up by _id only
}

_BATCH = 1000

_PRODUCT_WORDS: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "electronics": (("Wireless", "Smart", "Compact", "Pro"), ("Headphones", "Speaker", "Charger")),
    "fashion": (("Linen", "Wool", "Classic", "Slim"), ("Shirt", "Jacket", "Sneakers", "Scarf")),
    "home": (("Ceramic", "Oak", "Cozy", "Modern"), ("Lamp", "Mug Set", "Throw", "Shelf")),
    "beauty": (("Hydrating", "Gentle", "Vitamin C", "Matte"), ("Serum", "Cream", "Lipstick")),
    "sports": (("Trail", "Carbon", "Grip", "Aero"), ("Running Shoes", "Yoga Mat", "Bottle")),
    "books": (("Illustrated", "Collected", "Pocket", "Annotated"), ("Novel", "Cookbook", "Atlas")),
    "toys": (("Wooden", "Magnetic", "Plush", "Glow"), ("Blocks", "Puzzle", "Robot", "Bear")),
    "grocery": (("Organic", "Roasted", "Cold-Pressed", "Dark"), ("Coffee", "Olive Oil", "Tea")),
    "garden": (("Solar", "Galvanised", "Self-Watering", "Folding"), ("Planter", "Lights", "Hose")),
    "automotive": (("Heavy-Duty", "Digital", "Microfibre", "LED"), ("Jump Starter", "Gauge")),
}
_PRICES: Final[Mapping[str, tuple[float, float]]] = {
    "electronics": (19.0, 899.0),
    "fashion": (12.0, 240.0),
    "home": (8.0, 320.0),
    "beauty": (6.0, 95.0),
    "sports": (9.0, 260.0),
    "books": (5.0, 60.0),
    "toys": (7.0, 120.0),
    "grocery": (2.5, 40.0),
    "garden": (6.0, 180.0),
    "automotive": (9.0, 210.0),
}
_CITIES: Final = ("Lisbon", "Berlin", "Austin", "Osaka", "Toronto", "Lyon", "Melbourne", "Seoul")
_STORE_WORDS: Final = (
    ("North", "Blue", "Corner", "Urban", "Golden", "Little", "Harbor", "Maple"),
    ("Goods", "Market", "Supply", "Outfitters", "Emporium", "Studio", "Depot", "Co."),
)
_EVENTS: Final = (
    "Night Market",
    "Maker Fair",
    "Book Signing",
    "Tasting Evening",
    "Repair Café",
    "Trail Run",
    "Design Week",
    "Toy Swap",
)
_FIRST_NAMES: Final = ("Ana", "Ben", "Chloé", "Dev", "Emi", "Femi", "Gus", "Hana", "Ines", "Jon")


@attrs.frozen(kw_only=True)
class SeedSummary:
    """How many documents :func:`seed` wrote, and the ``now`` its dates are relative to."""

    products: int
    stores: int
    events: int
    offers: int  #: flash sales included
    flash_sales: int
    users: int
    now: datetime


def _oid(rng: random.Random, at: datetime) -> ObjectId:
    # ObjectIds carry their creation second: make it the document's own date.
    return ObjectId(int(at.timestamp()).to_bytes(4, "big") + rng.randbytes(8))


def _ensure_featured(docs: list[Document], *, at_least: int) -> None:
    """Flag the first documents as featured until ``at_least`` are (small data sets)."""
    missing = at_least - sum(1 for d in docs if d["featured"])
    for doc in docs:
        if missing <= 0:
            return
        if not doc["featured"]:
            doc["featured"] = True
            missing -= 1


def _products(
    rng: random.Random, count: int, now: datetime, stores: list[Document]
) -> list[Document]:
    # Distinct whole seconds over the last 180 days: new arrivals have a strict order.
    ages = rng.sample(range(60, 180 * 86400), count)
    docs: list[Document] = []
    for age in ages:
        category = rng.choice(CATEGORIES)
        adjectives, nouns = _PRODUCT_WORDS[category]
        low, high = _PRICES[category]
        created = now - timedelta(seconds=age)
        docs.append(
            {
                "_id": _oid(rng, created),
                "name": f"{rng.choice(adjectives)} {rng.choice(nouns)}",
                "category": category,
                "price": round(rng.uniform(low, high), 2),
                "rating": round(rng.triangular(2.5, 5.0, 4.3), 1),
                "reviewCount": rng.randrange(0, 2500),
                "featured": rng.random() < 0.04,
                "createdAt": created,
                "storeId": rng.choice(stores)["_id"],
            }
        )
    for category in CATEGORIES:  # every category has a few featured products
        _ensure_featured([d for d in docs if d["category"] == category], at_least=3)
    return docs


def _stores(rng: random.Random, count: int, now: datetime) -> list[Document]:
    docs: list[Document] = []
    for i in range(count):
        opened = now - timedelta(days=rng.randrange(30, 3000))
        first, second = _STORE_WORDS
        docs.append(
            {
                "_id": _oid(rng, opened),
                "name": f"{rng.choice(first)} {rng.choice(second)} #{i + 1}",
                "city": rng.choice(_CITIES),
                "rating": round(rng.uniform(3.0, 5.0), 1),
                "featured": rng.random() < 0.2,
                "openedAt": opened,
            }
        )
    _ensure_featured(docs, at_least=min(count, 6))
    return docs


def _events(
    rng: random.Random, count: int, now: datetime, stores: list[Document]
) -> list[Document]:
    docs: list[Document] = []
    for _ in range(count):
        starts = (now + timedelta(days=rng.randrange(1, 60))).replace(minute=0, second=0)
        starts = starts.replace(hour=rng.randrange(9, 21))
        store = rng.choice(stores)
        docs.append(
            {
                "_id": _oid(rng, now - timedelta(days=rng.randrange(1, 30))),
                "title": f"{rng.choice(_EVENTS)} at {store['name']}",
                "city": store["city"],
                "storeId": store["_id"],
                "startsAt": starts,
                "endsAt": starts + timedelta(hours=rng.randrange(2, 9)),
                "featured": rng.random() < 0.4,
            }
        )
    _ensure_featured(docs, at_least=min(count, 4))
    return docs


def _offers(
    rng: random.Random, count: int, now: datetime, stores: list[Document]
) -> list[Document]:
    """Standing offers, valid now; a few featured."""
    docs: list[Document] = []
    for _ in range(count):
        category = rng.choice(CATEGORIES)
        discount = rng.randrange(5, 55, 5)
        starts = now - timedelta(days=rng.randrange(1, 30))
        docs.append(
            {
                "_id": _oid(rng, starts),
                "title": f"{discount}% off {category}",
                "category": category,
                "storeId": rng.choice(stores)["_id"],
                "discountPercent": discount,
                "featured": rng.random() < 0.25,
                "flashSale": False,
                "startsAt": starts,
                "endsAt": now + timedelta(days=rng.randrange(1, 45)),
            }
        )
    _ensure_featured(docs, at_least=min(count, 6))
    return docs


def _flash_sales(
    rng: random.Random, count: int, now: datetime, stores: list[Document]
) -> list[Document]:
    """Time-bound offers: a third running at ``now``, a third over, a third to come.

    Two sit on the boundaries of ``startsAt <= now < endsAt``: one starts
    exactly at ``now`` (running), one ends exactly then (over).
    """
    minute = timedelta(minutes=1)
    windows: list[tuple[datetime, datetime]] = [(now, now + 90 * minute), (now - 90 * minute, now)]
    for i in range(count - len(windows)):
        length = rng.randrange(30, 12 * 60) * minute
        if i % 3 == 0:  # running
            starts = now - rng.randrange(1, length // minute) * minute
        elif i % 3 == 1:  # over
            starts = now - length - rng.randrange(1, 48 * 60) * minute
        else:  # upcoming
            starts = now + rng.randrange(1, 48 * 60) * minute
        windows.append((starts, starts + length))
    docs: list[Document] = []
    for starts, ends in windows:
        category = rng.choice(CATEGORIES)
        discount = rng.randrange(30, 85, 5)
        docs.append(
            {
                "_id": _oid(rng, starts - timedelta(days=1)),
                "title": f"Flash sale: {discount}% off {category}",
                "category": category,
                "storeId": rng.choice(stores)["_id"],
                "discountPercent": discount,
                "featured": False,
                "flashSale": True,
                "startsAt": starts,
                "endsAt": ends,
            }
        )
    return docs


def _users(rng: random.Random, count: int, now: datetime) -> list[Document]:
    docs: list[Document] = []
    for i in range(1, count + 1):
        if i == 1:
            favourites = rng.sample(CATEGORIES, 2)
        elif i == 2:
            favourites = []
        else:
            favourites = rng.sample(CATEGORIES, rng.choices((0, 1, 2, 3), (15, 35, 35, 15))[0])
        docs.append(
            {
                "_id": f"u{i}",
                "name": f"{rng.choice(_FIRST_NAMES)} {chr(ord('A') + rng.randrange(26))}.",
                "favoriteCategories": favourites,
                "createdAt": now - timedelta(seconds=rng.randrange(86400, 720 * 86400)),
            }
        )
    return docs


async def _refill(db: Database, name: str, docs: Iterable[Document]) -> None:
    await db.drop_collection(name)
    collection = db[name]
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == _BATCH:
            await collection.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await collection.insert_many(batch, ordered=False)
    for keys in INDEXES[name]:
        await collection.create_index(list(keys))


async def seed(
    db: Database, *, products: int = 5000, seed: int = 42, now: datetime | None = None
) -> SeedSummary:
    """Drop and refill the homepage's collections, deterministically, and index them.

    The other collections grow with ``products``: a store per 100 products,
    an event per 200, an offer per 50, a flash sale per 250 and a user per
    20 (with small minimums). ``now`` (timezone-aware; default: the current
    second) anchors every date.
    """
    if isinstance(products, bool) or not isinstance(products, int):
        raise TypeError(f"products must be an int, not {products!r}")
    if products < 1:
        raise ValueError(f"products must be at least 1, got {products!r}")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC).replace(microsecond=0)

    rng = random.Random(seed)
    stores = _stores(rng, max(8, products // 100), now)
    data = {
        "stores": stores,
        "products": _products(rng, products, now, stores),
        "events": _events(rng, max(6, products // 200), now, stores),
        "offers": _offers(rng, max(10, products // 50), now, stores),
        "users": _users(rng, max(10, products // 20), now),
    }
    flash = _flash_sales(rng, max(9, products // 250), now, stores)
    data["offers"] = data["offers"] + flash
    for name in COLLECTIONS:
        await _refill(db, name, data[name])
    return SeedSummary(
        products=len(data["products"]),
        stores=len(data["stores"]),
        events=len(data["events"]),
        offers=len(data["offers"]),
        flash_sales=len(flash),
        users=len(data["users"]),
        now=now,
    )


async def seed_if_empty(
    db: Database, *, products: int = 5000, seed: int = 42, now: datetime | None = None
) -> SeedSummary | None:
    """Seed unless ``products`` already holds data: what an app does at start-up.

    A fresh embedded server is empty and gets seeded; a real MongoDB seeded
    once with ``python -m examples.homepage seed`` is left alone.
    """
    if await db.products.find_one({}, {"_id": 1}) is not None:
        return None
    return await _seed(db, products=products, seed=seed, now=now)


_seed = seed  # the parameter named ``seed`` hides the function inside seed_if_empty
