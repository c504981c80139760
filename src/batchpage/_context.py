"""The request context every source receives."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import anyio
import attrs


def _freeze(params: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(params)


@attrs.frozen
class RequestContext:
    """What a source may know about the request it serves.

    ``params`` are the request's parameters that change what a source returns
    (``limit``, a locale, ...): they are part of every cache key, so keep them
    to what matters. ``deadline`` is the page's deadline on anyio's clock
    (``anyio.current_time()``), set by the executor; a source that calls a
    slow backend can pass :meth:`remaining` on as its own timeout.
    """

    user_id: str | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze)
    deadline: float = math.inf

    @property
    def is_anonymous(self) -> bool:
        return self.user_id is None

    def remaining(self) -> float:
        """Seconds left until the page deadline (``inf`` when there is none)."""
        return max(0.0, self.deadline - anyio.current_time())
