"""Warm pages answered from a view: a page read wholly fresh from memory, kept there.

A view is what the aggregator built from a page's entries; the memory cache
drops it the moment one of them changes (written, invalidated, evicted,
expired). These tests hold the view path to every rule of the cache: it
never serves what the cache no longer holds, it goes back to the cache when
an entry turns stale, it keeps recency for the LRU, it is per user and per
parameters, and its page is the same page, byte for byte, as one built the
long way.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchpage import (
    Aggregator,
    CachePolicy,
    CacheStatus,
    MemoryCache,
    PageResult,
    RequestContext,
    Scope,
    Section,
    SectionResult,
)
from batchpage._result import page_from_view
from batchpage.extend import Entry, Observer
from helpers import FakeClock

pytestmark = pytest.mark.anyio

POLICY = CachePolicy(fresh=10, stale=5, stale_if_error=30, jitter=0)


class Counter:
    """A source answering ``{"n": <call number>}``: each value shows which call made it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ctx: RequestContext) -> dict[str, Any]:
        self.calls += 1
        return {"n": self.calls, "user": ctx.user_id}


def from_view(page: PageResult) -> bool:
    """Whether the page was answered from a view (white box: the path under test)."""
    return page._warm is not None


def statuses(page: PageResult) -> dict[str, str]:
    return {name: r.cache.value for name, r in page.results.items()}


def two_sections(
    clock: FakeClock, *, cache: MemoryCache | None = None, scope: Any = Scope.GLOBAL
) -> tuple[Aggregator, Counter, Counter]:
    a, b = Counter(), Counter()
    sections = [
        Section(name="a", source=a, cache=POLICY, breaker=None),
        Section(name="b", source=b, cache=POLICY, breaker=None, scope=scope),
    ]
    memory = cache if cache is not None else MemoryCache(clock=clock)
    return Aggregator(sections, page="views", cache=memory), a, b


async def warm(agg: Aggregator, ctx: RequestContext | None = None) -> PageResult:
    """Fetch until the page comes from a view (a cold read, a full read, then the view)."""
    for _ in range(3):
        page = await agg.fetch(ctx)
        if from_view(page):
            return page
    pytest.fail("the page never came from a view")


async def test_the_third_fetch_of_a_warm_page_reads_one_view(fake_clock: FakeClock) -> None:
    """Cold, then every entry read fresh (the view is kept), then the view answers."""
    agg, a, b = two_sections(fake_clock)
    async with agg:
        cold = await agg.fetch()
        full = await agg.fetch()
        viewed = await agg.fetch()
    assert statuses(cold) == {"a": "MISS", "b": "MISS"}
    assert (from_view(cold), from_view(full), from_view(viewed)) == (False, False, True)
    assert statuses(viewed) == {"a": "HIT", "b": "HIT"}
    assert viewed.sections == full.sections == cold.sections
    assert (a.calls, b.calls) == (1, 1)
    assert agg.stats.pages == 3


async def test_a_page_from_a_view_is_the_page_built_the_long_way(fake_clock: FakeClock) -> None:
    """Same bytes as a PageResult of the same results and metadata; dict and status agree."""
    agg, _, _ = two_sections(fake_clock)
    async with agg:
        page = await warm(agg)
    long_way = PageResult(
        dict(page.results),
        version=page.version,
        generated_at=page.generated_at,
        total_ms=page.total_ms,
        required=page.required,
    )
    assert page.to_json() == long_way.to_json()
    assert page.to_json() == page.to_json()  # the view's last body, again
    assert json.loads(page.to_json()) == page.to_dict() == long_way.to_dict()
    assert page.status_code == 200
    assert page.errors == []
    assert not page.partial_failure
    assert [r.name for r in page.results.values()] == ["a", "b"]
    assert all(isinstance(r, SectionResult) for r in page.results.values())


async def test_a_view_writes_each_page_its_own_timing_and_second(fake_clock: FakeClock) -> None:
    """The last body is reused only for the same metadata: other timings or seconds get theirs."""
    agg, _, _ = two_sections(fake_clock)
    async with agg:
        page = await warm(agg)
    assert page._warm is not None
    fast = json.loads(page.to_json())["metadata"]
    slow = json.loads(page_from_view(page._warm, page.generated_at, 12.34).to_json())["metadata"]
    later = page_from_view(page._warm, page.generated_at + 3600, page.total_ms)
    assert fast["timingsMs"] == {"a": round(page.total_ms, 1), "b": round(page.total_ms, 1)}
    assert (slow["timingsMs"], slow["totalMs"]) == ({"a": 12.3, "b": 12.3}, 12.3)
    assert json.loads(later.to_json())["metadata"]["generatedAt"] != fast["generatedAt"]
    assert json.loads(page.to_json())["metadata"] == fast


