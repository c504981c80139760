"""A stateful model of the cache: the real aggregator and cache against a plain dict.

Hypothesis drives fetches by different users, clock advances, failing and
recovering sources, and invalidations; after every step the value served for
each section and its HIT/STALE/MISS/STALE_IF_ERROR status must be what the
model predicts. The freshness clock is fake; the event loop runs in a portal
thread so the aggregator lives across steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from batchpage import (
    Aggregator,
    CacheStatus,
    MemoryCache,
    RequestContext,
    Scope,
    Section,
)
from batchpage.extend import Cache
from cache_model import FRESH, IF_ERROR, POLICY, SECTIONS, STALE, USERS, ModelEntry, Source
from helpers import FakeClock

CacheFactory = Callable[[FakeClock], Cache]


class CacheModel(RuleBasedStateMachine):
    """Subclasses choose the cache under test with ``make_cache``."""

    make_cache: CacheFactory = staticmethod(lambda clock: MemoryCache(clock=clock))

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.sources = {name: Source() for name in SECTIONS}
        sections = [
            Section(name=name, source=self.sources[name], cache=POLICY, scope=scope, breaker=None)
            for name, scope in SECTIONS.items()
        ]
        self.agg = Aggregator(sections, page="model", cache=self.make_cache(self.clock))
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self._agg_cm = self.portal.wrap_async_context_manager(self.agg)
        self._agg_cm.__enter__()
        self.model: dict[tuple[str, str | None], ModelEntry] = {}
        self.expected_successes = dict.fromkeys(SECTIONS, 0)

    def teardown(self) -> None:
        self._agg_cm.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)

    def _key(self, section: str, user: str | None) -> tuple[str, str | None]:
        return (section, user if SECTIONS[section] is Scope.USER else None)

    def _write(self, key: tuple[str, str | None]) -> int:
        section = key[0]
        self.expected_successes[section] += 1
        n = self.expected_successes[section]
        self.model[key] = ModelEntry(n, self.clock.now)
        return n

    @rule(user=st.sampled_from(USERS))
    def fetch(self, user: str | None) -> None:
        page = self.portal.call(self.agg.fetch, RequestContext(user_id=user))
        self.portal.call(self.agg.settle)
        now = self.clock.now
        for name in SECTIONS:
            key = self._key(name, user)
            entry = self.model.get(key)
            age = None if entry is None else now - entry.written_at
            failing = self.sources[name].failing
            expected_value: Any
            if entry is not None and age is not None and age < FRESH:
                expected_status, expected_value, error = CacheStatus.HIT, {"n": entry.n}, False
            elif entry is not None and age is not None and age < FRESH + STALE:
                expected_status, expected_value, error = CacheStatus.STALE, {"n": entry.n}, False
                if not failing:
                    self._write(key)  # the background refresh (awaited by settle)
            elif not failing:
                expected_status, expected_value, error = CacheStatus.MISS, None, False
                expected_value = {"n": self._write(key)}
            elif entry is not None and age is not None and age < FRESH + IF_ERROR:
                expected_status, expected_value, error = (
                    CacheStatus.STALE_IF_ERROR,
                    {"n": entry.n},
                    True,
                )
            else:
                expected_status, expected_value, error = CacheStatus.MISS, None, True
            result = page.results[name]
            assert result.cache is expected_status, (name, user, age, result)
            assert result.value == expected_value, (name, user, age)
            assert (result.error is not None) == error
        # The body says the same, whichever way the page was answered (a view or not).
        body = json.loads(page.to_json())
        assert body["sections"] == page.sections
        assert body["metadata"]["cache"] == {n: r.cache.value for n, r in page.results.items()}

    @rule(seconds=st.sampled_from([1.0, 3.0, 5.0, 9.0, 10.0, 16.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(section=st.sampled_from(sorted(SECTIONS)), failing=st.booleans())
    def set_failing(self, section: str, failing: bool) -> None:
        self.sources[section].failing = failing

    @rule(section=st.sampled_from(sorted(SECTIONS)))
    def invalidate_section(self, section: str) -> None:
        self.portal.call(self.agg.invalidate, section)
        for key in [k for k in self.model if k[0] == section]:
            del self.model[key]

    @precondition(lambda self: True)
    @rule(user=st.sampled_from(["alice", "bob"]))
    def invalidate_user(self, user: str) -> None:
        self.portal.call(lambda: self.agg.invalidate("p", user_id=user))
        self.model.pop(("p", user), None)

    @invariant()
    def sources_called_as_the_model_says(self) -> None:
        assert {n: s.successes for n, s in self.sources.items()} == self.expected_successes


CacheModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestMemoryCacheModel = CacheModel.TestCase
