"""The homepage service's lifetime: everything a server holds from start-up to shutdown.

:func:`running` is an async context manager; the FastAPI app enters it in
its lifespan, the Django app in :class:`batchpage.contrib.django.Lifespan`.
On the way in it starts (or connects to) MongoDB, seeds the embedded
database, builds the six sections (with any injected faults, and the demo's
fault switch when it is on), enters the
aggregator (whose task group owns the stale-while-revalidate refreshes)
and, with Redis, starts polling the rollout key; on the way out it undoes
all of that in reverse order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime

import anyio
import attrs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from batchpage import Aggregator, LayeredCache, MemoryCache, RedisCache, Rollout, Section
from batchpage.contrib.http import PageEndpoint, Reply, http_error_reply
from batchpage.contrib.otel import OpenTelemetryObserver
from batchpage.contrib.prometheus import PrometheusObserver
from batchpage.extend import Cache, Observer
from examples.homepage.data import seed
from examples.homepage.mongo import Database, EmbeddedMongo, connect
from examples.homepage.sources import (
    SECTION_NAMES,
    LegacyQuery,
    build_sections,
    legacy_queries,
    utc_now,
)

from .demo import FaultSwitch, faults_reply, set_fault_reply
from .faults import apply_faults, parse_faults
from .legacy import legacy_reply
from .request import HOMEPAGE_PARAMS
from .rollout_feed import RolloutFeed
from .settings import Settings
from .tracing import tracer_for

logger = logging.getLogger("examples.service")

#: The legacy endpoints had no timeout of their own; this only stops a hung request.
LEGACY_TIMEOUT = 5.0
#: The benchmarks' cold figures (never in production): see :func:`bench_freshness`.
BENCH_FRESH_ENV = "BATCHPAGE_BENCH_FRESH"


def bench_freshness(sections: list[Section], seconds: str | None) -> list[Section]:
    """``0``: no section cached; ``n``: every section fresh ``n`` s, then stale ``n`` s more."""
    if seconds is None:
        return sections
    fresh = float(seconds)
    return [
        attrs.evolve(s, cache=attrs.evolve(s.cache, fresh=fresh, stale=fresh) if fresh else None)
        if s.cache
        else s
        for s in sections
    ]


@attrs.frozen
class Homepage:
    """The running service: what a request handler needs."""

    settings: Settings
    db: Database
    aggregator: Aggregator
    endpoint: PageEndpoint
    rollout: Rollout
    legacy_queries: Mapping[str, LegacyQuery]
    metrics: PrometheusObserver

    def metrics_reply(self) -> Reply:
        """``GET /metrics``: this worker's metrics in Prometheus's text format."""
        body = generate_latest(self.metrics.registry)
        return Reply(
            200, (("Content-Type", CONTENT_TYPE_LATEST), ("Cache-Control", "no-store")), body
        )

    #: The demo's run-time fault switch; ``None`` unless ``settings.demo_faults``.
    fault_switch: FaultSwitch | None = None

    async def legacy(self, name: str | None, query: str | bytes, *, user_id: str | None) -> Reply:
        """A legacy endpoint's reply for the signed-in ``user_id`` (``name=None``: ``/offers``)."""
        return await legacy_reply(
            self.db,
            self.legacy_queries,
            name,
            query,
            user_id=user_id,
            time_limit=LEGACY_TIMEOUT,
            public=self.settings.public_cache_control,
        )

    def demo_faults(self) -> Reply:
        """``GET /demo/faults``: the demo's fault switch (404 when it is off)."""
        if self.fault_switch is None:
            return http_error_reply(404)
        return faults_reply(self.fault_switch, self.aggregator)

    async def set_demo_fault(self, body: bytes, content_type: str | None) -> Reply:
        """``POST /demo/faults``: break or mend one section (404 when the switch is off)."""
        if self.fault_switch is None:
            return http_error_reply(404)
        return await set_fault_reply(self.fault_switch, self.aggregator, body, content_type)


