"""A warm page from memory: batchpage against its floor, a dict baseline, cashews and aiocache.

Every contender serves the same page (six sections of ten documents) from an
in-process cache that already holds every value, and produces the JSON body.

The floor is the least any server can do for that page: join the six byte
strings the memory cache holds for it, framed as the page body frames them
(``{"sections":{"name":<bytes>,...}}``), with nothing else: no lookup, no
freshness check, no metadata. It runs through the same async call as
batchpage's page (``await page()`` in a loop), in interleaved batches.
"""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
from aiocache import Cache as AioCache
from bson import Decimal128, ObjectId
from cashews import Cache as CashewsCache

from batchpage import (
    Aggregator,
    CachePolicy,
    JsonSerializer,
    MemoryCache,
    OrjsonSerializer,
    RequestContext,
    Scope,
    Section,
)
from batchpage.extend import Serializer

from ._common import (
    Row,
    at_least,
    at_most,
    exactly,
    info,
    interleaved,
    median_time,
    sync_median_time,
)
from ._payloads import SECTION_NAMES, VALUES

CTX = RequestContext(params={"limit": 10})
KEYS = [f"homepage:{name}:limit=10:v1" for name in SECTION_NAMES]


def _page(sections: dict[str, Any]) -> bytes:
    return json.dumps(
        {"sections": sections, "errors": [], "metadata": {"partialFailure": False}},
        separators=(",", ":"),
    ).encode()


class _Counting:
    """A source that takes 50 ms and counts its calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def __call__(self, ctx: RequestContext) -> Any:
        self.calls += 1
        await anyio.sleep(0.05)
        return VALUES[self.name]


async def _stampede(*, concurrent: int) -> list[Row]:
    """``concurrent`` requests for one cold page at once, against a single cold page."""

    async def cold_page_time(requests: int) -> tuple[float, list[int]]:
        sources = [_Counting(n) for n in SECTION_NAMES]
        sections = [Section(name=s.name, source=s, cache=CachePolicy()) for s in sources]
        async with Aggregator(sections, page="stampede") as agg:
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(requests):
                    tg.start_soon(agg.fetch, CTX)
            return time.perf_counter() - start, [s.calls for s in sources]

    one, _ = await cold_page_time(1)
    many, calls = await cold_page_time(concurrent)
    return [
        Row(
            f"stampede: source calls per section, {concurrent} concurrent cold requests",
            max(calls),
            exactly(1, "every section: " + ", ".join(map(str, calls))),
            unit="",
        ),
        Row(
            f"stampede: {concurrent} concurrent cold pages / one cold page (time)",
            many / one,
            info("the sources take 50 ms"),
        ),
    ]


def _floor(agg: Aggregator, sections: list[Section]) -> Callable[[], Awaitable[bytes]]:
    """The page's floor: its six stored byte strings, as memory holds them, joined as framed."""
    memory = agg.cache
    assert isinstance(memory, MemoryCache)
    stored = []
    for section in sections:
        entry = memory.get(agg.key_for(section, CTX))
        assert entry is not None
        stored.append(entry.payload)
    p0, p1, p2, p3, p4, p5 = stored
    h0, h1, h2, h3, h4, h5 = (
        (b'{"sections":{' if i == 0 else b",") + f'"{s.name}":'.encode()
        for i, s in enumerate(sections)
    )
    end = b"}}"

    async def floor() -> bytes:
        return b"".join([h0, p0, h1, p1, h2, p2, h3, p3, h4, p4, h5, p5, end])

    return floor


#: What the structures around the cache may hold, whatever the number of users:
#: the key memo (1,024 pages' keys, about 0.5 MB), the views (256 pages, about
#: 0.3 MB, and the bodies they keep: 1 MiB at most) and the dicts' tables
#: (``tests/core/test_memory_bound.py`` holds the same bound).
FIXED_OVERHEAD = 2_500_000


