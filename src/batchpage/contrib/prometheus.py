"""Prometheus metrics of an aggregator, through ``prometheus-client``.

::

    from batchpage.contrib.prometheus import PrometheusObserver

    metrics = PrometheusObserver()          # the default registry, or registry=...
    agg = Aggregator(sections, page="homepage", observers=[metrics])
    metrics.watch(agg)                      # the gauges read at scrape time

Metric names follow Prometheus conventions (``_seconds``, ``_total``):

======================================  ==========================  ==============================
metric                                  labels                      what
======================================  ==========================  ==============================
``batchpage_pages_total``               page, status                pages answered, by HTTP status
``batchpage_page_duration_seconds``     page                        histogram of page times
``batchpage_section_duration_seconds``  page, section, outcome      histogram of section times;
                                                                    outcome is ``ok``,
                                                                    ``stand_in`` or ``error``
``batchpage_section_results_total``     page, section, cache, code  sections by cache status
                                                                    (``HIT``, ``STALE``, ``MISS``,
                                                                    ...) and error code
``batchpage_refreshes_total``           page, section, outcome      background refreshes by
                                                                    outcome
``batchpage_breaker_state``             page, section, state        1 for a section's current
                                                                    breaker state
``batchpage_cache_up``                  layer                       1 while a shared cache layer
                                                                    is reachable
``batchpage_cache_operations_total``    layer, result               cache layers' own counters
                                                                    (hits, misses, errors, writes,
                                                                    ...) read at scrape time
``batchpage_threads_abandoned_total``   section                     worker threads left to finish
                                                                    alone
``batchpage_refresh_backlog``           page                        background refreshes running
                                                                    now
======================================  ==========================  ==============================
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import attrs

from batchpage import (
    Aggregator,
    BreakerState,
    LayeredCache,
    MemoryCache,
    PageResult,
    RedisCache,
    RequestContext,
    SectionResult,
)
from batchpage._extras import require
from batchpage.extend import Observer, RefreshOutcome

require("prometheus_client", extra="prometheus", what="batchpage.contrib.prometheus")

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector  # noqa: E402

__all__ = ["PrometheusObserver"]

#: Seconds: a warm page is microseconds, a cold one up to its deadline.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BOUNDS = (*(repr(b) for b in BUCKETS), "+Inf")

#: A histogram's tally: ``[count, sum, *per-bucket counts]``, the last bucket above BUCKETS.
Tally = list[float]


def _tally() -> Tally:
    return [0, 0.0] + [0] * (len(BUCKETS) + 1)


class PrometheusObserver(Observer):
    """An :class:`~batchpage.extend.Observer` that keeps Prometheus metrics.

    Counters and histograms are tallied as pages are served, under one lock,
    in plain dictionaries, and turned into metrics when Prometheus scrapes:
    a hook costs a dictionary lookup and a few additions, not a
    ``prometheus_client`` child lookup and a lock per metric, which on a
    warm page cost more than the page. Gauges and the cache layers'
    counters are read at scrape time too, from the aggregators given to
    :meth:`watch`.
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, namespace: str = "batchpage"
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.namespace = namespace
        self._lock = threading.Lock()
        #: (page, status) -> the page-time tally of pages answered with that status.
        self._pages: dict[tuple[str, int], Tally] = {}
        #: (page, section, cache, code, outcome) -> the section-time tally.
        self._sections: dict[tuple[str, str, str, str, str], Tally] = {}
        self._refreshes: dict[tuple[str, str, str], int] = {}
        self._abandoned: dict[str, int] = {}
        self._aggregators: list[Aggregator] = []
        self.registry.register(_Tallies(self))
        self.registry.register(_Gauges(self))

    def watch(self, aggregator: Aggregator) -> None:
        """Report ``aggregator``'s breakers, refresh backlog and cache layers at scrape time."""
        if aggregator not in self._aggregators:
            self._aggregators.append(aggregator)

    # -- hooks --------------------------------------------------------------

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        """Count the page by status and observe its time."""
        with self._lock:
            self._page(page, result)

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        """Observe the section's time by outcome; count it by cache status and error code."""
        with self._lock:
            self._section(page, result)

    def page_from_memory(self, page: str, ctx: RequestContext, result: PageResult) -> None:
        """The tallies of :meth:`section_finished` for each section and :meth:`page_finished`,
        under one hold of the lock."""
        with self._lock:
            for section in result.results.values():
                self._section(page, section)
            self._page(page, result)

    def _page(self, page: str, result: PageResult) -> None:
        key = (page, result.status_code)
        seconds = result.total_ms / 1000
        tally = self._pages.get(key)
        if tally is None:
            tally = self._pages[key] = _tally()
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(BUCKETS, seconds)] += 1

    def _section(self, page: str, result: SectionResult) -> None:
        error = result.error
        if error is None:
            key = (page, result.name, result.cache, "", "stand_in" if result.stand_in else "ok")
        else:
            outcome = "stand_in" if result.stand_in else "error"
            key = (page, result.name, result.cache, error.code, outcome)
        seconds = result.elapsed_ms / 1000
        tally = self._sections.get(key)
        if tally is None:
            tally = self._sections[key] = _tally()
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(BUCKETS, seconds)] += 1

    def refresh(self, page: str, section: str, outcome: RefreshOutcome) -> None:
        """Count a background refresh's outcome."""
        key = (page, section, outcome.value)
        with self._lock:
            self._refreshes[key] = self._refreshes.get(key, 0) + 1

    def thread_abandoned(self, section: str) -> None:
        """Count an abandoned worker thread."""
        with self._lock:
            self._abandoned[section] = self._abandoned.get(section, 0) + 1


