"""Metrics, traces and hooks: what an operator sees after pages with a hit, a stale entry,
a miss, a timeout, a failure and an open breaker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from batchpage import (
    Aggregator,
    BreakerPolicy,
    BreakerState,
    CachePolicy,
    Executor,
    MemoryCache,
    PageResult,
    RequestContext,
    Section,
    SectionResult,
)
from batchpage.contrib.otel import OpenTelemetryObserver
from batchpage.contrib.prometheus import PrometheusObserver
from batchpage.extend import Observer, RefreshOutcome
from helpers import FakeClock, Recorder

pytestmark = pytest.mark.anyio

POLICY = CachePolicy(fresh=10, stale=100, jitter=0)


class Recording(Observer):
    """Every hook call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def page_started(self, page: str, ctx: RequestContext) -> object:
        self.calls.append(("page_started", page))
        return "page-token"

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        self.calls.append(("page_finished", token, result.status_code))

    def section_started(self, page: str, section: str) -> object:
        self.calls.append(("section_started", section))
        return f"token-{section}"

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        code = None if result.error is None else result.error.code.value
        self.calls.append(("section_finished", token, result.name, result.cache.value, code))

    def refresh(self, page: str, section: str, outcome: RefreshOutcome) -> None:
        self.calls.append(("refresh", section, outcome))

    def breaker_changed(self, page: str, section: str, state: BreakerState) -> None:
        self.calls.append(("breaker", section, state))

    def thread_abandoned(self, section: str) -> None:
        self.calls.append(("abandoned", section))


class Raising(Observer):
    def page_started(self, page: str, ctx: RequestContext) -> object:
        raise RuntimeError("a broken observer")

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        raise RuntimeError("a broken observer")


async def _hang(ctx: RequestContext) -> Any:
    await anyio.sleep_forever()


def day_of_pages(clock: FakeClock, **options: Any) -> Aggregator:
    """Six sections, one per thing an operator wants to tell apart."""
    sections = [
        Section(name="hit", source=Recorder("h"), cache=POLICY),
        Section(name="stale", source=Recorder("s"), cache=POLICY),
        Section(name="miss", source=Recorder("m")),
        Section(name="timeout", source=_hang, timeout=0.05, breaker=None),
        Section(name="failure", source=Recorder(fail=True), breaker=None),
        Section(
            name="breaker",
            source=Recorder(fail=True),
            breaker=BreakerPolicy(failure_threshold=1, reset_timeout=600),
        ),
    ]
    return Aggregator(sections, page="ops", cache=MemoryCache(clock=clock), **options)


async def serve_a_day(agg: Aggregator, clock: FakeClock) -> None:
    await agg.fetch()  # every section from its source; the breaker opens
    await agg.fetch(sections=["hit"])  # a hit
    clock.advance(11)  # past fresh
    await agg.fetch(sections=["stale", "breaker"])  # a stale entry, an open breaker
    await agg.settle()
    await agg.fetch(sections=["stale"])  # refreshed: a hit


async def test_hooks_follow_a_page_from_start_to_end(fake_clock: FakeClock) -> None:
    """Page, sections (with their tokens), refresh and breaker hooks, in order."""
    recording = Recording()
    async with day_of_pages(fake_clock, observers=[recording]) as agg:
        await serve_a_day(agg, fake_clock)
    calls = recording.calls
    assert calls[0] == ("page_started", "ops")
    assert ("section_started", "timeout") in calls
    finished = {c[2]: c for c in calls if c[0] == "section_finished"}
    assert finished["timeout"][1:] == ("token-timeout", "timeout", "BYPASS", "TIMEOUT_ERROR")
    assert finished["failure"][4] == "SOURCE_ERROR"
    assert ("breaker", "breaker", BreakerState.OPEN) in calls
    cached = [c for c in calls if c[0] == "section_finished" and c[1] is None]
    assert {c[3] for c in cached} >= {"STALE", "HIT"}  # answered from the cache: no token
    assert ("section_finished", "token-breaker", "breaker", "BYPASS", "CIRCUIT_OPEN") in calls
    refreshes = [c[2] for c in calls if c[0] == "refresh"]
    assert refreshes == [RefreshOutcome.STARTED, RefreshOutcome.REFRESHED]
    assert [c for c in calls if c[0] == "page_finished"] == [
        ("page_finished", "page-token", 200)
    ] * 4


