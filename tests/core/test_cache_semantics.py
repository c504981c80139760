"""Cache semantics on a fake clock: HIT, STALE with one background refresh, MISS,
stale-if-error, scopes, keys and invalidation. One behaviour per test."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchpage
from batchpage import (
    Aggregator,
    CachePolicy,
    CacheStatus,
    ErrorCode,
    MemoryCache,
    RequestContext,
    Scope,
    Section,
)
from batchpage.extend import Entry, check_json
from helpers import FakeClock, run_on_mock_clock

pytestmark = pytest.mark.anyio

POLICY = CachePolicy(fresh=10, stale=5, stale_if_error=30, jitter=0)


class Counter:
    """A source answering ``{"n": <call number>}``, so each value shows which call made it."""

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.calls = 0
        self.fail = fail
        self.delay = delay

    async def __call__(self, ctx: RequestContext) -> dict[str, int]:
        self.calls += 1
        n = self.calls
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("backend down")
        return {"n": n}


def page_of(source: Counter, clock: FakeClock, **section_kw: object) -> Aggregator:
    section = Section(name="a", source=source, cache=POLICY, breaker=None, **section_kw)  # type: ignore[arg-type]
    return Aggregator([section], page="cache-semantics", cache=MemoryCache(clock=clock))


def status(page: batchpage.PageResult) -> CacheStatus:
    return page.results["a"].cache


async def test_first_fetch_misses_then_hits(fake_clock: FakeClock) -> None:
    """A cached section is fetched once, then served from memory."""
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        first = await agg.fetch()
        second = await agg.fetch()
    assert (status(first), status(second)) == (CacheStatus.MISS, CacheStatus.HIT)
    assert second.sections["a"] == {"n": 1}
    assert source.calls == 1


async def test_stale_is_served_at_once_and_refreshed_once(fake_clock: FakeClock) -> None:
    """Past fresh: the old value now, one background refresh, the new value next."""
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        await agg.fetch()
        fake_clock.advance(11)
        stale = [await agg.fetch() for _ in range(5)]
        await agg.settle()
        after = await agg.fetch()
    assert {status(p) for p in stale} == {CacheStatus.STALE}
    assert all(p.sections["a"] == {"n": 1} for p in stale)
    assert source.calls == 2
    assert agg.stats.refreshes == 1
    assert (status(after), after.sections["a"]) == (CacheStatus.HIT, {"n": 2})


def test_stale_answer_does_not_wait_for_the_refresh() -> None:
    """A stale page answers in no (virtual) time while its refresh takes 50 ms."""

    async def run() -> None:
        clock = FakeClock()
        source = Counter(delay=0.05)
        async with page_of(source, clock) as agg:
            await agg.fetch()
            clock.advance(11)
            start = anyio.current_time()
            page = await agg.fetch()
            assert anyio.current_time() == start
            assert status(page) is CacheStatus.STALE
            await agg.settle()
            assert anyio.current_time() == pytest.approx(start + 0.05)

    run_on_mock_clock(run)


async def test_expired_entry_is_a_miss(fake_clock: FakeClock) -> None:
    """Past fresh + stale the source is called before answering."""
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        await agg.fetch()
        fake_clock.advance(15)
        page = await agg.fetch()
    assert (status(page), page.sections["a"]) == (CacheStatus.MISS, {"n": 2})


async def test_stale_if_error_stands_in_for_a_failed_fetch(fake_clock: FakeClock) -> None:
    """Expired but within stale_if_error: a failing source is covered by the old value."""
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        await agg.fetch()
        source.fail = True
        fake_clock.advance(20)  # expired at 15; usable on error until 10 + 30
        page = await agg.fetch()
    assert status(page) is CacheStatus.STALE_IF_ERROR
    assert page.sections["a"] == {"n": 1}
    assert page.errors[0].code is ErrorCode.SOURCE_ERROR
    assert page.status_code == 200


async def test_stale_if_error_window_ends(fake_clock: FakeClock) -> None:
    """Past the stale_if_error window a failing source leaves the section null."""
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        await agg.fetch()
        source.fail = True
        fake_clock.advance(40)
        page = await agg.fetch()
    assert page.sections["a"] is None
    assert status(page) is CacheStatus.MISS
    assert page.status_code == 503


async def test_failed_refresh_keeps_serving_stale(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A refresh that fails is logged and counted; the stale value stays."""
    caplog.set_level(logging.WARNING, "batchpage")
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        await agg.fetch()
        source.fail = True
        fake_clock.advance(11)
        await agg.fetch()
        await agg.settle()
        page = await agg.fetch()
    assert agg.stats.refresh_failures >= 1
    assert "background refresh failed" in caplog.text
    assert (status(page), page.sections["a"]) == (CacheStatus.STALE, {"n": 1})


