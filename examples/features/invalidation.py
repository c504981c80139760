"""Invalidation: drop one user's entry, a whole section, or every entry at once.

A personal section (``Scope.USER``) is cached per user; ``invalidate(name,
user_id=...)`` drops one user's entry, ``invalidate(name)`` every user's. A
new ``version`` makes every old key unreachable (a deploy that changes what
sources return). Run: ``python -m examples.features.invalidation``.
"""

from __future__ import annotations

import anyio

from batchpage import Aggregator, CachePolicy, MemoryCache, RequestContext, Scope, Section

calls: dict[str, int] = {}


async def basket(ctx: RequestContext) -> dict[str, object]:
    """A user's basket; counts its calls, to show what came from the cache."""
    user = ctx.user_id or "anonymous"
    calls[user] = calls.get(user, 0) + 1
    return {"user": user, "read": calls[user]}


SECTIONS = [
    Section(name="basket", source=basket, scope=Scope.USER, cache=CachePolicy(fresh=300)),
]
ALICE = RequestContext(user_id="alice")
BOB = RequestContext(user_id="bob")


async def show(agg: Aggregator, ctx: RequestContext, when: str) -> None:
    page = await agg.fetch(ctx)
    result = page.results["basket"]
    print(f"{when:<34} {ctx.user_id}: {result.cache.value:<4} {result.value}")


async def main() -> None:
    cache = MemoryCache()  # shared by both versions below, as Redis would be
    async with Aggregator(SECTIONS, page="shop", cache=cache) as agg:
        await show(agg, ALICE, "first visit")
        await show(agg, BOB, "first visit")
        await show(agg, ALICE, "again")

        await agg.invalidate("basket", user_id="alice")  # alice changed her basket
        await show(agg, ALICE, "after invalidate(user_id=alice)")
        await show(agg, BOB, "after invalidate(user_id=alice)")

        await agg.invalidate("basket")  # every user's basket
        await show(agg, BOB, "after invalidate('basket')")

    async with Aggregator(SECTIONS, page="shop", version="v2", cache=cache) as agg:
        await show(agg, ALICE, "version v2")


if __name__ == "__main__":
    anyio.run(main)
