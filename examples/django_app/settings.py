"""Django settings of the homepage example: no database, no apps, one middleware (sessions).

The homepage's own settings are ordinary Django settings, each defaulting
to the environment variable the FastAPI app reads (see
:mod:`examples.service.settings`), so one environment configures both apps.
"""

from __future__ import annotations

import os
import secrets

from examples.service.settings import DEFAULT_ROLLOUT_KEY, Settings
from examples.service.vitals import VITALS_ENV

_ENV = Settings.from_env(os.environ)  # parses and validates the environment once

# -- Django ---------------------------------------------------------------

DEBUG = False
# Signs the session cookie: give one (DJANGO_SECRET_KEY, or the FastAPI app's
# BATCHPAGE_SESSION_SECRET) for several workers or restarts; else per process.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _ENV.session_secret or secrets.token_urlsafe(50)
# Served on loopback by default; list other host names when serving them.
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS: list[str] = []
# The demo sign-in: Django's own session, kept in a signed cookie (no database), its
# middleware run on the event loop (no worker thread per request; see .middleware).
MIDDLEWARE: list[str] = ["examples.django_app.middleware.SessionMiddleware"]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_NAME = "batchpage_session"
SESSION_COOKIE_AGE = _ENV.session_max_age
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = _ENV.session_secure
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "examples.service": {"handlers": ["console"], "level": "INFO"},
        "batchpage": {"handlers": ["console"], "level": "WARNING"},
    },
}

# -- the homepage (read by examples.django_app.asgi) -------------------------

MONGODB_URL: str | None = _ENV.mongodb_url  #: None: an embedded nx-27017
REDIS_URL: str | None = _ENV.redis_url  #: None: memory cache only
HOMEPAGE_DB: str = _ENV.db_name
HOMEPAGE_SEED: bool | None = _ENV.seed  #: None: seed the embedded database only
HOMEPAGE_PRODUCTS: int = _ENV.products
HOMEPAGE_PAGE_TIMEOUT: float = _ENV.page_timeout  #: seconds
HOMEPAGE_SECTION_TIMEOUT: float = _ENV.section_timeout  #: seconds
HOMEPAGE_ROLLOUT_PERCENT: float = _ENV.rollout_percent
HOMEPAGE_ROLLOUT_KEY: str = _ENV.rollout_key or DEFAULT_ROLLOUT_KEY
HOMEPAGE_ROLLOUT_POLL: float = _ENV.rollout_poll  #: seconds
HOMEPAGE_REDIS_BUDGET: float = _ENV.redis_budget  #: seconds per Redis command
HOMEPAGE_FAULTS: str = _ENV.faults  #: test hook; see examples.service.faults
#: /demo/faults, the demo page's run-time fault switch; see examples.service.demo
HOMEPAGE_DEMO_FAULTS: bool = _ENV.demo_faults
#: /debug/vitals, this worker's resources and counters (tests, rehearsals; never production)
HOMEPAGE_DEBUG_VITALS: bool = os.environ.get(VITALS_ENV) == "1"
HOMEPAGE_NOW = _ENV.now  #: None: the real clock
HOMEPAGE_OTEL: str = _ENV.otel  #: "console": print spans (BATCHPAGE_OTEL)
HOMEPAGE_CDN_MAX_AGE: int = _ENV.cdn_max_age  #: max-age of public answers, seconds
HOMEPAGE_CDN_SWR: int = _ENV.cdn_stale_while_revalidate  #: their stale-while-revalidate
