"""What the cache models share: the policy, the users and sections, a counting source.

Used by ``tests/core/test_cache_model.py`` (memory) and
``tests/redis/test_layered_cache_model.py`` (memory over Redis).
"""

from __future__ import annotations

import attrs

from batchpage import CachePolicy, RequestContext, Scope

FRESH, STALE, IF_ERROR = 10.0, 5.0, 20.0
POLICY = CachePolicy(fresh=FRESH, stale=STALE, stale_if_error=IF_ERROR, jitter=0)
USERS = [None, "alice", "bob"]
SECTIONS = {"g": Scope.GLOBAL, "p": Scope.USER}


class Source:
    """Answers ``{"n": k}`` on its k-th successful call, or fails when told to."""

    def __init__(self) -> None:
        self.successes = 0
        self.failing = False

    async def __call__(self, ctx: RequestContext) -> dict[str, int]:
        if self.failing:
            raise ConnectionError("down")
        self.successes += 1
        return {"n": self.successes}


@attrs.define
class ModelEntry:
    n: int
    written_at: float
