"""The six legacy endpoints: one query each, as the homepage worked before the batch.

They stay for the rollout (users not yet on the batch page call them) and
for comparison. Each answers ``{"data": [...]}`` with the same query and the
same validation (``limit``) and the same signed-in user as the batch page,
so both apps' legacy endpoints answer alike.

``/offers`` serves two of them, chosen by ``featured=true`` or
``flashSale=true`` (exactly one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio

from batchpage import InvalidParameter
from batchpage.contrib.http import Reply, error_reply, json_reply, parse_query
from examples.homepage.mongo import Database
from examples.homepage.sources import LegacyQuery

from .request import LIMIT

logger = logging.getLogger("examples.service")

#: The path of each legacy section (``/offers`` serves two).
PATHS: Mapping[str, str] = {
    "featuredProducts": "/products/featured",
    "newArrivals": "/products/new-arrivals",
    "featuredStores": "/stores/featured",
    "featuredEvents": "/events/featured",
}

#: What every visitor may share (``Settings.public_cache_control`` gives the service's own).
PUBLIC = "public, max-age=60, stale-while-revalidate=120"
_OFFERS = "give exactly one of featured=true or flashSale=true"


def offers_section(params: Mapping[str, str]) -> str:
    """Which section ``/offers`` serves: ``featuredOffers`` or ``flashSales``."""
    featured = params.get("featured")
    flash = params.get("flashSale")
    if featured is not None and featured != "true":
        raise InvalidParameter("featured", _OFFERS)
    if flash is not None and flash != "true":
        raise InvalidParameter("flashSale", _OFFERS)
    if (featured is None) == (flash is None):
        raise InvalidParameter("featured", _OFFERS)
    return "featuredOffers" if featured else "flashSales"


async def legacy_reply(
    db: Database,
    queries: Mapping[str, LegacyQuery],
    name: str | None,
    query: str | bytes,
    *,
    user_id: str | None,
    time_limit: float,
    public: str = PUBLIC,
) -> Reply:
    """Answer one legacy call for ``user_id``; ``name=None`` is ``/offers``, chosen by its query.

    ``public`` is the ``Cache-Control`` of an answer every visitor shares; a
    signed-in user's ``featuredProducts`` is theirs: ``private, no-store``.
    """
    try:
        params = parse_query(query)
        if name is None:
            name = offers_section(params)
        limit = LIMIT.value(params)
    except InvalidParameter as error:
        return error_reply(error)
    try:
        with anyio.fail_after(time_limit):
            data = await queries[name](db, limit, user_id)
    except TimeoutError:
        logger.warning("legacy %s: timed out after %s s", name, time_limit)
        return _unavailable(name, "TIMEOUT_ERROR", f"timed out after {time_limit * 1000:.0f} ms")
    except Exception:
        logger.exception("legacy %s: the query failed", name)
        return _unavailable(name, "SOURCE_ERROR", "the source failed")
    personal = name == "featuredProducts" and user_id is not None
    reply = json_reply(
        200, {"data": data}, cache_control="private, no-store" if personal else public
    )
    return Reply(reply.status, (*reply.headers, ("Vary", "Cookie")), reply.body)


def _unavailable(name: str, code: str, message: str) -> Reply:
    reply = json_reply(503, {"error": {"section": name, "code": code, "message": message}})
    return Reply(reply.status, (*reply.headers, ("Retry-After", "5")), reply.body)
