"""The homepage's routes: the same paths as the FastAPI app."""

from __future__ import annotations

import os

from django.conf import settings  # type: ignore[import-untyped]  # Django ships no types
from django.urls import path  # type: ignore[import-untyped]

from batchpage.contrib.django import error_view

from . import views
from .views import get_only, methods

urlpatterns = [
    path("", get_only(views.demo)),
    path("homepage", get_only(views.homepage)),
    path("homepage/stream", get_only(views.homepage_stream)),
    path("rollout", get_only(views.rollout)),
    path("metrics", get_only(views.metrics)),
    path("session", methods(GET=views.who, POST=views.sign_in, DELETE=views.sign_out)),
    path("products/featured", get_only(views.legacy_view("featuredProducts"))),
    path("products/new-arrivals", get_only(views.legacy_view("newArrivals"))),
    path("stores/featured", get_only(views.legacy_view("featuredStores"))),
    path("events/featured", get_only(views.legacy_view("featuredEvents"))),
    path("offers", get_only(views.offers)),
]
if settings.HOMEPAGE_DEMO_FAULTS:  # the demo's run-time fault switch: off unless asked for
    urlpatterns.append(
        path("demo/faults", methods(GET=views.demo_faults, POST=views.set_demo_fault))
    )
if settings.HOMEPAGE_DEBUG_VITALS:  # this worker's internals, as the FastAPI app's: off by default
    urlpatterns.append(path("debug/vitals", get_only(views.debug_vitals)))
if os.environ.get("BATCHPAGE_BENCH_BARE") == "1":  # the benchmarks' bare views, as in FastAPI's
    urlpatterns += [
        path("bench/bare", get_only(views.bench_bare)),
        path("bench/bare-no-identity", get_only(views.bench_bare_no_identity)),
    ]

# No route, or a request Django refused: the JSON error shape, not an HTML page.
handler400 = error_view(400)
handler404 = error_view(404)