def test_stampede_of_a_thousand_calls_each_source_once() -> None:
    """1,000 concurrent requests for a cold page share one call per source."""

    async def run() -> None:
        clock = FakeClock()
        sources = {f"s{i}": Counter(delay=0.05 + i / 100) for i in range(6)}
        sections = [
            Section(name=n, source=s, cache=POLICY, breaker=None) for n, s in sources.items()
        ]
        pages = []
        async with Aggregator(
            sections, page="cache-semantics", cache=MemoryCache(clock=clock)
        ) as agg:

            async def one() -> None:
                pages.append(await agg.fetch(RequestContext(params={"limit": 10})))

            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(one)
        assert [s.calls for s in sources.values()] == [1] * 6
        assert len(pages) == 1000
        assert all(p.status_code == 200 and not p.errors for p in pages)
        assert agg.stats.shared_fetches == 999 * 6

    run_on_mock_clock(run)


async def test_personal_sections_are_cached_per_user(fake_clock: FakeClock) -> None:
    """Scope.USER keeps one entry per user; anonymous requests share one."""
    source = Counter()
    async with page_of(source, fake_clock, scope=Scope.USER) as agg:
        alice = await agg.fetch(RequestContext(user_id="alice"))
        bob = await agg.fetch(RequestContext(user_id="bob"))
        alice2 = await agg.fetch(RequestContext(user_id="alice"))
        anon1 = await agg.fetch(RequestContext())
        anon2 = await agg.fetch(RequestContext())
    assert [p.sections["a"]["n"] for p in (alice, bob, alice2, anon1, anon2)] == [1, 2, 1, 3, 3]


async def test_global_sections_are_shared_by_all_users(fake_clock: FakeClock) -> None:
    """Scope.GLOBAL serves every user the same entry."""
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        await agg.fetch(RequestContext(user_id="alice"))
        page = await agg.fetch(RequestContext(user_id="bob"))
    assert status(page) is CacheStatus.HIT
    assert source.calls == 1


async def test_custom_scope_keys_by_its_function(fake_clock: FakeClock) -> None:
    """A scope function (a locale here) decides which entry a request shares."""
    source = Counter()
    agg = page_of(source, fake_clock, scope=lambda ctx: str(ctx.params["locale"]))
    async with agg:
        de1 = await agg.fetch(RequestContext(user_id="a", params={"locale": "de"}))
        de2 = await agg.fetch(RequestContext(user_id="b", params={"locale": "de"}))
        fr = await agg.fetch(RequestContext(user_id="a", params={"locale": "fr"}))
    assert [p.sections["a"]["n"] for p in (de1, de2, fr)] == [1, 1, 2]


async def test_params_are_part_of_the_key(fake_clock: FakeClock) -> None:
    """limit=5 and limit=10 are different entries."""
    source = Counter()
    async with page_of(source, fake_clock) as agg:
        await agg.fetch(RequestContext(params={"limit": 5}))
        page = await agg.fetch(RequestContext(params={"limit": 10}))
    assert status(page) is CacheStatus.MISS


async def test_bumping_the_version_misses_old_entries(fake_clock: FakeClock) -> None:
    """A new version never reads entries written under the old one."""
    cache = MemoryCache(clock=fake_clock)
    source = Counter()
    section = Section(name="a", source=source, cache=POLICY)
    async with Aggregator([section], page="cache-semantics", cache=cache, version="v1") as v1:
        await v1.fetch()
    async with Aggregator([section], page="cache-semantics", cache=cache, version="v2") as v2:
        page = await v2.fetch()
    assert status(page) is CacheStatus.MISS
    assert source.calls == 2


