"""The public API as users write it: type-checked by mypy, never run."""

from __future__ import annotations

from datetime import timedelta

from batchpage import (
    Aggregator,
    BreakerPolicy,
    CachePolicy,
    CacheStatus,
    ErrorCode,
    MemoryCache,
    OrjsonSerializer,
    PageResult,
    RequestContext,
    Scope,
    Section,
    SectionResult,
)


async def featured_products(ctx: RequestContext) -> list[dict[str, object]]:
    limit = int(ctx.params.get("limit", 10))
    return [{"id": i} for i in range(limit)]


def stores(ctx: RequestContext) -> list[str]:  # a plain function runs in a thread
    return ["a", "b"]


SECTIONS = [
    Section(
        name="featuredProducts",
        source=featured_products,
        timeout=timedelta(milliseconds=200),
        fallback=[],
        cache=CachePolicy(fresh=180, stale=120, stale_if_error=timedelta(minutes=10)),
        scope=Scope.USER,
    ),
    Section(
        name="featuredStores",
        source=stores,
        timeout=0.2,
        required=True,
        breaker=BreakerPolicy(failure_threshold=3, reset_timeout=10),
        cache=CachePolicy(),
        scope=lambda ctx: str(ctx.params.get("locale", "en")),
    ),
]


async def handler(user_id: str | None) -> tuple[int, bytes]:
    async with Aggregator(
        SECTIONS,
        page="homepage",
        version="v1",
        page_timeout=0.25,
        cache=MemoryCache(max_entries=50),
    ) as agg:
        page: PageResult = await agg.fetch(
            RequestContext(user_id=user_id, params={"limit": 10}), sections=["featuredStores"]
        )
        for error in page.errors:
            code: ErrorCode = error.code
            print(code.value, error.message)
        async for result in agg.stream(RequestContext()):
            section: SectionResult = result
            status: CacheStatus = section.cache
            print(section.name, status, section.value)
        await agg.invalidate("featuredProducts", user_id="42")
        return page.status_code, page.to_json()


def money(value: object) -> object:  # a serializer's default: asked first, TypeError passes
    raise TypeError(value)


def fast_page() -> Aggregator:
    return Aggregator(SECTIONS, page="fast", serializer=OrjsonSerializer(default=money))