def _add_histogram(family: HistogramMetricFamily, labels: list[str], tally: Tally) -> None:
    cumulative: list[tuple[str, float]] = []
    running = 0.0
    for bound, count in zip(_BOUNDS, tally[2:], strict=True):
        running += count
        cumulative.append((bound, running))
    family.add_metric(labels, cumulative, tally[1])


def _merge(into: dict[Any, Tally], key: object, tally: Tally) -> None:
    total = into.get(key)
    if total is None:
        into[key] = list(tally)
    else:
        for i, value in enumerate(tally):
            total[i] += value


@attrs.frozen
class _Families:
    """The counters and histograms, empty, under the observer's namespace."""

    pages: CounterMetricFamily
    page_duration: HistogramMetricFamily
    section_duration: HistogramMetricFamily
    section_results: CounterMetricFamily
    refreshes: CounterMetricFamily
    abandoned: CounterMetricFamily

    @classmethod
    def named(cls, n: str) -> _Families:
        return cls(
            pages=CounterMetricFamily(
                f"{n}_pages", "Pages answered, by HTTP status.", labels=["page", "status"]
            ),
            page_duration=HistogramMetricFamily(
                f"{n}_page_duration_seconds", "Time to answer a page.", labels=["page"]
            ),
            section_duration=HistogramMetricFamily(
                f"{n}_section_duration_seconds",
                "Time to answer a section (its cache lookup, or its source).",
                labels=["page", "section", "outcome"],
            ),
            section_results=CounterMetricFamily(
                f"{n}_section_results",
                "Sections answered, by cache status and error code (empty: none).",
                labels=["page", "section", "cache", "code"],
            ),
            refreshes=CounterMetricFamily(
                f"{n}_refreshes",
                "Background refreshes, by outcome.",
                labels=["page", "section", "outcome"],
            ),
            abandoned=CounterMetricFamily(
                f"{n}_threads_abandoned",
                "Worker threads of sync sources left to finish alone after their timeout.",
                labels=["section"],
            ),
        )

    def all(self) -> list[Metric]:
        return [
            self.pages,
            self.page_duration,
            self.section_duration,
            self.section_results,
            self.refreshes,
            self.abandoned,
        ]