async def test_a_broken_observer_never_fails_a_page(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Hooks that raise are logged; the page and the other observers go on."""
    recording = Recording()
    async with day_of_pages(fake_clock, observers=[Raising(), recording]) as agg:
        page = await agg.fetch()
    assert page.status_code == 200
    assert ("page_finished", "page-token", 200) in recording.calls
    assert "observer hook" in caplog.text


async def test_an_abandoned_thread_is_reported() -> None:
    """A sync source left running after its timeout reaches the hook."""
    release = threading.Event()

    def stuck(ctx: RequestContext) -> str:
        release.wait(10)
        return "late"

    recording = Recording()
    section = Section(name="sync", source=stuck, timeout=0.02, breaker=None)
    try:
        async with Aggregator(
            [section], page="ops", executor=Executor(), observers=[recording]
        ) as agg:
            await agg.fetch()
    finally:
        release.set()
    assert ("abandoned", "sync") in recording.calls


# -- Prometheus -----------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_prometheus_metrics_after_a_day_of_pages(
    fake_clock: FakeClock, registry: CollectorRegistry
) -> None:
    """Pages by status, sections by cache status and code, refreshes, breakers, durations."""
    metrics = PrometheusObserver(registry=registry)
    async with day_of_pages(fake_clock, observers=[metrics]) as agg:
        metrics.watch(agg)
        await serve_a_day(agg, fake_clock)
        assert sample(registry, "batchpage_pages_total", page="ops", status="200") == 4
        results = "batchpage_section_results_total"
        assert sample(registry, results, page="ops", section="hit", cache="HIT", code="") == 1
        assert sample(registry, results, page="ops", section="stale", cache="STALE", code="") == 1
        assert sample(registry, results, page="ops", section="stale", cache="HIT", code="") == 1
        assert sample(registry, results, page="ops", section="miss", cache="BYPASS", code="") == 1
        timeout = {"page": "ops", "section": "timeout", "cache": "BYPASS"}
        assert sample(registry, results, **timeout, code="TIMEOUT_ERROR") == 1
        failure = {"page": "ops", "section": "failure", "cache": "BYPASS"}
        assert sample(registry, results, **failure, code="SOURCE_ERROR") == 1
        opened = {"page": "ops", "section": "breaker", "cache": "BYPASS"}
        assert sample(registry, results, **opened, code="CIRCUIT_OPEN") == 1
        refreshes = "batchpage_refreshes_total"
        assert sample(registry, refreshes, page="ops", section="stale", outcome="refreshed") == 1
        state = {"page": "ops", "section": "breaker"}
        assert sample(registry, "batchpage_breaker_state", **state, state="open") == 1
        assert sample(registry, "batchpage_breaker_state", **state, state="closed") == 0
        errors = {"page": "ops", "section": "timeout", "outcome": "error"}
        assert sample(registry, "batchpage_section_duration_seconds_count", **errors) == 1
        assert sample(registry, "batchpage_section_duration_seconds_sum", **errors) >= 0.05
        assert sample(registry, "batchpage_refresh_backlog", page="ops") == 0
        memory = {"layer": "memory", "result": "entries"}
        assert sample(registry, "batchpage_cache_operations_total", **memory) == 2


# -- OpenTelemetry ----------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def attr(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


async def test_a_page_is_a_span_and_each_section_a_child(
    fake_clock: FakeClock, spans: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    """Section spans carry cache status and error code; a source's own span nests inside."""
    exporter, provider = spans
    tracer = provider.get_tracer("test")

    async def traced(ctx: RequestContext) -> str:
        with tracer.start_as_current_span("db.query"):
            await anyio.lowlevel.checkpoint()
            return "rows"

    sections = [
        Section(name="db", source=traced, cache=POLICY),
        Section(name="failure", source=Recorder(fail=True), breaker=None),
    ]
    observer = OpenTelemetryObserver(tracer)
    async with Aggregator(
        sections, page="ops", cache=MemoryCache(clock=fake_clock), observers=[observer]
    ) as agg:
        await agg.fetch()
        await agg.fetch()  # "db" from the cache now
    finished = exporter.get_finished_spans()
    pages = by_name(finished, "batchpage.page")
    sections_ = by_name(finished, "batchpage.section")
    (query,) = by_name(finished, "db.query")
    assert len(pages) == 2
    first = pages[0]
    children = [
        s for s in sections_ if s.parent is not None and s.parent.span_id == first.context.span_id
    ]
    assert {attr(s, "batchpage.section") for s in children} == {"db", "failure"}
    db = next(s for s in children if attr(s, "batchpage.section") == "db")
    assert attr(db, "batchpage.cache") == "MISS"
    assert query.parent is not None
    assert query.parent.span_id == db.context.span_id  # the source's span nests in its section's
    failed = next(s for s in children if attr(s, "batchpage.section") == "failure")
    assert attr(failed, "batchpage.error_code") == "SOURCE_ERROR"
    assert failed.status.status_code.name == "ERROR"
    second = [
        s
        for s in sections_
        if s.parent is not None and s.parent.span_id == pages[1].context.span_id
    ]
    assert {attr(s, "batchpage.cache") for s in second if attr(s, "batchpage.section") == "db"} == {
        "HIT"
    }
    assert all("user" not in str(v) for s in pages for v in (s.attributes or {}).values())


async def test_a_section_cut_by_the_deadline_still_ends_its_span(
    spans: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """The page deadline cancels a section: its span ends, marked TIMEOUT_ERROR."""
    exporter, provider = spans
    observer = OpenTelemetryObserver(provider.get_tracer("test"))
    sections = [
        Section(name="slow", source=_hang, timeout=5),
        Section(name="ok", source=Recorder(1)),
    ]
    async with Aggregator(sections, page="ops", page_timeout=0.05, observers=[observer]) as agg:
        await agg.fetch()
    slow = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("batchpage.section") == "slow"
    ]
    assert len(slow) == 1
    assert attr(slow[0], "batchpage.error_code") == "TIMEOUT_ERROR"


def test_the_base_observer_does_nothing() -> None:
    """Every hook of the base class is a no-op: subclasses override what they need."""
    from batchpage import CacheStatus

    base = Observer()
    result = SectionResult("s", b"1", CacheStatus.HIT, 0.1)
    page = PageResult({"s": result}, version="v1", generated_at=0.0, total_ms=0.1)
    assert base.page_started("p", RequestContext()) is None
    assert base.section_started("p", "s") is None
    # The others return nothing and raise nothing.
    base.page_finished(None, "p", page)
    base.section_finished(None, "p", result)
    base.refresh("p", "s", RefreshOutcome.SKIPPED)
    base.breaker_changed("p", "s", BreakerState.OPEN)
    base.cache_health("redis", False)
    base.thread_abandoned("s")


def test_observers_must_be_observers() -> None:
    """A list of something else, or one observer not in a list, is refused at once."""
    sections = [Section(name="a", source=Recorder(1))]
    with pytest.raises(TypeError, match="Observer objects"):
        Aggregator(sections, page="ops", observers=[object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one Observer"):
        Aggregator(sections, page="ops", observers=Observer())  # type: ignore[arg-type]