def _clock(now: datetime | None) -> Callable[[], datetime]:
    if now is None:
        return utc_now
    return lambda: now


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Homepage]:
    """Start the service for the block's duration; stop everything after it."""
    faults = parse_faults(settings.faults, SECTION_NAMES)  # a typo fails start-up, not a request
    async with AsyncExitStack() as stack:
        url = settings.mongodb_url
        if url is None:
            server = await stack.enter_async_context(EmbeddedMongo())
            url = server.url
            logger.info("started an embedded MongoDB (nx-27017) at %s", url)
        client = connect(url)
        stack.push_async_callback(client.close)
        db = client[settings.db_name]
        if settings.seeds:
            summary = await seed(db, products=settings.products, now=settings.now)
            logger.info("seeded %s: %s", settings.db_name, summary)
        clock = _clock(settings.now)
        sections = apply_faults(
            build_sections(db, now=clock, timeout=settings.section_timeout), faults
        )
        sections = bench_freshness(sections, os.environ.get(BENCH_FRESH_ENV))
        queries = legacy_queries(now=clock)
        switch: FaultSwitch | None = None
        if settings.demo_faults:
            switch = FaultSwitch(SECTION_NAMES)
            sections = [switch.wrap_section(s) for s in sections]
            queries = {name: switch.wrap_legacy(name, q) for name, q in queries.items()}
            logger.warning(
                "the demo fault switch is on (BATCHPAGE_DEMO_FAULTS): anyone who reaches this "
                "server can break its sections through /demo/faults; never in production"
            )
        cache: Cache | None = None
        redis: RedisCache | None = None
        if settings.redis_url:
            redis = RedisCache.from_url(settings.redis_url, command_timeout=settings.redis_budget)
            cache = LayeredCache(MemoryCache(), redis)
        # Each service its own registry: two apps in one process (tests) keep apart.
        metrics = PrometheusObserver(registry=CollectorRegistry())
        observers: list[Observer] = [metrics]
        if settings.otel:
            observers.append(OpenTelemetryObserver(tracer_for(settings.otel)))
        aggregator = await stack.enter_async_context(
            Aggregator(
                sections,
                page="homepage",
                page_timeout=settings.page_timeout,
                cache=cache,
                observers=observers,
            )
        )
        metrics.watch(aggregator)
        parent = multiprocessing.parent_process()
        if parent is not None:  # a server's worker process (uvicorn --workers, hypercorn)
            orphans = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(orphans.cancel_scope.cancel)
            orphans.start_soon(_end_when_orphaned, parent)
        rollout = Rollout(settings.rollout_percent, salt=settings.rollout_salt)
        if settings.redis_url:
            assert redis is not None
            await redis.connect()  # learns whether REDIS_URL names a Redis Cluster
            await _follow_rollout(stack, rollout, settings, cluster=bool(redis.cluster))
        yield Homepage(
            settings=settings,
            db=db,
            aggregator=aggregator,
            endpoint=PageEndpoint(
                aggregator,
                params=HOMEPAGE_PARAMS,
                max_age=settings.cdn_max_age,
                stale_while_revalidate=settings.cdn_stale_while_revalidate,
            ),
            rollout=rollout,
            legacy_queries=queries,
            metrics=metrics,
            fault_switch=switch,
        )


#: Seconds between two looks at the worker's parent.
PARENT_POLL = 0.5


async def _end_when_orphaned(parent: multiprocessing.process.BaseProcess) -> None:
    """A worker whose server process died (SIGKILL) ends itself, as a SIGTERM would.

    uvicorn's and hypercorn's workers would otherwise serve on, orphaned, and
    keep what they started. SIGTERM makes the worker shut down gracefully,
    so this lifetime's exit runs.
    """
    while parent.is_alive():  # noqa: ASYNC110 - no event to wait on (anyio < 4.7)
        await anyio.sleep(PARENT_POLL)
    logger.warning("the server process %s died: this worker ends", parent.pid)
    os.kill(os.getpid(), signal.SIGTERM)


async def _follow_rollout(
    stack: AsyncExitStack, rollout: Rollout, settings: Settings, *, cluster: bool
) -> None:
    import redis.asyncio
    from redis.asyncio.cluster import RedisCluster

    assert settings.redis_url is not None
    url = settings.redis_url
    client: redis.asyncio.Redis | RedisCluster = (
        RedisCluster.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        if cluster
        else redis.asyncio.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    )
    stack.push_async_callback(client.aclose)
    feed = RolloutFeed(rollout, client, key=settings.rollout_key, interval=settings.rollout_poll)
    await feed.poll_once()  # a rollback already in Redis applies before the first request
    tg = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tg.cancel_scope.cancel)  # runs before the task group waits for the poller
    tg.start_soon(feed.run)
