"""Edges of the aggregator's public API: fallbacks that fail, invalidation's arguments,
observers of a shared cache, and a page cut short while observed."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from batchpage import (
    Aggregator,
    CachePolicy,
    ErrorCode,
    MemoryCache,
    RequestContext,
    Scope,
    Section,
)
from batchpage.extend import Observer
from helpers import FakeClock, Recorder

pytestmark = pytest.mark.anyio

POLICY = CachePolicy(fresh=10, stale=100, jitter=0)


def _explode(ctx: RequestContext) -> Any:
    raise RuntimeError("the fallback failed too")


async def test_a_fallback_that_raises_leaves_the_section_null(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The source failed, and so did its fallback: null, the source's error, both logged."""
    section = Section(name="a", source=Recorder(fail=True), fallback=_explode, breaker=None)
    async with Aggregator([section, Section(name="b", source=Recorder(1))], page="edges") as agg:
        page = await agg.fetch()
    assert page.sections["a"] is None
    assert page.errors[0].code is ErrorCode.SOURCE_ERROR
    assert "fallback failed" in caplog.text


async def test_a_fallback_that_cannot_be_encoded_leaves_the_section_null(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fallback value JSON cannot write is logged, and the section is null."""
    section = Section(name="a", source=Recorder(fail=True), fallback=object(), breaker=None)
    async with Aggregator([section, Section(name="b", source=Recorder(1))], page="edges") as agg:
        page = await agg.fetch()
    assert page.sections["a"] is None
    assert "fallback" in caplog.text


async def test_invalidation_checks_which_scope_applies(fake_clock: FakeClock) -> None:
    """user_id and scope are exclusive; user_id needs a personal section, scope a custom one."""
    sections = [
        Section(name="mine", source=Recorder(1), cache=POLICY, scope=Scope.USER),
        Section(name="all", source=Recorder(2), cache=POLICY),
        Section(name="seg", source=Recorder(3), cache=POLICY, scope=lambda ctx: "x"),
    ]
    async with Aggregator(sections, page="edges", cache=MemoryCache(clock=fake_clock)) as agg:
        with pytest.raises(ValueError, match="give user_id or scope, not both"):
            await agg.invalidate("mine", user_id="u1", scope="x")
        with pytest.raises(ValueError, match="is not personal"):
            await agg.invalidate("all", user_id="u1")
        with pytest.raises(ValueError, match="has no custom scope"):
            await agg.invalidate("all", scope="x")
        await agg.fetch(RequestContext(user_id="u1"))
        await agg.invalidate("seg", scope="x")  # a custom scope's one value
        page = await agg.fetch(RequestContext(user_id="u1"))
    assert page.results["seg"].cache.value == "MISS"
    assert page.results["mine"].cache.value == "HIT"


class Counting(Observer):
    def __init__(self) -> None:
        self.health: list[tuple[str, bool]] = []
        self.finished: list[str] = []

    def cache_health(self, layer: str, healthy: bool) -> None:
        self.health.append((layer, healthy))

    def section_finished(self, token: object, page: str, result: Any) -> None:
        self.finished.append(result.name)


def test_a_page_cut_by_its_deadline_tells_the_observer_of_every_section() -> None:
    """Sections cancelled by the deadline (or never started) are still reported, once each."""

    async def hang(ctx: RequestContext) -> Any:
        await anyio.sleep_forever()

    async def run() -> None:
        counting = Counting()
        sections = [Section(name=f"s{i}", source=hang, timeout=5) for i in range(4)]
        async with Aggregator(
            sections, page="edges", page_timeout=0.1, observers=[counting]
        ) as agg:
            page = await agg.fetch()
        assert {e.code for e in page.errors} == {ErrorCode.TIMEOUT_ERROR}
        assert sorted(counting.finished) == ["s0", "s1", "s2", "s3"]

    from helpers import run_on_mock_clock

    run_on_mock_clock(run)


async def test_the_key_memo_is_bounded(fake_clock: FakeClock) -> None:
    """Past 4,096 distinct requests the memo starts over: memory stays bounded."""
    section = Section(name="a", source=Recorder(1), cache=POLICY)
    async with Aggregator([section], page="edges", cache=MemoryCache(clock=fake_clock)) as agg:
        for i in range(4100):
            await agg.fetch(RequestContext(params={"i": i}))
        assert len(agg._key_memo) <= 4096


async def test_log_lines_name_the_section(caplog: pytest.LogCaptureFixture) -> None:
    """A failed source is logged under batchpage with its section's name."""
    with caplog.at_level(logging.ERROR, logger="batchpage"):
        async with Aggregator([Section(name="named", source=Recorder(fail=True))], page="e") as agg:
            await agg.fetch()
    assert "section 'named': source failed" in caplog.text


def test_cache_settings_are_checked_naming_them() -> None:
    """MemoryCache's bounds, and LayeredCache's layers, are checked where they are made."""
    from batchpage import LayeredCache

    with pytest.raises(ValueError, match="max_entries must be a positive int"):
        MemoryCache(max_entries=0)
    with pytest.raises(ValueError, match="max_bytes must be a positive int or None"):
        MemoryCache(max_bytes=-5)
    with pytest.raises(TypeError, match="memory must be a MemoryCache"):
        LayeredCache(object(), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="redis must be a RedisCache"):
        LayeredCache(MemoryCache(), object())  # type: ignore[arg-type]


async def test_memory_keeps_its_newest_entries_and_refuses_odd_tokens(
    fake_clock: FakeClock,
) -> None:
    """Past max_entries the least recent goes; a token that is not a mark refuses the write."""
    from batchpage.extend import Entry

    memory = MemoryCache(max_entries=2, clock=fake_clock)
    for key in ("a", "b", "c"):
        memory.put(key, Entry.create(b"1", POLICY, fake_clock.now))
    assert [memory.get(k) is not None for k in ("a", "b", "c")] == [False, True, True]
    assert await memory.set("d", Entry.create(b"1", POLICY, fake_clock.now), token="x") is False
    assert memory.drop_prefix("b") == 1
