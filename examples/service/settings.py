"""The homepage service's settings, from the environment (FastAPI) or Django settings.

Every setting has a working default: no ``MONGODB_URL`` starts an embedded
nx-27017 and seeds it; no ``REDIS_URL`` keeps the cache in memory and the
rollout at ``ROLLOUT_PERCENT``.

=================================  ====================  ==========================================
environment variable               default               meaning
=================================  ====================  ==========================================
``MONGODB_URL``                    (embedded nx-27017)   a real MongoDB
``REDIS_URL``                      (memory only)         Redis: cache layer 2 and the rollout key
``BATCHPAGE_DB``                   ``homepage``          the database of the collections
``BATCHPAGE_SEED``                 ``auto``              seed at start-up: ``auto`` (embedded
                                                         only), ``1`` or ``0``
``BATCHPAGE_PRODUCTS``             ``5000``              products to seed
``BATCHPAGE_PAGE_TIMEOUT``         ``0.8``               seconds for the whole page
``BATCHPAGE_SECTION_TIMEOUT``      ``0.5``               seconds for each section
``ROLLOUT_PERCENT``                ``100``               share of user ids told to use the batch
``BATCHPAGE_ROLLOUT_KEY``          see below             the Redis key overriding the percentage
``BATCHPAGE_ROLLOUT_POLL``         ``2``                 seconds between two reads of that key
``BATCHPAGE_REDIS_BUDGET``         ``0.1``               seconds a Redis command may take before
                                                         Redis counts as down (RedisCache's
                                                         ``command_timeout``)
``BATCHPAGE_EXAMPLE_FAULTS``       (none)                test hook: see :mod:`.faults`
``BATCHPAGE_DEMO_FAULTS``          ``0``                 ``1``: the demo page's run-time fault
                                                         switch, ``/demo/faults`` (see
                                                         :mod:`.demo`); never in production
``BATCHPAGE_EXAMPLE_NOW``          (the real clock)      ISO-8601 "now" for seeding and flash sales
``BATCHPAGE_SESSION_SECRET``       (random per process)  the key signing session cookies; set it
                                                         for several workers or restarts
``BATCHPAGE_SESSION_MAX_AGE``      ``1209600``           seconds a sign-in lasts (14 days)
``BATCHPAGE_SESSION_SECURE``       ``0``                 ``1``: the cookie only over HTTPS
``BATCHPAGE_OTEL``                 (off)                 ``console``: print a span per page and
                                                         section (OpenTelemetry)
``BATCHPAGE_CDN_MAX_AGE``          ``60``                ``max-age`` (seconds) of public answers:
                                                         anonymous pages, legacy endpoints
``BATCHPAGE_CDN_SWR``              ``120``               their ``stale-while-revalidate``
                                                         (seconds): a CDN's grace
``BATCHPAGE_BENCH_FRESH``          (each section's own)  benchmarks only: every section fresh
                                                         (and then stale) this many seconds;
                                                         ``0``: nothing cached
=================================  ====================  ==========================================
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

import attrs

logger = logging.getLogger("examples.service")

DEFAULT_ROLLOUT_KEY: Final = "batchpage:rollout:homepage"


class SettingsError(ValueError):
    """A setting has a value the service cannot use; the message names it."""


def _positive(name: str) -> Callable[[object, attrs.Attribute[float], float], None]:
    def check(_: object, __: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise SettingsError(f"{name} must be a positive number of seconds, got {value!r}")
        if math.isinf(value):
            raise SettingsError(f"{name} must be finite, got {value!r}")

    return check


def _check_percent(_: object, __: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise SettingsError(f"rollout_percent must be between 0 and 100, got {value!r}")


def _check_products(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"products must be a positive integer, got {value!r}")


def _check_max_age(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"session_max_age must be a positive number of seconds, got {value!r}")


def _check_otel(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value not in ("", "console"):
        raise SettingsError(f"otel must be empty (off) or 'console', got {value!r}")


def _non_negative(name: str) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_: object, __: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SettingsError(f"{name} must be a whole number of seconds >= 0, got {value!r}")

    return check


def _check_now(_: object, __: attrs.Attribute[datetime | None], value: datetime | None) -> None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise SettingsError(f"now must be a timezone-aware datetime, got {value!r}")


@attrs.frozen(kw_only=True)
class Settings:
    """What the service connects to and how; validated at construction."""

    mongodb_url: str | None = None  #: ``None``: start an embedded nx-27017
    redis_url: str | None = None  #: ``None``: memory cache, rollout from ``rollout_percent``
    db_name: str = "homepage"
    seed: bool | None = None  #: ``None``: seed the embedded server only
    products: int = attrs.field(default=5000, validator=_check_products)
    page_timeout: float = attrs.field(default=0.8, validator=_positive("page_timeout"))
    section_timeout: float = attrs.field(default=0.5, validator=_positive("section_timeout"))
    rollout_percent: float = attrs.field(default=100.0, validator=_check_percent)
    rollout_salt: str = "homepage-batch"
    rollout_key: str = DEFAULT_ROLLOUT_KEY
    rollout_poll: float = attrs.field(default=2.0, validator=_positive("rollout_poll"))
    redis_budget: float = attrs.field(default=0.1, validator=_positive("redis_budget"))
    faults: str = ""  #: see :mod:`examples.service.faults`; empty = none
    #: ``/demo/faults``, the demo page's run-time fault switch (:mod:`examples.service.demo`)
    demo_faults: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    now: datetime | None = attrs.field(default=None, validator=_check_now)
    #: Signs the session cookie; ``None``: a random key per process (sign-ins
    #: then last until a restart and hold on one worker only).
    session_secret: str | None = None
    session_max_age: int = attrs.field(default=14 * 24 * 3600, validator=_check_max_age)
    session_secure: bool = False  #: send the cookie over HTTPS only
    otel: str = attrs.field(default="", validator=_check_otel)  #: "" (off) or "console"
    #: ``max-age`` of public answers (a healthy anonymous page, the legacy endpoints)
    cdn_max_age: int = attrs.field(default=60, validator=_non_negative("cdn_max_age"))
    #: their ``stale-while-revalidate``: how long a CDN may serve them stale while it refreshes
    cdn_stale_while_revalidate: int = attrs.field(
        default=120, validator=_non_negative("cdn_stale_while_revalidate")
    )

    @property
    def embedded(self) -> bool:
        return self.mongodb_url is None

    @property
    def seeds(self) -> bool:
        """Whether start-up seeds the database."""
        return self.embedded if self.seed is None else self.seed

    @property
    def public_cache_control(self) -> str:
        """The ``Cache-Control`` of what every visitor may share (a CDN stores it)."""
        return (
            f"public, max-age={self.cdn_max_age}, "
            f"stale-while-revalidate={self.cdn_stale_while_revalidate}"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from environment variables (see the module docstring)."""

        def text(name: str) -> str | None:
            value = environ.get(name, "").strip()
            return value or None

        def number(name: str, default: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from None

        def integer(name: str, default: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from None

        seed_raw = (text("BATCHPAGE_SEED") or "auto").lower()
        if seed_raw not in {"auto", "1", "0", "true", "false", "yes", "no"}:
            raise SettingsError(f"BATCHPAGE_SEED must be auto, 1 or 0, got {seed_raw!r}")
        seed = None if seed_raw == "auto" else seed_raw in {"1", "true", "yes"}
        demo_raw = (text("BATCHPAGE_DEMO_FAULTS") or "0").lower()
        if demo_raw not in {"1", "0", "true", "false", "yes", "no"}:
            raise SettingsError(f"BATCHPAGE_DEMO_FAULTS must be 1 or 0, got {demo_raw!r}")
        return cls(
            mongodb_url=text("MONGODB_URL"),
            redis_url=text("REDIS_URL"),
            db_name=text("BATCHPAGE_DB") or "homepage",
            seed=seed,
            products=integer("BATCHPAGE_PRODUCTS", 5000),
            page_timeout=number("BATCHPAGE_PAGE_TIMEOUT", 0.8),
            section_timeout=number("BATCHPAGE_SECTION_TIMEOUT", 0.5),
            rollout_percent=number("ROLLOUT_PERCENT", 100.0),
            rollout_key=text("BATCHPAGE_ROLLOUT_KEY") or DEFAULT_ROLLOUT_KEY,
            rollout_poll=number("BATCHPAGE_ROLLOUT_POLL", 2.0),
            redis_budget=number("BATCHPAGE_REDIS_BUDGET", 0.1),
            faults=text("BATCHPAGE_EXAMPLE_FAULTS") or "",
            demo_faults=demo_raw in {"1", "true", "yes"},
            now=parse_now(text("BATCHPAGE_EXAMPLE_NOW")),
            session_secret=text("BATCHPAGE_SESSION_SECRET"),
            session_max_age=integer("BATCHPAGE_SESSION_MAX_AGE", 14 * 24 * 3600),
            session_secure=(text("BATCHPAGE_SESSION_SECURE") or "0") in {"1", "true", "yes"},
            otel=text("BATCHPAGE_OTEL") or "",
            cdn_max_age=integer("BATCHPAGE_CDN_MAX_AGE", 60),
            cdn_stale_while_revalidate=integer("BATCHPAGE_CDN_SWR", 120),
        )


def parse_now(raw: str | None) -> datetime | None:
    """An ISO-8601 instant (``Z`` or an offset; naive means UTC), or ``None``."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"BATCHPAGE_EXAMPLE_NOW must be ISO-8601, got {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: the configured one, else a random one.

    A random key lasts as long as the process: sign-ins are lost on restart
    and valid on one worker only, so a warning says to set one.
    """
    if settings.session_secret:
        return settings.session_secret
    logger.warning(
        "BATCHPAGE_SESSION_SECRET is not set: session cookies are signed with a random key "
        "of this process (sign-ins end on restart and hold on this worker only)"
    )
    return secrets.token_urlsafe(32)
