"""Keeps a :class:`batchpage.Rollout` in step with a Redis key, so a rollback takes seconds.

Every instance polls the key every couple of seconds (``GET``: one cheap
command per instance per interval, whatever the traffic). The key holds

* a number from 0 to 100: the percentage, with the kill switch released;
* ``off``: the kill switch, everyone back on the legacy endpoints;
* nothing (the key is absent): the start-up percentage stands.

So ``redis-cli SET batchpage:rollout:homepage 0`` (or ``off``) is the seed's
"instant rollback", everywhere within one poll interval. A value that is not
one of these, or Redis being down, is logged and the last good setting kept.
"""

from __future__ import annotations

import logging
import math

import anyio
import redis.asyncio
import redis.asyncio.cluster
import redis.exceptions

from batchpage import Rollout

logger = logging.getLogger("examples.service")

KILL = "off"


def apply_setting(rollout: Rollout, raw: str) -> None:
    """Apply the key's text to ``rollout``; ``ValueError`` when it is neither a number nor off."""
    text = raw.strip().lower()
    if text == KILL:
        rollout.kill()
        return
    try:
        percentage = float(text)
    except ValueError:
        raise ValueError(f"the rollout key must hold 0..100 or {KILL!r}, got {raw!r}") from None
    if math.isnan(percentage) or not 0 <= percentage <= 100:
        raise ValueError(f"the rollout key must hold 0..100 or {KILL!r}, got {raw!r}")
    rollout.set_percentage(percentage)
    rollout.revive()


class RolloutFeed:
    """Polls ``key`` on ``client`` every ``interval`` seconds and applies it to ``rollout``."""

    def __init__(
        self,
        rollout: Rollout,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        key: str,
        interval: float,
    ) -> None:
        self.rollout = rollout
        self.client = client
        self.key = key
        self.interval = interval
        self._last: bytes | None = None
        self._failing = False

    async def poll_once(self) -> None:
        """Read the key once and apply it; never raises for Redis or a bad value."""
        try:
            raw = await self.client.get(self.key)
        except (redis.exceptions.RedisError, OSError) as exc:
            if not self._failing:
                logger.warning(
                    "rollout: cannot read %s from Redis (%s); keeping %r",
                    self.key,
                    exc,
                    self.rollout,
                )
            self._failing = True
            return
        self._failing = False
        if isinstance(raw, str):
            raw = raw.encode()
        if raw is None or raw == self._last:
            return
        self._last = raw
        try:
            apply_setting(self.rollout, raw.decode("utf-8", "replace"))
        except ValueError as exc:
            logger.warning("rollout: %s; keeping %r", exc, self.rollout)
            return
        logger.info("rollout: now %r (from Redis key %s)", self.rollout, self.key)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await anyio.sleep(self.interval)
            await self.poll_once()