async def test_a_new_value_for_one_entry_drops_the_view(fake_clock: FakeClock) -> None:
    """A write to one of the page's keys: the next page has the new value, not the view's."""
    agg, _, _ = two_sections(fake_clock)
    async with agg:
        await warm(agg)
        memory = agg.cache
        assert isinstance(memory, MemoryCache)
        key = agg.key_for(agg.sections["a"], RequestContext())
        memory.put(key, Entry.create(b'{"n":99}', POLICY, fake_clock.now))
        page = await agg.fetch()
    assert not from_view(page)
    assert page.sections["a"] == {"n": 99}


async def test_an_invalidation_drops_the_view(fake_clock: FakeClock) -> None:
    """After invalidate(), the section is fetched again, whatever views were kept."""
    agg, a, _ = two_sections(fake_clock)
    async with agg:
        await warm(agg)
        await agg.invalidate("a")
        page = await agg.fetch()
    assert statuses(page) == {"a": "MISS", "b": "HIT"}
    assert page.sections["a"]["n"] == a.calls == 2


async def test_a_page_turning_stale_leaves_the_view_and_is_refreshed(
    fake_clock: FakeClock,
) -> None:
    """Past fresh, the page is STALE (served at once) and refreshed, never a HIT from a view."""
    agg, a, _ = two_sections(fake_clock)
    async with agg:
        await warm(agg)
        fake_clock.advance(10)
        stale = await agg.fetch()
        await agg.settle()
        refreshed = await agg.fetch()
    assert not from_view(stale)
    assert statuses(stale) == {"a": "STALE", "b": "STALE"}
    assert statuses(refreshed) == {"a": "HIT", "b": "HIT"}
    assert refreshed.sections["a"]["n"] == a.calls == 2


async def test_an_entry_leaving_memory_at_its_ttl_leaves_the_view(fake_clock: FakeClock) -> None:
    """With MemoryCache(ttl=...), the view lasts no longer than its entries stay in memory."""
    memory = MemoryCache(ttl=3, clock=fake_clock)
    agg, a, _ = two_sections(fake_clock, cache=memory)
    async with agg:
        await warm(agg)
        fake_clock.advance(3)
        page = await agg.fetch()
    assert statuses(page) == {"a": "MISS", "b": "MISS"}
    assert a.calls == 2


async def test_pages_read_from_views_stay_recent_in_the_lru(fake_clock: FakeClock) -> None:
    """Reading a page from its view counts as reading its entries: others are evicted first."""
    memory = MemoryCache(max_entries=3, clock=fake_clock)
    agg, _, _ = two_sections(fake_clock, cache=memory)
    other = Counter()
    others = Aggregator(
        [Section(name="c", source=other, cache=POLICY, breaker=None)], page="other", cache=memory
    )
    async with agg, others:
        await warm(agg)  # a and b in memory, then c after them: c is the most recent
        await others.fetch()
        for _ in range(3):
            assert from_view(await agg.fetch())  # now a and b are
        await others.fetch(RequestContext(params={"x": 1}))  # a fourth entry: one must go
        assert from_view(await agg.fetch())
        again = await others.fetch()
    assert again.results["c"].cache is CacheStatus.MISS  # c went, not a or b
    assert other.calls == 3


async def test_views_are_per_user_and_per_parameters(fake_clock: FakeClock) -> None:
    """One user's view never answers another user, nor other parameters."""
    agg, _, b = two_sections(fake_clock, scope=Scope.USER)
    alice = RequestContext(user_id="alice")
    async with agg:
        alices = await warm(agg, alice)
        bobs = await agg.fetch(RequestContext(user_id="bob"))
        alice_again = await agg.fetch(RequestContext(user_id="alice"))
        other_params = await agg.fetch(RequestContext(user_id="alice", params={"limit": 2}))
    assert alices.sections["b"]["user"] == "alice"
    assert not from_view(bobs)
    assert bobs.sections["b"] == {"n": 2, "user": "bob"}
    assert from_view(alice_again)
    assert alice_again.sections == alices.sections
    assert not from_view(other_params)
    assert b.calls == 3


async def test_a_page_with_a_scope_function_is_never_viewed(fake_clock: FakeClock) -> None:
    """A key that depends on a scope function is computed for each request: no view."""
    agg, _, _ = two_sections(fake_clock, scope=lambda ctx: "segment")
    async with agg:
        pages = [await agg.fetch() for _ in range(4)]
    assert not any(from_view(p) for p in pages)
    assert statuses(pages[-1]) == {"a": "HIT", "b": "HIT"}


async def test_a_page_with_an_uncached_section_is_never_viewed(fake_clock: FakeClock) -> None:
    """An uncached section is called on every request: such a page is never a view."""
    n = Counter()
    sections = [
        Section(name="a", source=Counter(), cache=POLICY),
        Section(name="live", source=n),
    ]
    async with Aggregator(sections, page="views", cache=MemoryCache(clock=fake_clock)) as agg:
        pages = [await agg.fetch() for _ in range(4)]
    assert not any(from_view(p) for p in pages)
    assert n.calls == 4


