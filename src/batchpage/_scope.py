"""Whose data a section is, and so which part of the cache key names it."""

from __future__ import annotations

import enum
from collections.abc import Callable

from ._context import RequestContext


class Scope(enum.Enum):
    """Built-in scopes; a callable ``(ctx) -> str`` is a custom scope (segment, locale)."""

    #: Same value for everyone: one cache entry per page variant.
    GLOBAL = "global"
    #: Personal: one entry per user; anonymous requests share the ``anon`` entry.
    USER = "user"


ScopeKey = Callable[[RequestContext], str]
