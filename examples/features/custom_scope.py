"""A custom scope: one cache entry per customer segment, not one per user.

Offers depend on the customer's segment, not on who they are: caching them
per user would fetch the same value once per user. A scope function
``(ctx) -> str`` names whose value it is; users of one segment share an
entry, and ``invalidate(name, scope=...)`` drops one segment's.
Run: ``python -m examples.features.custom_scope``.
"""

from __future__ import annotations

import anyio

from batchpage import Aggregator, CachePolicy, RequestContext, Section

SEGMENTS = {"alice": "premium", "bob": "premium", "carol": "standard"}
fetched: list[str] = []


def segment(ctx: RequestContext) -> str:
    """The scope: a plain, quick function of the context (a lookup, an A/B bucket)."""
    return SEGMENTS.get(ctx.user_id or "", "standard")


async def offers(ctx: RequestContext) -> list[str]:
    """Offers for the request's segment; records which segments were fetched."""
    fetched.append(segment(ctx))
    return ["free delivery", "20% off"] if segment(ctx) == "premium" else ["5% off"]


SECTIONS = [
    Section(name="offers", source=offers, scope=segment, cache=CachePolicy(fresh=600)),
]


async def main() -> None:
    async with Aggregator(SECTIONS, page="shop") as agg:
        for user in ["alice", "bob", "carol", "alice"]:
            page = await agg.fetch(RequestContext(user_id=user))
            result = page.results["offers"]
            print(f"{user:<6} ({segment(RequestContext(user_id=user))}): {result.cache.value:<4}")
        print("segments fetched from the source:", fetched)

        await agg.invalidate("offers", scope="premium")  # premium offers changed
        page = await agg.fetch(RequestContext(user_id="bob"))
        print("bob after invalidate(scope='premium'):", page.results["offers"].cache.value)
        page = await agg.fetch(RequestContext(user_id="carol"))
        print("carol after invalidate(scope='premium'):", page.results["offers"].cache.value)
        print("the key of bob's entry:", agg.key_for(SECTIONS[0], RequestContext(user_id="bob")))


if __name__ == "__main__":
    anyio.run(main)