async def test_a_subset_has_its_own_view(fake_clock: FakeClock) -> None:
    """fetch(sections=["beta"]) is its own page: its view holds beta alone."""
    sections = [
        Section(name=n, source=Counter(), cache=POLICY, breaker=None) for n in ("alpha", "beta")
    ]
    async with Aggregator(sections, page="views", cache=MemoryCache(clock=fake_clock)) as agg:
        whole = await warm(agg)
        parts = [await agg.fetch(sections=["beta"]) for _ in range(2)]
        assert from_view(await agg.fetch())  # the whole page's view is still there
    assert from_view(parts[-1])
    assert list(parts[-1].results) == ["beta"]
    assert parts[-1].sections["beta"] == whole.sections["beta"]


async def test_two_aggregators_on_one_memory_keep_their_own_views(fake_clock: FakeClock) -> None:
    """Same page name, same entries, separate views; an invalidation reaches both."""
    memory = MemoryCache(clock=fake_clock)
    first, a1, _ = two_sections(fake_clock, cache=memory)
    second, a2, _ = two_sections(fake_clock, cache=memory)
    async with first, second:
        one = await warm(first)
        two = await warm(second)
        assert one._warm is not two._warm
        assert one.sections == two.sections
        await first.invalidate("a")
        after = await second.fetch()
    assert after.results["a"].cache is CacheStatus.MISS
    assert (a1.calls, a2.calls) == (1, 1)  # the second filled the key again


class Recording(Observer):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def page_started(self, page: str, ctx: RequestContext) -> object:
        self.calls.append(("page_started", page))
        return "token"

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        self.calls.append(("section_finished", token, result.name, result.cache.value))

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        self.calls.append(("page_finished", token, result.status_code))


async def test_observers_hear_of_a_page_from_a_view_as_of_any_warm_page(
    fake_clock: FakeClock,
) -> None:
    """page_started, one section_finished per HIT (token None), page_finished: same calls."""
    observer = Recording()
    a, b = Counter(), Counter()
    sections = [
        Section(name="a", source=a, cache=POLICY),
        Section(name="b", source=b, cache=POLICY),
    ]
    memory = MemoryCache(clock=fake_clock)
    async with Aggregator(sections, page="views", cache=memory, observers=[observer]) as agg:
        await agg.fetch()
        observer.calls.clear()
        full = await agg.fetch()
        long_way = list(observer.calls)
        observer.calls.clear()
        viewed = await agg.fetch()
    assert (from_view(full), from_view(viewed)) == (False, True)
    assert (
        observer.calls
        == long_way
        == [
            ("page_started", "views"),
            ("section_finished", None, "a", "HIT"),
            ("section_finished", None, "b", "HIT"),
            ("page_finished", "token", 200),
        ]
    )


async def test_views_are_bounded_and_so_is_what_they_hold(fake_clock: FakeClock) -> None:
    """Many users' pages: the views kept, and the keys they are filed under, stay bounded."""
    memory = MemoryCache(max_entries=100_000, clock=fake_clock)
    agg, _, _ = two_sections(fake_clock, cache=memory, scope=Scope.USER)
    async with agg:
        for i in range(700):
            ctx = RequestContext(user_id=f"user-{i}")
            await agg.fetch(ctx)
            await agg.fetch(ctx)  # all HIT: a view is kept
    assert 0 < len(memory._views) <= 256
    assert len(memory._viewing) <= 2 * 256
    assert len(memory._touched) <= 256


async def test_the_bodies_views_keep_stay_within_their_budget(fake_clock: FakeClock) -> None:
    """Pages of 20 KB for many users: the last bodies kept all together stay under 1 MiB."""
    big = "x" * 20_000

    async def large(ctx: RequestContext) -> str:
        return big

    sections = [Section(name="large", source=large, cache=POLICY, scope=Scope.USER)]
    memory = MemoryCache(max_entries=10_000, clock=fake_clock)
    async with Aggregator(sections, page="views", cache=memory) as agg:
        for i in range(200):
            ctx = RequestContext(user_id=f"user-{i}")
            for _ in range(3):
                body = (await agg.fetch(ctx)).to_json()
            assert len(body) > 20_000
        views = list(memory._views.values())
        kept = sum(v.body_size for v in views)
        assert kept == memory._body_bytes <= 1 << 20
        assert sum(1 for v in views if v.body_size) < len(views)  # the budget did bind
        # A dropped view lets go of its body, and of its share of the budget.
        await agg.invalidate("large")
    assert memory._views == {}
    assert memory._body_bytes == 0
    assert all(v.body_size == 0 and v._last[3] == b"" for v in views)
