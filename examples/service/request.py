"""The homepage's request rules: its parameters, who a user may be, the rollout answer.

These are the application's, not the library's: ``batchpage.contrib.http``
does HTTP mechanics and takes the parameters an application declares.

* ``limit``: 1 to 50, default 10 (:data:`HOMEPAGE_PARAMS`), for the batch
  page and the legacy endpoints alike;
* a user id, given at sign-in (``POST /session``), is 1 to 128 of
  letters, digits, ``_ . @ -``: readable in logs and keys (the cache
  escapes them anyway). It comes from the signed session cookie, never from
  the query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from batchpage import InvalidParameter, Rollout
from batchpage.contrib.http import Param, Reply, error_reply, integer, json_reply, parse_query
from examples.homepage.queries import MAX_LIMIT
from examples.homepage.sources import DEFAULT_LIMIT

#: The batch page's and the legacy endpoints' ``limit``.
LIMIT: Final = Param("limit", integer(1, MAX_LIMIT), default=DEFAULT_LIMIT)
HOMEPAGE_PARAMS: Final = (LIMIT,)

MAX_USER_ID_LENGTH: Final = 128
_USER_ID = re.compile(r"[A-Za-z0-9_.@-]+")
#: The session's key holding the signed-in user's id (both apps).
SESSION_KEY: Final = "userId"


def check_user_id(value: object) -> str:
    """A user id to sign in as; :class:`~batchpage.InvalidParameter` (field ``userId``) if bad."""
    if not isinstance(value, str) or not value:
        raise InvalidParameter("userId", "userId must be a non-empty string")
    if len(value) > MAX_USER_ID_LENGTH:
        raise InvalidParameter("userId", f"userId must be at most {MAX_USER_ID_LENGTH} characters")
    if _USER_ID.fullmatch(value) is None:
        raise InvalidParameter(
            "userId", "userId may hold only letters, digits, '_', '.', '@' and '-'"
        )
    return value


def session_user(session: Mapping[str, Any]) -> str | None:
    """The signed-in user of a (verified) session, or ``None``: anonymous.

    The session cookie is signed, so its content is ours; it is checked
    again anyway, so that a stale or odd value is anonymous, not an error.
    """
    value = session.get(SESSION_KEY)
    try:
        return None if value is None else check_user_id(value)
    except InvalidParameter:
        return None


def sign_in_request(body: bytes) -> str:
    """The user id of a ``POST /session`` body, ``{"userId": "..."}``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidParameter("body", 'the body must be JSON: {"userId": "..."}') from None
    if not isinstance(data, dict) or set(data) != {"userId"}:
        raise InvalidParameter("body", 'the body must be {"userId": "..."}')
    return check_user_id(data["userId"])


def session_reply(user_id: str | None) -> Reply:
    """The answer of ``/session``: who is signed in now."""
    return json_reply(200, {"userId": user_id}, cache_control="private, no-store")


def rollout_reply(rollout: Rollout, user_id: str | None, query: str | bytes = b"") -> Reply:
    """``GET /rollout``: which path the signed-in user should take, and why.

    The body is ``{"userId", "useBatch", "percentage", "enabled"}`` and the
    ``X-Batch-Rollout`` header says ``batch`` or ``legacy``. The query takes
    no parameter, but is judged like every other (a malformed one is a 400).
    """
    try:
        parse_query(query)
    except InvalidParameter as error:
        return error_reply(error)
    use_batch = rollout.use_batch(user_id)
    reply = json_reply(
        200,
        {
            "userId": user_id,
            "useBatch": use_batch,
            "percentage": rollout.percentage,
            "enabled": rollout.enabled,
        },
        cache_control="private, no-store",
    )
    return attrs.evolve(
        reply,
        headers=(
            *reply.headers,
            ("Vary", "Cookie"),
            ("X-Batch-Rollout", "batch" if use_batch else "legacy"),
        ),
    )
