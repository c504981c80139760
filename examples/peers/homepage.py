"""The peer homepage: ``asyncio.gather`` over the six queries, cashews caching each.

Configured by the examples' environment: ``MONGODB_URL`` (required: the
peer never starts or seeds a database), ``BATCHPAGE_DB``,
``BATCHPAGE_EXAMPLE_NOW`` (flash sales), ``BATCHPAGE_SECTION_TIMEOUT``;
``BATCHPAGE_BENCH_FRESH`` (seconds; ``0`` caches nothing) overrides every
section's time to live, as it overrides the example's freshness, for the
cold figures.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

from cashews import Cache

from examples.homepage.mongo import Client, Database, connect
from examples.homepage.sources import POLICIES, SECTION_NAMES, legacy_queries
from examples.service.settings import parse_now

BENCH_FRESH_ENV: Final = "BATCHPAGE_BENCH_FRESH"

cache = Cache()
cache.setup("mem://?size=10000")


def _now() -> datetime:
    """The examples' pinned "now" (``BATCHPAGE_EXAMPLE_NOW``), else the real clock."""
    return _PINNED or datetime.now(UTC)


_PINNED = parse_now(os.environ.get("BATCHPAGE_EXAMPLE_NOW"))
_QUERIES = legacy_queries(now=_now)
_TIMEOUT = float(os.environ.get("BATCHPAGE_SECTION_TIMEOUT", "0.5"))


def _cached(name: str) -> Callable[[Database, int, str | None], Awaitable[Any]]:
    query = _QUERIES[name]
    fresh = os.environ.get(BENCH_FRESH_ENV)
    ttl = float(fresh) if fresh is not None else POLICIES[name].fresh
    if not ttl:
        return query
    # The key names the section, the limit and (the personal section only) the user.
    key = f"{name}:{{limit}}:{{user_id}}" if name == "featuredProducts" else f"{name}:{{limit}}"

    @cache(ttl=ttl, key=key)
    async def cached(db: Database, limit: int, user_id: str | None) -> Any:
        return await query(db, limit, user_id)

    return cached


_SECTIONS = {name: _cached(name) for name in SECTION_NAMES}


class PeerHomepage:
    """One MongoDB client per process, made on first use (inside the server's event loop)."""

    def __init__(self) -> None:
        self._client: Client | None = None

    @property
    def db(self) -> Database:
        if self._client is None:
            url = os.environ.get("MONGODB_URL")
            if not url:
                raise RuntimeError("the peer homepage needs MONGODB_URL")
            self._client = connect(url)
        return self._client[os.environ.get("BATCHPAGE_DB", "homepage")]

    async def page(self, limit: int, user_id: str | None) -> dict[str, Any]:
        """The page: every section's value or ``None``, and an error per failed section."""
        db = self.db
        results = await asyncio.gather(
            *(
                asyncio.wait_for(_SECTIONS[name](db, limit, user_id), _TIMEOUT)
                for name in SECTION_NAMES
            ),
            return_exceptions=True,
        )
        sections: dict[str, Any] = {}
        errors = []
        for name, result in zip(SECTION_NAMES, results, strict=True):
            if isinstance(result, BaseException):
                sections[name] = None
                errors.append({"section": name, "message": type(result).__name__})
            else:
                sections[name] = result
        return {
            "sections": sections,
            "errors": errors,
            "metadata": {
                "partialFailure": bool(errors),
                "generatedAt": datetime.now(UTC).isoformat(),
            },
        }


def parse_limit(raw: str | None) -> int | None:
    """``limit`` from the query: 1 to 50, 10 when absent, ``None`` when invalid."""
    if raw is None:
        return 10
    if not raw.isdigit() or not 1 <= int(raw) <= 50:
        return None
    return int(raw)