class _Tallies(Collector):
    """The counters and histograms, from the observer's tallies at scrape time."""

    def __init__(self, owner: PrometheusObserver) -> None:
        self.owner = owner

    def describe(self) -> list[Metric]:
        # The names, so that a second observer on one registry is refused.
        return _Families.named(self.owner.namespace).all()

    def collect(self) -> Iterator[Metric]:
        owner = self.owner
        with owner._lock:
            pages = {k: list(v) for k, v in owner._pages.items()}
            sections = {k: list(v) for k, v in owner._sections.items()}
            refreshes = dict(owner._refreshes)
            abandoned = dict(owner._abandoned)
        out = _Families.named(owner.namespace)
        by_page: dict[str, Tally] = {}
        for (page, status), tally in pages.items():
            out.pages.add_metric([page, str(status)], tally[0])
            _merge(by_page, page, tally)
        for page, tally in by_page.items():
            _add_histogram(out.page_duration, [page], tally)
        by_outcome: dict[tuple[str, str, str], Tally] = {}
        by_result: dict[tuple[str, str, str, str], float] = {}
        for (page, section, cache, code, outcome), tally in sections.items():
            _merge(by_outcome, (page, section, outcome), tally)
            key = (page, section, str(cache), str(code))
            by_result[key] = by_result.get(key, 0) + tally[0]
        for outcome_labels, tally in by_outcome.items():
            _add_histogram(out.section_duration, list(outcome_labels), tally)
        for result_labels, count in by_result.items():
            out.section_results.add_metric(list(result_labels), count)
        for refresh_labels, count in refreshes.items():
            out.refreshes.add_metric(list(refresh_labels), count)
        for section, count in abandoned.items():
            out.abandoned.add_metric([section], count)
        yield from out.all()


class _Gauges(Collector):
    """What is read at scrape time: breaker states, backlog, cache layers."""

    def __init__(self, owner: PrometheusObserver) -> None:
        self.owner = owner

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        n = self.owner.namespace
        breakers = GaugeMetricFamily(
            f"{n}_breaker_state",
            "1 for the state each section's circuit breaker is in.",
            labels=["page", "section", "state"],
        )
        backlog = GaugeMetricFamily(
            f"{n}_refresh_backlog", "Background refreshes running now.", labels=["page"]
        )
        up = GaugeMetricFamily(
            f"{n}_cache_up", "1 while a shared cache layer is reachable.", labels=["layer"]
        )
        operations = CounterMetricFamily(
            f"{n}_cache_operations",
            "Cache layers' own counters (hits, misses, errors, writes, ...).",
            labels=["layer", "result"],
        )
        layers: dict[str, Any] = {}
        for agg in self.owner._aggregators:
            page = agg.keys.page
            for name, section in agg.sections.items():
                if section.breaker is None:
                    continue
                current = agg.breaker_state(name)
                for state in BreakerState:
                    breakers.add_metric([page, name, state.value], float(state is current))
            backlog.add_metric([page], float(agg.refreshing))
            _layers(agg.cache, layers)
        for layer, stats in layers.items():
            if isinstance(stats, RedisCache):
                up.add_metric([layer], float(stats.available))
                stats = stats.stats
            for result, value in attrs.asdict(stats).items():
                operations.add_metric([layer, result], float(value))
        yield from (breakers, backlog, up, operations)


def _layers(cache: object, out: dict[str, Any]) -> None:
    if isinstance(cache, LayeredCache):
        out.setdefault("layered", cache.stats)
        _layers(cache.memory, out)
        _layers(cache.redis, out)
    elif isinstance(cache, RedisCache):
        out.setdefault("redis", cache)
    elif isinstance(cache, MemoryCache):
        out.setdefault("memory", _MemoryStats(len(cache), cache.too_big))


@attrs.define
class _MemoryStats:
    entries: int
    too_big: int