async def _many_users(quick: bool) -> list[Row]:
    """Distinct signed-in users, each with a personal cached section, over a bounded memory.

    Every allocation is traced (tracemalloc) from the first user on: the
    peak of what the process holds beyond where it started is compared with
    the cache's ``max_bytes`` plus the fixed overhead of the structures
    around it, and those structures are counted at the end.
    """
    users = 20_000 if quick else 100_000
    max_bytes = 1_000_000
    cache = MemoryCache(max_entries=100_000, max_bytes=max_bytes)

    async def recommended(ctx: RequestContext) -> Any:
        return [{"id": f"p-{ctx.user_id}-{i}", "name": "a lamp", "price": 19.9} for i in range(3)]

    sections = [
        Section(name="featured", source=_source(SECTION_NAMES[0]), cache=CachePolicy(fresh=3600)),
        Section(
            name="recommended", source=recommended, cache=CachePolicy(fresh=3600), scope=Scope.USER
        ),
    ]
    async with Aggregator(sections, page="users", cache=cache) as agg:
        await agg.fetch(RequestContext(user_id="warm-up"))
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            for i in range(users):
                ctx = RequestContext(user_id=f"user-{i:06d}", params={"limit": 10})
                page = await agg.fetch(ctx)
                assert page.errors == [], page.to_dict()
                if i % 10 == 0:
                    await agg.fetch(ctx)  # one user in ten comes back: a warm page (a view)
                if i % 100 == 0:
                    await anyio.lowlevel.checkpoint()  # a server's loop turns between requests
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        per_key = {
            "key memo": len(agg._key_memo),
            "views": len(cache._views),
            "single-flight": len(agg._filler._flights),
            "invalidation log": len(cache.invalidations._recent),
            "breakers": len(agg._breakers),
        }
        held, entries = cache.size_bytes, len(cache)
    structures = ", ".join(f"{name} {n}" for name, n in per_key.items())
    return [
        Row(
            f"{users:,} signed-in users: bytes the memory cache counts / max_bytes",
            held / max_bytes,
            at_most(1, f"{entries} entries kept, max_bytes {max_bytes:,}"),
        ),
        Row(
            f"{users:,} signed-in users: peak traced memory / (max_bytes + fixed overhead)",
            peak / (max_bytes + FIXED_OVERHEAD),
            at_most(1, f"peak {peak / 1e6:.2f} MB; fixed overhead {FIXED_OVERHEAD / 1e6:.1f} MB"),
        ),
        Row(
            f"{users:,} signed-in users: per-key structures at the end",
            sum(per_key.values()),
            info(f"{structures}; {elapsed / users * 1e6:.0f} us per user, traced"),
            unit="",
        ),
    ]


def _source(name: str) -> Any:
    async def source(ctx: RequestContext) -> Any:
        return VALUES[name]

    return source


def _bson_documents(section: str) -> list[dict[str, Any]]:
    """A section as MongoDB returns it, before any conversion: ObjectId, datetime, Decimal128."""
    return [
        doc
        | {
            "id": ObjectId(f"{i:024x}"),
            "price": Decimal128(str(doc["price"])),
            "createdAt": datetime(2026, 11, (i % 28) + 1, 12, tzinfo=UTC),
        }
        for i, doc in enumerate(VALUES[section])
    ]


