"""Metrics, traces and hooks: what an operator sees after pages with a hit, a stale entry,
a miss, a timeout, a failure and an open breaker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Counter, Histogram

from batchpage import (
    Aggregator,
    BreakerPolicy,
    BreakerState,
    CachePolicy,
    CacheStatus,
    ErrorCode,
    Executor,
    MemoryCache,
    PageResult,
    RequestContext,
    Section,
    SectionError,
    SectionResult,
)
from batchpage.contrib import prometheus
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


class ClientLibraryObserver(Observer):
    """The metrics as ``prometheus_client``'s own Counter and Histogram keep them: the reference."""

    def __init__(self, registry: CollectorRegistry) -> None:
        buckets = prometheus.BUCKETS
        self.pages = Counter("batchpage_pages", "", ["page", "status"], registry=registry)
        self.page_duration = Histogram(
            "batchpage_page_duration_seconds", "", ["page"], buckets=buckets, registry=registry
        )
        self.section_duration = Histogram(
            "batchpage_section_duration_seconds",
            "",
            ["page", "section", "outcome"],
            buckets=buckets,
            registry=registry,
        )
        self.section_results = Counter(
            "batchpage_section_results", "", ["page", "section", "cache", "code"], registry=registry
        )
        self.refreshes = Counter(
            "batchpage_refreshes", "", ["page", "section", "outcome"], registry=registry
        )
        self.abandoned = Counter("batchpage_threads_abandoned", "", ["section"], registry=registry)

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        self.pages.labels(page, str(result.status_code)).inc()
        self.page_duration.labels(page).observe(result.total_ms / 1000)

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        outcome = "error" if result.unavailable else "stand_in" if result.stand_in else "ok"
        self.section_duration.labels(page, result.name, outcome).observe(result.elapsed_ms / 1000)
        code = "" if result.error is None else result.error.code.value
        self.section_results.labels(page, result.name, result.cache.value, code).inc()

    def refresh(self, page: str, section: str, outcome: RefreshOutcome) -> None:
        self.refreshes.labels(page, section, outcome.value).inc()

    def thread_abandoned(self, section: str) -> None:
        self.abandoned.labels(section).inc()


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the batchpage counters and histograms, ``*_created`` aside."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in registry.collect():
        if family.name.startswith(("batchpage_breaker", "batchpage_cache", "batchpage_refresh_b")):
            continue  # the gauges read at scrape time: not tallied
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


event_ms = st.sampled_from([0.0, 0.5, 1.0, 2.5, 7.3, 80.0, 250.0, 6000.0]) | st.floats(0, 9000)


@st.composite
def hook_calls(draw: st.DrawFn) -> tuple[str, tuple[object, ...]]:
    """One hook call, as an aggregator makes them."""
    kind = draw(st.sampled_from(["section", "section", "page", "refresh", "abandoned"]))
    page, name = draw(st.sampled_from(["p", "q"])), draw(st.sampled_from(["a", "b", "c"]))
    code = draw(st.none() | st.sampled_from(list(ErrorCode)))
    error = None if code is None else SectionError(name, code, "failed")
    result = SectionResult(
        name,
        b"1",
        draw(st.sampled_from(list(CacheStatus))),
        draw(event_ms),
        error,
        error is not None and draw(st.booleans()),
    )
    if kind == "section":
        return kind, (None, page, result)
    if kind == "page":
        built = PageResult(
            {name: result},
            version="v1",
            generated_at=0,
            total_ms=draw(event_ms),
            required=draw(st.sampled_from([frozenset(), frozenset({name})])),
        )
        return kind, (None, page, built)
    if kind == "refresh":
        return kind, (page, name, draw(st.sampled_from(list(RefreshOutcome))))
    return kind, (name,)


HOOKS = {
    "section": "section_finished",
    "page": "page_finished",
    "refresh": "refresh",
    "abandoned": "thread_abandoned",
}


@settings(max_examples=100, deadline=None)
@given(st.lists(hook_calls(), max_size=60))
def test_prometheus_tallies_are_the_client_library_metrics(
    calls: list[tuple[str, tuple[object, ...]]],
) -> None:
    """Any hook calls: the same samples as prometheus_client's Counter and Histogram would give."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    observers = [PrometheusObserver(registry=ours), ClientLibraryObserver(theirs)]
    for kind, args in calls:
        for observer in observers:
            getattr(observer, HOOKS[kind])(*args)
    expected, got = samples(theirs), samples(ours)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_two_prometheus_observers_on_one_registry_are_refused() -> None:
    """Their series would collide: the second is refused, as prometheus_client refuses it."""
    registry = CollectorRegistry()
    PrometheusObserver(registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusObserver(registry=registry)


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


async def test_a_page_from_memory_comes_through_one_hook_as_the_hooks_one_by_one() -> None:
    """A page answered from a memory view: ``page_from_memory``, which by default is the
    usual hooks in turn; PrometheusObserver's own version tallies exactly what they do."""
    sections = [Section(name=n, source=Recorder(n), cache=CachePolicy(fresh=60)) for n in "abc"]
    recording = Recording()
    registry = CollectorRegistry()
    tallying = PrometheusObserver(registry=registry)
    async with Aggregator(
        sections, page="warm", cache=MemoryCache(), observers=[recording, tallying]
    ) as agg:
        await agg.fetch()  # from the sources: the view is made
        recording.calls.clear()
        before = samples(registry)
        page = await agg.fetch()  # from the view
    assert recording.calls == [
        ("page_started", "warm"),
        *[("section_finished", None, n, "HIT", None) for n in "abc"],
        ("page_finished", "page-token", 200),
    ]
    one_by_one_registry = CollectorRegistry()
    one_by_one = PrometheusObserver(registry=one_by_one_registry)
    Observer.page_from_memory(one_by_one, "warm", RequestContext(), page)  # the hooks in turn
    after = samples(registry)
    added = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert added == {k: v for k, v in samples(one_by_one_registry).items() if v}
    assert any(dict(labels).get("cache") == "HIT" for _, labels in added)
