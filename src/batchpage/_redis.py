"""The shared cache layer (L2): Redis through ``redis.asyncio``, failing open.

Every instance of the application reads and writes the same Redis, so an
entry fetched by one is a hit for all, and a Redis lock elects one instance
to fill a missing key. Redis is an optimisation, never a dependency: when it
is down, slow or answers nonsense, every method returns at once as if the
cache were empty, the failure is logged and counted, and Redis is left alone
for ``backoff`` seconds so a storm of requests does not become a storm of
connection attempts.

``redis`` itself is imported lazily: importing batchpage must not need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import anyio.abc
import attrs

from ._entry import Entry, Freshness
from ._units import Seconds, positive_seconds

if TYPE_CHECKING:
    import redis.asyncio

logger = logging.getLogger("batchpage.redis")

T = TypeVar("T")

#: The token ``try_lock`` grants while Redis is unavailable: the caller
#: fetches without a cross-instance lock, and ``unlock`` ignores it.
LOCAL_TOKEN = "local"
DEFAULT_CHANNEL = "batchpage:invalidate"

# Compare-and-delete: only the holder of the token releases the lock, so a
# holder whose lock expired cannot release the next holder's.
_UNLOCK_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# A crashed holder must not block a key for ever, whatever the section's timeout.
_MAX_LOCK_SECONDS = 3600.0
# Redis rejects expiries that overflow; longer-lived entries are kept without one.
_MAX_PX = 10 * 365 * 24 * 3600 * 1000
# SCAN ends by itself (its full-iteration guarantee); this only bounds the loop
# if the keyspace grows faster than it is scanned.
_MAX_SCAN_ROUNDS = 100_000
# The pub/sub listener retries a lost subscription after backoff, 2 x backoff, ...
_MAX_RESUBSCRIBE_DELAY = 30.0

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob (``SCAN MATCH``, ``KEYS``)."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class _Skipped(enum.Enum):
    SKIPPED = "skipped"


_SKIPPED = _Skipped.SKIPPED


@attrs.define
class RedisCacheStats:
    """Counters of a :class:`RedisCache`: what it read, wrote, and could not."""

    hits: int = 0  #: entries found (fresh or not)
    misses: int = 0  #: keys absent, or not a string
    writes: int = 0
    corrupt: int = 0  #: values that were not a batchpage entry: served as misses
    errors: int = 0  #: failed calls (connection, timeout, wrong reply, ...)
    outages: int = 0  #: times Redis was marked down
    skipped: int = 0  #: calls answered locally because Redis was backing off
    resubscribes: int = 0  #: invalidation subscriptions restored after a failure


class RedisCache:
    """Entries in Redis, shared by every instance: one ``MGET`` per page.

    ``client`` is a ``redis.asyncio.Redis`` that does not decode responses;
    :meth:`from_url` builds one with short timeouts and no retries, which is
    what a cache in a request path wants. redis-py's asyncio client runs on
    asyncio only, so a ``RedisCache`` needs asyncio (not trio).

    ``clock`` (seconds) judges entries and must be the clock of the other
    layers and of the aggregator; Redis's own expiry (set to an entry's
    remaining usefulness) only collects garbage. ``backoff`` (seconds) is how
    long Redis is skipped after a failure, timed on ``monotonic``.
    ``channel`` carries invalidations to other instances' memory layers.
    ``poll_interval`` (seconds) paces :meth:`wait_for`. With ``owns_client``
    the client is closed when the cache exits.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        clock: Callable[[], float] = time.time,
        channel: str = DEFAULT_CHANNEL,
        backoff: Seconds = 1.0,
        poll_interval: Seconds = 0.02,
        scan_count: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
        owns_client: bool = False,
    ) -> None:
        import redis.asyncio

        if not isinstance(client, redis.asyncio.Redis):
            raise TypeError(f"client must be a redis.asyncio.Redis, not {client!r}")
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("client must not decode responses (decode_responses=False)")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {clock!r}")
        if not callable(monotonic):
            raise TypeError(f"monotonic must be callable, not {monotonic!r}")
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty str, got {channel!r}")
        if isinstance(scan_count, bool) or not isinstance(scan_count, int) or scan_count < 1:
            raise ValueError(f"scan_count must be a positive int, got {scan_count!r}")
        self.client = client
        self.clock = clock
        self.channel = channel
        self.backoff = positive_seconds(backoff, name="backoff")
        self.poll_interval = positive_seconds(poll_interval, name="poll_interval")
        self.scan_count = scan_count
        self.owns_client = owns_client
        self.stats = RedisCacheStats()
        self._monotonic = monotonic
        self._down_until: float | None = None
        self._probing = False
        self._unlock_script = client.register_script(_UNLOCK_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: Seconds = 0.25,
        socket_connect_timeout: Seconds = 0.25,
        max_connections: int | None = None,
        clock: Callable[[], float] = time.time,
        channel: str = DEFAULT_CHANNEL,
        backoff: Seconds = 1.0,
        poll_interval: Seconds = 0.02,
        scan_count: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> RedisCache:
        """A cache on a new client for ``url``, closed when the cache exits.

        The timeouts (seconds) are short and a timed-out command is not
        retried: a slow Redis must cost a page at most one short wait, after
        which the back-off keeps it out of the request path. A broken
        connection is retried once, at once, on a new one: after a Redis
        restart every pooled connection is dead, and each would otherwise
        cost a failure and a back-off.
        """
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=positive_seconds(socket_timeout, name="socket_timeout"),
            socket_connect_timeout=positive_seconds(
                socket_connect_timeout, name="socket_connect_timeout"
            ),
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            decode_responses=False,
        )
        return cls(
            client,
            clock=clock,
            channel=channel,
            backoff=backoff,
            poll_interval=poll_interval,
            scan_count=scan_count,
            monotonic=monotonic,
            owns_client=True,
        )

    async def __aenter__(self) -> Self:
        # On another loop every call would fail, and failing open would hide it.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "RedisCache needs asyncio (redis-py's asyncio client), not another event loop"
            ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.owns_client:
            # The pool reconnects lazily, so the cache may be entered again.
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    # -- availability -------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while Redis is being skipped after a failure."""
        return self._down_until is None or self._monotonic() >= self._down_until

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T | _Skipped:
        """``await fn()``, or ``_SKIPPED`` if Redis is backing off or the call failed.

        After the back-off one call (the probe) tries Redis while the others
        keep skipping, so an outage costs one failed call per back-off, not
        one per concurrent request.
        """
        probe = False
        if self._down_until is not None:
            if self._probing or self._monotonic() < self._down_until:
                self.stats.skipped += 1
                return _SKIPPED
            self._probing = probe = True
        try:
            result = await fn()
        except Exception as exc:  # fail open; cancellation is not an Exception
            self._failed(op, exc, probe=probe)
            return _SKIPPED
        finally:
            if probe:
                self._probing = False
        if self._down_until is not None:
            self._down_until = None
            logger.warning("redis is reachable again")
        return result

    def _failed(self, op: str, exc: Exception, *, probe: bool) -> None:
        self.stats.errors += 1
        was_up = self._down_until is None
        self._down_until = self._monotonic() + self.backoff
        if was_up:
            self.stats.outages += 1
            logger.warning(
                "redis %s failed (%s: %s); skipping redis for %.3g s",
                op,
                type(exc).__name__,
                exc,
                self.backoff,
            )
        elif probe:
            logger.warning(
                "redis still unavailable (%s: %s); next try in %.3g s",
                type(exc).__name__,
                exc,
                self.backoff,
            )

    # -- reading ------------------------------------------------------------

    async def _mget(self, keys: Sequence[str]) -> list[Any]:
        values: object = await self.client.mget(keys)
        if not isinstance(values, list) or len(values) != len(keys):
            raise TypeError(f"MGET answered {type(values).__name__}, not {len(keys)} values")
        return values

    def _parse(self, key: str, raw: object) -> Entry | None:
        """The entry in ``raw``, or ``None`` (counted, logged) if it is not one."""
        if isinstance(raw, bytes):
            try:
                return Entry.loads(raw)
            except Exception as exc:  # untrusted bytes: any parse failure is a miss
                reason = str(exc)
            size = len(raw)
        else:
            reason, size = f"a {type(raw).__name__} reply", 0
        self.stats.corrupt += 1
        # Never the bytes themselves: they may be large, binary or private.
        logger.warning(
            "redis entry %r is not a cache entry (%d bytes: %s); treated as a miss",
            key,
            size,
            reason,
        )
        return None

    async def get_many(self, keys: Sequence[str], /) -> list[Entry | None]:
        """Every key's entry in one ``MGET``; ``None`` for a miss."""
        if not keys:
            return []
        values = await self._call("get", lambda: self._mget(keys))
        if values is _SKIPPED:
            return [None] * len(keys)
        entries: list[Entry | None] = []
        stats = self.stats
        for key, raw in zip(keys, values, strict=True):
            if raw is None:
                stats.misses += 1
                entries.append(None)
                continue
            entry = self._parse(key, raw)
            if entry is None:
                stats.misses += 1
            else:
                stats.hits += 1
            entries.append(entry)
        return entries

    # -- writing ------------------------------------------------------------

    async def set(self, key: str, entry: Entry, /) -> None:
        """Store ``entry`` until it is of no use to anyone (``SET PX``)."""
        ttl = entry.useless_after - self.clock()
        if not ttl > 0:
            return
        data = entry.dumps()
        px = _milliseconds(ttl)
        if px > _MAX_PX:
            done = await self._call("set", lambda: self.client.set(key, data))
        else:
            done = await self._call("set", lambda: self.client.set(key, data, px=px))
        if done is not _SKIPPED:
            self.stats.writes += 1

    async def invalidate(self, prefix: str, /) -> bool:
        """Delete every key starting with ``prefix``, then tell the other instances.

        The deletion comes first, so an instance that drops its memory entry
        on the message cannot refill it from Redis with the old value.
        Returns False when Redis could not be reached, or not wholly: the
        old value may then come back, and the caller should retry.
        """
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty str")
        pattern = glob_escape(prefix) + "*"
        complete = await self._call("invalidate", lambda: self._delete_matching(pattern))
        if complete is _SKIPPED:
            return False
        published = await self._call("publish", lambda: self.client.publish(self.channel, prefix))
        return complete is True and published is not _SKIPPED

    async def _delete_matching(self, pattern: str) -> bool:
        cursor: int = 0
        for _ in range(_MAX_SCAN_ROUNDS):
            cursor, keys = await self.client.scan(
                cursor=cursor, match=pattern, count=self.scan_count
            )
            if keys:
                await self.client.unlink(*keys)
            if cursor == 0:
                return True
        logger.warning(
            "redis invalidate of %r stopped after %d SCAN rounds", pattern, _MAX_SCAN_ROUNDS
        )
        return False

    # -- locks --------------------------------------------------------------

    @staticmethod
    def lock_key(key: str) -> str:
        """The lock of ``key``: same ``{...}`` hash tag, so same Redis Cluster slot."""
        return key + ":lock"

    async def try_lock(self, key: str, ttl: float, /) -> str | None:
        """A token if this caller may fill ``key`` now (``SET NX PX``), else ``None``.

        While Redis is unavailable every caller gets :data:`LOCAL_TOKEN`:
        better one fetch per instance than none.
        """
        token = secrets.token_hex(16)
        px = _milliseconds(min(ttl, _MAX_LOCK_SECONDS) if ttl > 0 else 0.0)
        got = await self._call(
            "lock", lambda: self.client.set(self.lock_key(key), token, nx=True, px=px)
        )
        if got is _SKIPPED:
            return LOCAL_TOKEN
        return token if got else None

    async def unlock(self, key: str, token: str, /) -> None:
        """Release ``key``'s lock if ``token`` still holds it (compare-and-delete)."""
        if token == LOCAL_TOKEN:
            return
        await self._call(
            "unlock", lambda: self._unlock_script(keys=[self.lock_key(key)], args=[token])
        )

    async def wait_for(self, key: str, wait: float, /) -> Entry | None:
        """Poll until another instance writes ``key``, drops its lock, or ``wait`` ends.

        Only an entry that is not expired counts: what was there before the
        other instance started fetching was expired (or absent).
        """
        deadline = anyio.current_time() + min(max(wait, 0.0), _MAX_LOCK_SECONDS)
        lock_key = self.lock_key(key)
        last: object = None
        while True:  # bounded by the deadline
            reply = await self._call("wait", lambda: self._mget([key, lock_key]))
            if reply is _SKIPPED:
                return None
            raw, lock = reply
            if raw is not None and raw != last:
                last = raw
                entry = self._parse(key, raw)
                if entry is not None and entry.freshness(self.clock()) is not Freshness.EXPIRED:
                    return entry
            if lock is None:
                return None  # the holder gave up without writing
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return None
            await anyio.sleep(min(self.poll_interval, remaining))

    # -- invalidations from other instances ---------------------------------

    async def listen_invalidations(
        self,
        on_prefix: Callable[[str], object],
        *,
        on_resubscribe: Callable[[], object] | None = None,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_prefix(prefix)`` for each invalidation published, until cancelled.

        A lost subscription is retried after ``backoff``, doubling up to 30 s;
        ``on_resubscribe()`` runs once it is back, because messages sent
        meanwhile are lost. Reports started after the first attempt, whether
        or not Redis answered: a down Redis must not block start-up.
        """
        # A client of its own that never retries: with retries, redis-py would
        # reconnect and resubscribe silently, and the messages lost meanwhile
        # would go unnoticed.
        listener = _without_retries(self.client)
        try:
            await self._listen(listener, on_prefix, on_resubscribe, task_status)
        finally:
            with anyio.CancelScope(shield=True, deadline=anyio.current_time() + 1.0):
                with contextlib.suppress(Exception):
                    await listener.aclose()

    async def _listen(
        self,
        listener: Any,
        on_prefix: Callable[[str], object],
        on_resubscribe: Callable[[], object] | None,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        started = False
        failures = 0
        while True:  # a service loop: it ends when its task is cancelled
            pubsub = listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if failures:
                    failures = 0
                    self.stats.resubscribes += 1
                    logger.warning("redis invalidation channel %r subscribed again", self.channel)
                    if on_resubscribe is not None:
                        on_resubscribe()
                if not started:
                    started = True
                    task_status.started()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message.get("data"), on_prefix)
            except Exception as exc:
                failures += 1
                if failures == 1:
                    logger.warning(
                        "redis invalidation channel %r lost (%s: %s); resubscribing",
                        self.channel,
                        type(exc).__name__,
                        exc,
                    )
            finally:
                with anyio.CancelScope(shield=True, deadline=anyio.current_time() + 1.0):
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(min(self.backoff * 2 ** (failures - 1), _MAX_RESUBSCRIBE_DELAY))

    def _deliver(self, data: object, on_prefix: Callable[[str], object]) -> None:
        if not isinstance(data, bytes):
            logger.warning("ignored a %s on the invalidation channel", type(data).__name__)
            return
        try:
            prefix = data.decode()
        except UnicodeDecodeError:
            logger.warning("ignored an undecodable invalidation (%d bytes)", len(data))
            return
        try:
            on_prefix(prefix)
        except Exception:
            logger.exception("invalidation handler failed for %r", prefix)

    def __repr__(self) -> str:
        state = "up" if self._down_until is None else "backing off"
        return f"RedisCache(channel={self.channel!r}, {state})"


def _milliseconds(seconds: float) -> int:
    """A Redis expiry: whole milliseconds, at least 1, capped for infinite input."""
    if not seconds < _MAX_PX / 1000:  # also catches inf and NaN
        return _MAX_PX + 1
    return max(1, math.ceil(seconds * 1000))


def _without_retries(client: Any) -> Any:
    """A client on a new pool with ``client``'s connection settings and no retries."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs.pop("retry_on_error", None)
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool(
            connection_class=pool.connection_class, **kwargs
        )
    )
