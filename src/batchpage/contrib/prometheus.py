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
    SectionResult,
)
from batchpage._extras import require
from batchpage.extend import Observer, RefreshOutcome

require("prometheus_client", extra="prometheus", what="batchpage.contrib.prometheus")

from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402
from prometheus_client.core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector  # noqa: E402

__all__ = ["PrometheusObserver"]

#: Seconds: a warm page is microseconds, a cold one up to its deadline.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PrometheusObserver(Observer):
    """An :class:`~batchpage.extend.Observer` that keeps Prometheus metrics.

    Counters and histograms are updated as pages are served; gauges and the
    cache layers' counters are read when Prometheus scrapes, from the
    aggregators given to :meth:`watch`.
    """

    def __init__(
        self, *, registry: CollectorRegistry | None = None, namespace: str = "batchpage"
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.namespace = namespace
        n = namespace
        self.pages = Counter(
            f"{n}_pages",
            "Pages answered, by HTTP status.",
            ["page", "status"],
            registry=self.registry,
        )
        self.page_duration = Histogram(
            f"{n}_page_duration_seconds",
            "Time to answer a page.",
            ["page"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.section_duration = Histogram(
            f"{n}_section_duration_seconds",
            "Time to answer a section (its cache lookup, or its source).",
            ["page", "section", "outcome"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.section_results = Counter(
            f"{n}_section_results",
            "Sections answered, by cache status and error code (empty: none).",
            ["page", "section", "cache", "code"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            f"{n}_refreshes",
            "Background refreshes, by outcome.",
            ["page", "section", "outcome"],
            registry=self.registry,
        )
        self.abandoned = Counter(
            f"{n}_threads_abandoned",
            "Worker threads of sync sources left to finish alone after their timeout.",
            ["section"],
            registry=self.registry,
        )
        self._aggregators: list[Aggregator] = []
        self.registry.register(_Gauges(self))

    def watch(self, aggregator: Aggregator) -> None:
        """Report ``aggregator``'s breakers, refresh backlog and cache layers at scrape time."""
        if aggregator not in self._aggregators:
            self._aggregators.append(aggregator)

    # -- hooks --------------------------------------------------------------

    def page_finished(self, token: object, page: str, result: PageResult) -> None:
        """Count the page by status and observe its time."""
        self.pages.labels(page, str(result.status_code)).inc()
        self.page_duration.labels(page).observe(result.total_ms / 1000)

    def section_finished(self, token: object, page: str, result: SectionResult) -> None:
        """Observe the section's time by outcome; count it by cache status and error code."""
        outcome = "error" if result.unavailable else "stand_in" if result.stand_in else "ok"
        self.section_duration.labels(page, result.name, outcome).observe(result.elapsed_ms / 1000)
        code = "" if result.error is None else result.error.code.value
        self.section_results.labels(page, result.name, result.cache.value, code).inc()

    def refresh(self, page: str, section: str, outcome: RefreshOutcome) -> None:
        """Count a background refresh's outcome."""
        self.refreshes.labels(page, section, outcome.value).inc()

    def thread_abandoned(self, section: str) -> None:
        """Count an abandoned worker thread."""
        self.abandoned.labels(section).inc()


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