async def test_invalidate_a_section_drops_every_scope(fake_clock: FakeClock) -> None:
    """Invalidating a section makes every user's next fetch a miss."""
    source = Counter()
    async with page_of(source, fake_clock, scope=Scope.USER) as agg:
        for user in ("a", "b"):
            await agg.fetch(RequestContext(user_id=user))
        await agg.invalidate("a")
        pages = [await agg.fetch(RequestContext(user_id=u)) for u in ("a", "b")]
    assert [status(p) for p in pages] == [CacheStatus.MISS, CacheStatus.MISS]


async def test_invalidate_one_user_keeps_the_others(fake_clock: FakeClock) -> None:
    """Invalidating one user's entry leaves other users' entries."""
    source = Counter()
    async with page_of(source, fake_clock, scope=Scope.USER) as agg:
        for user in ("a", "b"):
            await agg.fetch(RequestContext(user_id=user))
        await agg.invalidate("a", user_id="a")
        pages = [await agg.fetch(RequestContext(user_id=u)) for u in ("a", "b")]
    assert [status(p) for p in pages] == [CacheStatus.MISS, CacheStatus.HIT]


async def test_invalidate_checks_its_arguments(fake_clock: FakeClock) -> None:
    """Unknown sections and user ids on global sections are errors."""
    async with page_of(Counter(), fake_clock) as agg:
        with pytest.raises(ValueError, match="unknown section"):
            await agg.invalidate("nope")
        with pytest.raises(ValueError, match="not personal"):
            await agg.invalidate("a", user_id="u")


def test_hostile_user_ids_cannot_reach_other_keys(fake_clock: FakeClock) -> None:
    """User input is escaped or hashed: no ':', '*', '{' or unbounded length in a key."""
    agg = page_of(Counter(), fake_clock, scope=Scope.USER)
    section = agg.sections["a"]
    normal = agg.key_for(section, RequestContext(user_id="alice"))
    for hostile in ("alice:*", "*", "{homepage:v1}", "a}b", "a" * 10_000, "al\nice", "ali ce"):
        key = agg.key_for(section, RequestContext(user_id=hostile))
        # The user id sits in the hash tag: it must neither close the tag nor add a part.
        assert not set("*?[]\\") & set(key)
        assert (key.count("{"), key.count("}")) == (1, 1)
        assert key.count(":") == normal.count(":")
        assert len(key) <= len(normal) + 40
        assert key != normal


def test_keys_carry_prefix_page_version_and_hash_tag(fake_clock: FakeClock) -> None:
    """Keys read prefix:{page:version:scope}:section:params: one hash tag per page and scope."""
    section = Section(name="featuredProducts", source=Counter(), cache=POLICY)
    mine = Section(name="forYou", source=Counter(), cache=POLICY, scope=Scope.USER)
    agg = Aggregator([section, mine], page="homepage", version="v1", key_prefix="shop")
    ctx = RequestContext(user_id="42", params={"limit": 10})
    assert agg.key_for(section, ctx) == "shop:{homepage:v1:g}:featuredProducts:v-limit=i.10"
    assert agg.key_for(mine, ctx) == "shop:{homepage:v1:uv-42}:forYou:v-limit=i.10"
    assert agg.key_for(mine, RequestContext()) == "shop:{homepage:v1:anon}:forYou:-"


