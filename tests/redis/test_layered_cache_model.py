"""A stateful model of the layered cache over a real redis-server that goes down.

Like ``test_cache_model`` but the model keeps two stores, memory (L1) and
Redis (L2), and Redis is stopped and restarted between steps. The model says
what every layer holds: reads go to L1, then to L2 for what L1 cannot answer
fresh; the fresher entry wins and fills L1; writes reach L2 only while it is
up; a restarted Redis (no persistence) is empty, and the invalidation
listener empties L1 when it resubscribes, because messages were lost.
After every step the served values and statuses must match the model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from batchpage import (
    Aggregator,
    CacheStatus,
    InvalidationIncomplete,
    LayeredCache,
    RequestContext,
    Section,
)
from cache_model import FRESH, IF_ERROR, POLICY, SECTIONS, STALE, USERS, ModelEntry, Source
from helpers import FakeClock
from redis_server import RedisServer, Ticker, eventually, layered_cache

Key = tuple[str, str | None]


class LayeredCacheModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.ticker = Ticker()
        self.directory = Path(tempfile.mkdtemp(prefix="bp-model-redis-"))
        self.server = RedisServer(self.directory)
        self.server.start()
        self.sources = {name: Source() for name in SECTIONS}
        sections = [
            Section(name=name, source=self.sources[name], cache=POLICY, scope=scope, breaker=None)
            for name, scope in SECTIONS.items()
        ]
        self.cache: LayeredCache = layered_cache(
            self.server, self.clock, monotonic=self.ticker, backoff=0.05
        )
        self.agg = Aggregator(sections, page="model", cache=self.cache)
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self._agg_cm = self.portal.wrap_async_context_manager(self.agg)
        self._agg_cm.__enter__()
        self.redis_up = True
        self.l1: dict[Key, ModelEntry] = {}
        self.l2: dict[Key, ModelEntry] = {}
        self.successes = dict.fromkeys(SECTIONS, 0)

    def teardown(self) -> None:
        try:
            self._agg_cm.__exit__(None, None, None)
            self._portal_cm.__exit__(None, None, None)
        finally:
            self.server.stop()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _key(self, section: str, user: str | None) -> Key:
        return (section, user if SECTIONS[section].value == "user" else None)

    def _alive(self, entry: ModelEntry | None) -> ModelEntry | None:
        if entry is None or self.clock.now - entry.written_at >= FRESH + IF_ERROR:
            return None  # past every window: the stores drop it
        return entry

    def _read(self, key: Key) -> ModelEntry | None:
        l1 = self._alive(self.l1.get(key))
        if l1 is not None and self.clock.now - l1.written_at < FRESH:
            return l1
        l2 = self._alive(self.l2.get(key)) if self.redis_up else None
        if l2 is not None and (l1 is None or l2.written_at > l1.written_at):
            self.l1[key] = l2
            return l2
        return l1

    def _write(self, key: Key) -> int:
        self.successes[key[0]] += 1
        entry = ModelEntry(self.successes[key[0]], self.clock.now)
        self.l1[key] = entry
        if self.redis_up:
            self.l2[key] = entry
        return entry.n

    @rule(user=st.sampled_from(USERS))
    def fetch(self, user: str | None) -> None:
        page = self.portal.call(self.agg.fetch, RequestContext(user_id=user))
        self.portal.call(self.agg.settle)
        for name in SECTIONS:
            key = self._key(name, user)
            entry = self._read(key)
            age = None if entry is None else self.clock.now - entry.written_at
            failing = self.sources[name].failing
            expected: tuple[CacheStatus, Any, bool]
            if entry is not None and age is not None and age < FRESH:
                expected = (CacheStatus.HIT, {"n": entry.n}, False)
            elif entry is not None and age is not None and age < FRESH + STALE:
                expected = (CacheStatus.STALE, {"n": entry.n}, False)
                if not failing:
                    self._write(key)
            elif not failing:
                expected = (CacheStatus.MISS, {"n": self._write(key)}, False)
            elif entry is not None:
                expected = (CacheStatus.STALE_IF_ERROR, {"n": entry.n}, True)
            else:
                expected = (CacheStatus.MISS, None, True)
            result = page.results[name]
            got = (result.cache, result.value, result.error is not None)
            assert got == expected, (name, user, age, self.redis_up)

    @rule(seconds=st.sampled_from([1.0, 5.0, 9.0, 10.0, 16.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(section=st.sampled_from(sorted(SECTIONS)), failing=st.booleans())
    def set_failing(self, section: str, failing: bool) -> None:
        self.sources[section].failing = failing

    @rule(section=st.sampled_from(sorted(SECTIONS)))
    def invalidate_section(self, section: str) -> None:
        if self.redis_up:
            self.portal.call(self.agg.invalidate, section)
            for store in (self.l1, self.l2):
                for key in [k for k in store if k[0] == section]:
                    del store[key]
        else:
            with pytest.raises(InvalidationIncomplete):
                self.portal.call(self.agg.invalidate, section)
            for key in [k for k in self.l1 if k[0] == section]:
                del self.l1[key]

    @precondition(lambda self: self.redis_up)
    @rule()
    def redis_goes_down(self) -> None:
        self.server.stop()
        self.redis_up = False
        self.l2.clear()  # no persistence: what it held is gone

    @precondition(lambda self: not self.redis_up)
    @rule()
    def redis_comes_back(self) -> None:
        flushes = self.cache.stats.memory_flushes
        self.server.start()
        self.ticker.advance(1.0)  # past the data path's back-off
        # The listener resubscribes on its own (real-time) back-off and empties
        # memory, since invalidations sent meanwhile were lost.
        self.portal.call(lambda: eventually(lambda: self.cache.stats.memory_flushes > flushes))
        self.redis_up = True
        self.l1.clear()

    @invariant()
    def sources_called_as_the_model_says(self) -> None:
        assert {n: s.successes for n, s in self.sources.items()} == self.successes


# No shrinking: each shrink step restarts Redis, and hypothesis would spend its
# five-minute budget on it; the failing step list is printed as generated.
LayeredCacheModel.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
TestLayeredCacheModel = LayeredCacheModel.TestCase
