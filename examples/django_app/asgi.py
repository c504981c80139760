"""The ASGI application: Django, wrapped in the lifespan that owns the homepage service.

Django's ASGI handler does not speak the ``lifespan`` protocol, so the
aggregator (whose task group must outlive requests), the MongoDB client and
the rollout feed are started and stopped by
:class:`batchpage.contrib.django.Lifespan` around it. Serve it with an ASGI
server that runs the lifespan (uvicorn's ``--lifespan auto`` default,
hypercorn); the views answer 500 if it never ran.

Outermost is :class:`examples.service.demo.SimulatedLatency`, as in the
FastAPI app: a request with ``X-Simulated-Latency-Ms`` is answered that late.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]

from batchpage.contrib.django import Lifespan
from examples.service.demo import SimulatedLatency
from examples.service.lifetime import Homepage, running
from examples.service.settings import Settings


def homepage_settings() -> Settings:
    """The service's settings, from Django's."""
    s = django_settings
    return Settings(
        mongodb_url=s.MONGODB_URL,
        redis_url=s.REDIS_URL,
        db_name=s.HOMEPAGE_DB,
        seed=s.HOMEPAGE_SEED,
        products=s.HOMEPAGE_PRODUCTS,
        page_timeout=s.HOMEPAGE_PAGE_TIMEOUT,
        section_timeout=s.HOMEPAGE_SECTION_TIMEOUT,
        rollout_percent=s.HOMEPAGE_ROLLOUT_PERCENT,
        rollout_key=s.HOMEPAGE_ROLLOUT_KEY,
        rollout_poll=s.HOMEPAGE_ROLLOUT_POLL,
        redis_budget=s.HOMEPAGE_REDIS_BUDGET,
        faults=s.HOMEPAGE_FAULTS,
        demo_faults=s.HOMEPAGE_DEMO_FAULTS,
        now=s.HOMEPAGE_NOW,
        otel=s.HOMEPAGE_OTEL,
        cdn_max_age=s.HOMEPAGE_CDN_MAX_AGE,
        cdn_stale_while_revalidate=s.HOMEPAGE_CDN_SWR,
    )


@asynccontextmanager
async def homepage_lifetime() -> AsyncIterator[Homepage]:
    async with running(homepage_settings()) as homepage:
        yield homepage


application = SimulatedLatency(Lifespan(get_asgi_application(), homepage_lifetime))