async def test_a_full_hit_spawns_no_task(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page served wholly from cache creates no task group at all."""
    async with page_of(Counter(), fake_clock) as agg:
        await agg.fetch()

        def forbidden() -> None:
            raise AssertionError("a task group was created on a full hit")

        monkeypatch.setattr(anyio, "create_task_group", forbidden)
        page = await agg.fetch()
    assert status(page) is CacheStatus.HIT


def test_jitter_spreads_entries_written_together() -> None:
    """Entries written at one moment with jitter get different windows, all shorter."""
    policy = CachePolicy(fresh=100, stale=50, jitter=0.1)
    rolls: Iterator[float] = iter([0.0, 0.5, 1.0])
    entries = [Entry.create(b"1", policy, 0.0, rand=lambda: next(rolls)) for _ in range(3)]
    assert [e.fresh_until for e in entries] == [100.0, 95.0, 90.0]
    assert [e.stale_until for e in entries] == [150.0, 142.5, 135.0]


def test_entry_bytes_round_trip_and_garbage_is_rejected() -> None:
    """The stored form parses back; anything else is a ValueError, never unpickled."""
    entry = Entry(b'{"x":1}', stored_at=1.0, fresh_until=2.0, stale_until=3.0, error_until=4.0)
    back = Entry.loads(entry.dumps())
    assert (back.payload, back.fresh_until, back.error_until) == (b'{"x":1}', 2.0, 4.0)
    for garbage in (b"", b"\x80\x04\x95", b"bp1 1 2\n{}", b"bp1 a b c d\n{}", b"bp1 1 5 3 4\nx"):
        with pytest.raises(ValueError):  # noqa: PT011 - any ValueError
            Entry.loads(garbage)


def _stdlib_accepts(payload: bytes) -> bool:
    def refuse(name: str) -> object:
        raise ValueError(name)

    try:
        json.JSONDecoder(parse_constant=refuse).decode(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return True


def _accepts(payload: bytes) -> bool:
    try:
        check_json(payload)
    except (ValueError, RecursionError):
        return False
    return True


json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
).map(lambda v: json.dumps(v).encode())
# Valid JSON, JSON cut or spliced, and bytes of any kind.
payloads = (
    json_texts
    | st.tuples(json_texts, st.integers(0, 40)).map(lambda t: t[0][: t[1]])
    | st.tuples(json_texts, st.binary(max_size=4), json_texts).map(b"".join)
    | st.binary(max_size=40)
    | st.sampled_from([b"1e999", b'"\\ud800"', b"[" * 300 + b"]" * 300, b"NaN", b" 1 "])
)


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_stored_payloads_are_accepted_exactly_when_json_accepts_them(payload: bytes) -> None:
    """Whichever parser reads first (orjson when installed), the verdict is json's own."""
    assert _accepts(payload) == _stdlib_accepts(payload)


def test_memory_cache_is_bounded_by_entries(fake_clock: FakeClock) -> None:
    """The least recently used entry goes when the cache is full."""
    cache = MemoryCache(max_entries=2, clock=fake_clock)
    entry = Entry(b"1", stored_at=0, fresh_until=1e9, stale_until=1e9, error_until=1e9)
    cache.put("a", entry)
    cache.put("b", entry)
    cache.get("a")
    cache.put("c", entry)
    assert (cache.get("a"), cache.get("b")) == (entry, None)
    assert len(cache) == 2


def test_memory_cache_is_bounded_by_bytes(fake_clock: FakeClock) -> None:
    """With max_bytes, big payloads push out old ones; one too big is not kept."""
    cache = MemoryCache(max_bytes=2000, clock=fake_clock)
    big = Entry(b"x" * 500, stored_at=0, fresh_until=1e9, stale_until=1e9, error_until=1e9)
    cache.put("a", big)
    cache.put("b", big)
    assert len(cache) == 1
    assert cache.get("b") is big
    assert cache.size_bytes == 500 + len("b") + 600 <= 2000
    cache.put("huge", Entry(b"x" * 5000, stored_at=0, fresh_until=1, stale_until=1, error_until=1))
    assert cache.get("huge") is None


def test_memory_cache_drops_useless_entries(fake_clock: FakeClock) -> None:
    """An entry past all its windows is gone on read."""
    cache = MemoryCache(clock=fake_clock)
    cache.put(
        "a",
        Entry(
            b"1",
            stored_at=0,
            fresh_until=fake_clock.now + 1,
            stale_until=fake_clock.now + 2,
            error_until=fake_clock.now + 3,
        ),
    )
    fake_clock.advance(3)
    assert cache.get("a") is None
    assert len(cache) == 0


def test_parameter_values_cannot_forge_other_parameters(fake_clock: FakeClock) -> None:
    """{'limit': '10&x=a'} and {'limit': '10', 'x': 'a'} are different keys."""
    agg = page_of(Counter(), fake_clock)
    section = agg.sections["a"]
    forged = agg.key_for(section, RequestContext(params={"limit": "10&x=a"}))
    honest = agg.key_for(section, RequestContext(params={"limit": "10", "x": "a"}))
    assert forged != honest


class FilledBeforeLock(MemoryCache):
    """A cache where another instance fills each key just before our lock is taken."""

    async def try_lock(self, key: str, ttl: float, /) -> str | None:
        now = self.clock()
        self.put(
            key,
            Entry(
                b'{"n":99}',
                stored_at=now,
                fresh_until=now + 10,
                stale_until=now + 15,
                error_until=now + 40,
            ),
        )
        return "token"


async def test_a_key_filled_between_read_and_lock_is_not_fetched_again(
    fake_clock: FakeClock,
) -> None:
    """The filler re-reads after locking: another instance's fresh write wins over a fetch."""
    source = Counter()
    section = Section(name="a", source=source, cache=POLICY)
    async with Aggregator(
        [section], page="cache-semantics", cache=FilledBeforeLock(clock=fake_clock)
    ) as agg:
        page = await agg.fetch()
    assert source.calls == 0
    assert page.sections["a"] == {"n": 99}
    assert status(page) is CacheStatus.MISS


def test_memory_ttl_caps_how_long_an_entry_stays(fake_clock: FakeClock) -> None:
    """With ttl=60 an entry fresh for 180 s leaves memory after 60 s."""
    cache = MemoryCache(max_entries=50, ttl=60, clock=fake_clock)
    now = fake_clock.now
    cache.put(
        "a",
        Entry(
            b"1", stored_at=now, fresh_until=now + 180, stale_until=now + 300, error_until=now + 300
        ),
    )
    fake_clock.advance(59)
    assert cache.get("a") is not None
    fake_clock.advance(1)
    assert cache.get("a") is None


def test_memory_ttl_is_validated() -> None:
    """A non-positive ttl is rejected with the field's name."""
    with pytest.raises(ValueError, match="ttl"):
        MemoryCache(ttl=0)


def test_entries_too_big_for_memory_are_counted_each_and_logged_once(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A value over max_bytes is never kept: each one counts in too_big, the first one logs."""
    caplog.set_level(logging.WARNING, "batchpage.memory")
    cache = MemoryCache(max_bytes=1000, clock=fake_clock)
    huge = Entry(b"x" * 900, stored_at=0, fresh_until=1e9, stale_until=1e9, error_until=1e9)
    assert [cache.put(key, huge) for key in ("a", "b", "a")] == [False, False, False]
    assert cache.too_big == 3
    assert len(cache) == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "batchpage.memory"]
    assert warnings == [
        "an entry of 1501 bytes (900 of payload) is bigger than the memory cache "
        "(max_bytes=1000): not cached; counted in MemoryCache.too_big"
    ]


def test_an_entry_too_big_drops_the_older_value_of_its_key(fake_clock: FakeClock) -> None:
    """A key whose new value is too big serves nothing rather than its old value."""
    cache = MemoryCache(max_bytes=1000, clock=fake_clock)
    small = Entry(b"1", stored_at=0, fresh_until=1e9, stale_until=1e9, error_until=1e9)
    cache.put("a", small)
    cache.put(
        "a", Entry(b"x" * 900, stored_at=0, fresh_until=1e9, stale_until=1e9, error_until=1e9)
    )
    assert cache.get("a") is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"max_bytes": 100},
            ValueError,
            r"max_bytes must be at least 600 \(each entry's overhead\)",
        ),
        ({"clock": 5.0}, TypeError, r"clock must be a callable \(\) -> seconds, not 5.0"),
    ],
)
def test_memory_cache_arguments_that_could_keep_nothing_are_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A byte bound under one entry's overhead, or a clock that is no clock, fails here."""
    with pytest.raises(error, match=message):
        MemoryCache(**kwargs)


async def test_a_failing_scope_function_serves_its_section_uncached(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A custom scope that raises: the section is fetched and served, not cached, and logged."""

    def by_locale(ctx: RequestContext) -> str:
        return str(ctx.params["locale"])  # KeyError without it

    source = Counter()
    section = Section(name="a", source=source, cache=POLICY, scope=by_locale)
    async with Aggregator([section], page="semantics", cache=MemoryCache(clock=fake_clock)) as agg:
        first = await agg.fetch()
        second = await agg.fetch()
        localised = await agg.fetch(RequestContext(params={"locale": "fr"}))
    assert first.status_code == second.status_code == 200
    assert (first.results["a"].cache, second.results["a"].cache) == (CacheStatus.BYPASS,) * 2
    assert source.calls == 3
    assert localised.results["a"].cache is CacheStatus.MISS
    assert "scope function failed" in caplog.text