async def _serializers(quick: bool) -> list[Row]:
    """JsonSerializer against OrjsonSerializer: one section, and a cold page's encoding."""
    repeat, inner = (5, 2000) if quick else (11, 10000)
    plain = VALUES[SECTION_NAMES[0]]
    bson = _bson_documents(SECTION_NAMES[0])
    std, fast = JsonSerializer(), OrjsonSerializer()
    for value in (plain, bson):
        assert json.loads(std.dumps(value)) == json.loads(fast.dumps(value))

    def ratio(value: Any) -> float:
        t_std = sync_median_time(lambda: std.dumps(value), repeat=repeat, inner=inner)
        t_fast = sync_median_time(lambda: fast.dumps(value), repeat=repeat, inner=inner)
        return t_std / t_fast

    plain_ratio, bson_ratio = ratio(plain), ratio(bson)

    async def cold_page_time(serializer: Serializer) -> float:
        # No cache policy: every fetch calls the six sources and encodes their values.
        sections = [Section(name=n, source=_source(n), cache=None) for n in SECTION_NAMES]
        async with Aggregator(sections, page="cold", serializer=serializer) as agg:

            async def page() -> bytes:
                return (await agg.fetch(CTX)).to_json()

            return await median_time(page, repeat=repeat, inner=inner // 10)

    t_cold_std = await cold_page_time(std)
    t_cold_fast = await cold_page_time(fast)
    page_values = [VALUES[n] for n in SECTION_NAMES]
    t_encode_std = sync_median_time(
        lambda: [std.dumps(v) for v in page_values], repeat=repeat, inner=inner // 10
    )
    t_encode_fast = sync_median_time(
        lambda: [fast.dumps(v) for v in page_values], repeat=repeat, inner=inner // 10
    )
    return [
        Row(
            "encode a section (10 plain documents): json / orjson",
            plain_ratio,
            at_least(1, "orjson"),
        ),
        Row(
            "encode a section (10 BSON documents): json / orjson",
            bson_ratio,
            at_least(1, "ObjectId, datetime, Decimal128"),
        ),
        Row(
            "cold page (six instant sources, uncached): json / orjson",
            t_cold_std / t_cold_fast,
            info(">= 1 expected"),
        ),
        Row(
            "cold page: encoding its six sections, json",
            t_encode_std * 1e6,
            info(f"microseconds; {t_encode_std / t_cold_std:.0%} of the json page"),
            unit="us",
        ),
        Row(
            "cold page: encoding its six sections, orjson",
            t_encode_fast * 1e6,
            info(f"microseconds; {t_encode_fast / t_cold_fast:.0%} of the orjson page"),
            unit="us",
        ),
    ]


async def run(quick: bool) -> list[Row]:
    repeat, inner = (5, 2000) if quick else (11, 10000)
    sections = [
        Section(name=n, source=_source(n), cache=CachePolicy(fresh=3600)) for n in SECTION_NAMES
    ]
    async with Aggregator(sections, page="homepage") as agg:
        await agg.fetch(CTX)

        async def ours() -> bytes:
            return (await agg.fetch(CTX)).to_json()

        assert json.loads(await ours())["metadata"]["cache"] == dict.fromkeys(SECTION_NAMES, "HIT")
        floor = _floor(agg, sections)
        assert json.loads(await floor())["sections"] == json.loads(await ours())["sections"]
        t_ours, t_floor = await interleaved(ours, floor, repeat=2 * repeat, inner=inner // 2)

    store = dict(zip(KEYS, VALUES.values(), strict=True))

    def baseline() -> bytes:
        return _page({n: store[k] for n, k in zip(SECTION_NAMES, KEYS, strict=True)})

    t_base = sync_median_time(baseline, repeat=repeat, inner=inner)

    cashews = CashewsCache()
    cashews.setup("mem://")
    for key, value in zip(KEYS, VALUES.values(), strict=True):
        await cashews.set(key, value, expire=3600)

    async def with_cashews() -> bytes:
        values = await cashews.get_many(*KEYS)
        return _page(dict(zip(SECTION_NAMES, values, strict=True)))

    assert json.loads(await with_cashews())["sections"] == VALUES
    t_cashews = await median_time(with_cashews, repeat=repeat, inner=inner)

    aio = AioCache(AioCache.MEMORY)
    await aio.multi_set(list(zip(KEYS, VALUES.values(), strict=True)), ttl=3600)

    async def with_aiocache() -> bytes:
        values = await aio.multi_get(KEYS)
        return _page(dict(zip(SECTION_NAMES, values, strict=True)))

    assert json.loads(await with_aiocache())["sections"] == VALUES
    t_aio = await median_time(with_aiocache, repeat=repeat, inner=inner)
    await aio.close()

    stampede = await _stampede(concurrent=1000)
    serializers = await _serializers(quick)
    many_users = await _many_users(quick)

    return [
        *stampede,
        Row(
            "warm page (memory): batchpage / floor (join the six stored byte strings)",
            t_ours / t_floor,
            at_most(3, "same async call; the floor does no lookup and no metadata"),
        ),
        Row(
            "warm page (memory): the floor per page",
            t_floor * 1e6,
            info("microseconds"),
            unit="us",
        ),
        Row(
            "warm page (memory): batchpage / (six dict reads + json.dumps)",
            t_ours / t_base,
            at_most(0.2),
        ),
        Row(
            "warm page (memory): cashews get_many + json.dumps / batchpage",
            t_cashews / t_ours,
            at_least(5),
        ),
        Row(
            "warm page (memory): aiocache multi_get + json.dumps / batchpage",
            t_aio / t_ours,
            at_least(5),
        ),
        Row(
            "warm page (memory): batchpage per page", t_ours * 1e6, info("microseconds"), unit="us"
        ),
        *serializers,
        *many_users,
    ]
