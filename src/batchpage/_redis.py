"""The shared cache layer (L2): Redis through ``redis.asyncio``, failing open.

Every instance of the application reads and writes the same Redis, so an
entry fetched by one is a hit for all, and a Redis lock elects one instance
to fill a missing key. Redis is an optimisation, never a dependency: when it
is down, slow or answers nonsense, every method returns as if the cache were
empty, the failure is logged and counted, and Redis is left alone for
``backoff`` seconds so a storm of requests does not become a storm of
connection attempts.

A slow Redis is a down Redis: every command has a budget
(``command_timeout``), and a command that misses it counts as a failure.
The command itself runs in a task of the cache's own, so giving up on it
does not cancel it half-way through a reply, which would cost its pooled
connection; it finishes (or is cut at a hard limit) on its own.

On Redis Cluster the cache runs on redis-py's own cluster client
(``redis.asyncio.cluster.RedisCluster``): a page's keys are read with one
``MGET`` per slot they touch (a pipeline per node, the nodes in parallel),
an invalidation scans every master, and the invalidation channel is heard
through one node at a time (``PUBLISH`` reaches every node of a cluster).
:meth:`RedisCache.from_url` finds out by itself whether it was pointed at a
cluster node.

``redis`` itself is imported lazily: importing batchpage must not need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import anyio.abc
import attrs

from ._entry import Entry, Freshness
from ._extras import require
from ._keys import KeyPattern
from ._units import Seconds, positive_seconds

if TYPE_CHECKING:
    import redis.asyncio
    import redis.asyncio.cluster

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

# Writes only if the fill's lock is still held by its token: an invalidation
# deletes the lock with the entries, so a fill it overtook stores nothing.
_SET_IF_LOCKED_SCRIPT = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then
    return 0
end
if ARGV[3] == '' then
    redis.call('set', KEYS[1], ARGV[2])
else
    redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# Detached commands in flight at most; past it, calls answer locally.
_MAX_IN_FLIGHT = 128


class _Skipped(enum.Enum):
    SKIPPED = "skipped"


_SKIPPED = _Skipped.SKIPPED


class _Kind(enum.Enum):
    """Reads and writes back off apart: a full Redis refuses writes but still serves reads."""

    READ = "read"
    WRITE = "write"


@attrs.define
class RedisCacheStats:
    """Counters of a :class:`RedisCache`: what it read, wrote, and could not."""

    hits: int = 0  #: entries found (fresh or not)
    misses: int = 0  #: keys absent, or not a string
    writes: int = 0
    corrupt: int = 0  #: values that were not a batchpage entry: served as misses
    errors: int = 0  #: failed calls (connection, timeout, wrong reply, ...)
    slow: int = 0  #: calls that missed their ``command_timeout`` (counted in ``errors`` too)
    refused: int = 0  #: commands Redis answered with an error (full, read-only): not an outage
    outages: int = 0  #: times Redis was marked down
    skipped: int = 0  #: calls answered locally because Redis was backing off
    stale_writes: int = 0  #: writes refused because an invalidation overtook their fill
    resubscribes: int = 0  #: invalidation subscriptions restored after a failure


class RedisCache:
    """Entries in Redis, shared by every instance: one ``MGET`` per page (per slot on a cluster).

    ``client`` is a ``redis.asyncio.Redis``, or a
    ``redis.asyncio.cluster.RedisCluster`` for Redis Cluster, that does not
    decode responses; :meth:`from_url` builds one with short timeouts and no
    retries, which is what a cache in a request path wants, and tells a
    cluster node from a single Redis by itself. redis-py's asyncio client
    runs on asyncio only, so a ``RedisCache`` needs asyncio (not trio).

    ``clock`` (seconds) judges entries and must be the clock of the other
    layers and of the aggregator; Redis's own expiry (set to an entry's
    remaining usefulness) only collects garbage. ``backoff`` (seconds) is how
    long Redis is skipped after a failure, timed on ``monotonic`` (a cluster
    is skipped as a whole). ``channel`` carries invalidations to other
    instances' memory layers. ``poll_interval`` (seconds) paces
    :meth:`wait_for`. With ``owns_client`` the client is closed when the
    cache exits.

    ``command_timeout`` (seconds) is each command's budget: past it the call
    answers as if Redis were down, and Redis is backed off. A command given
    up on finishes in the background, bounded by ``hard_timeout`` (seconds),
    after which it is cut (and its connection dropped): a client without
    socket timeouts cannot hang anything. Use the cache as an async context
    manager: it owns those background commands.

    On a cluster, a key and its lock (``key:lock``) must share a slot for
    the conditional write and the lock's compare-and-delete: keys need a
    ``{hash tag}``, which every key batchpage builds has.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        clock: Callable[[], float] = time.time,
        channel: str = DEFAULT_CHANNEL,
        backoff: Seconds = 1.0,
        poll_interval: Seconds = 0.02,
        scan_count: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
        owns_client: bool = False,
        command_timeout: Seconds = 0.1,
        hard_timeout: Seconds = 2.0,
    ) -> None:
        require("redis.asyncio", extra="redis", what="RedisCache")
        import redis.asyncio
        from redis.asyncio.cluster import RedisCluster

        if isinstance(client, RedisCluster):
            cluster = True
            decodes = client.get_connection_kwargs().get("decode_responses")
        elif isinstance(client, redis.asyncio.Redis):
            cluster = False
            decodes = client.connection_pool.connection_kwargs.get("decode_responses")
        else:
            raise TypeError(
                "client must be a redis.asyncio.Redis or a redis.asyncio.cluster.RedisCluster, "
                f"not {client!r}"
            )
        if decodes:
            raise ValueError("client must not decode responses (decode_responses=False)")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {clock!r}")
        if not callable(monotonic):
            raise TypeError(f"monotonic must be callable, not {monotonic!r}")
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty str, got {channel!r}")
        if isinstance(scan_count, bool) or not isinstance(scan_count, int) or scan_count < 1:
            raise ValueError(f"scan_count must be a positive int, got {scan_count!r}")
        self.clock = clock
        self.channel = channel
        self.backoff = positive_seconds(backoff, name="backoff")
        self.poll_interval = positive_seconds(poll_interval, name="poll_interval")
        self.scan_count = scan_count
        self.owns_client = owns_client
        self.command_timeout = positive_seconds(command_timeout, name="command_timeout")
        self.hard_timeout = positive_seconds(hard_timeout, name="hard_timeout")
        if self.hard_timeout < self.command_timeout:
            raise ValueError(
                f"hard_timeout must be at least command_timeout ({self.command_timeout!r}), "
                f"got {self.hard_timeout!r}"
            )
        self.stats = RedisCacheStats()
        self._monotonic = monotonic
        self._down_until: float | None = None
        self._writes_down_until: float | None = None
        self._probing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._health_listeners: list[Callable[[str, bool], object]] = []
        # ``None``: not known yet (from_url finds out at first use).
        self._cluster: bool | None = cluster
        self._cluster_factory: Callable[[], Any] | None = None
        self._detecting: asyncio.Lock | None = None
        self._moved_logged = False
        self._pubsub_turn = 0
        self._use(client)

    def _use(self, client: Any) -> None:
        """Talk to Redis through ``client`` from now on."""
        self.client = client
        self._unlock_script = client.register_script(_UNLOCK_SCRIPT)
        self._set_script = client.register_script(_SET_IF_LOCKED_SCRIPT)

    @property
    def cluster(self) -> bool | None:
        """Whether Redis is a Redis Cluster; ``None`` until :meth:`from_url`'s first command."""
        return self._cluster

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool | None = None,
        socket_timeout: Seconds = 1.0,
        socket_connect_timeout: Seconds = 0.25,
        max_connections: int | None = None,
        command_timeout: Seconds = 0.1,
        clock: Callable[[], float] = time.time,
        channel: str = DEFAULT_CHANNEL,
        backoff: Seconds = 1.0,
        poll_interval: Seconds = 0.02,
        scan_count: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> RedisCache:
        """A cache on a new client for ``url``, closed when the cache exits.

        ``cluster``: ``True`` for a Redis Cluster (``url`` names any one of
        its nodes; the others are discovered), ``False`` for a single Redis,
        ``None`` (the default) to ask the server at first use (``INFO
        cluster``) and take redis-py's cluster client if it is a cluster
        node. Until that first answer nothing is cached, as when Redis is down.

        A page waits at most ``command_timeout`` for a command; the socket
        timeouts (seconds) bound the command itself, which finishes in the
        background, and a timed-out command is not retried: a slow Redis costs
        a page one short wait, after which the back-off keeps it out of the
        request path. A broken connection is retried once, at once, on a new
        one: after a Redis restart every pooled connection is dead, and each
        would otherwise cost a failure and a back-off (on a cluster: once,
        after reading the cluster's layout again, so a command finds the
        replica that took over). The pool holds at most ``max_connections``
        (default: the 128 commands that may be in flight; on a cluster, per node).
        """
        require("redis.asyncio", extra="redis", what="RedisCache")
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        if cluster is not None and cluster is not True and cluster is not False:
            raise TypeError(f"cluster must be True, False or None, not {cluster!r}")
        socket_timeout_s = positive_seconds(socket_timeout, name="socket_timeout")
        connect_timeout_s = positive_seconds(socket_connect_timeout, name="socket_connect_timeout")
        # Never more than the commands that may be in flight at once.
        pool_size = _MAX_IN_FLIGHT if max_connections is None else max_connections

        def cluster_client() -> redis.asyncio.cluster.RedisCluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(
                url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                max_connections=pool_size,
                retry=Retry(NoBackoff(), 1),
                decode_responses=False,
            )

        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
        if cluster:
            client = cluster_client()
        else:
            client = redis.asyncio.Redis.from_url(
                url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                max_connections=pool_size,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                decode_responses=False,
            )
        cache = cls(
            client,
            clock=clock,
            channel=channel,
            backoff=backoff,
            poll_interval=poll_interval,
            scan_count=scan_count,
            monotonic=monotonic,
            owns_client=True,
            command_timeout=command_timeout,
            hard_timeout=max(
                socket_timeout_s, positive_seconds(command_timeout, name="command_timeout")
            ),
        )
        if cluster is None:
            cache._cluster = None
            cache._cluster_factory = cluster_client
        return cache

    # -- single Redis or cluster ---------------------------------------------

    async def _ensure_mode(self) -> None:
        """Find out (once) whether the URL named a cluster node; switch clients if so."""
        if self._cluster is not None:
            return
        if self._detecting is None:
            self._detecting = asyncio.Lock()
        async with self._detecting:
            if self.cluster is not None:  # decided while this call waited for the lock
                return
            from redis.exceptions import ResponseError

            try:
                info: object = await self.client.info("cluster")
            except ResponseError as exc:
                # INFO refused (an ACL, say): a single Redis until it answers MOVED.
                logger.warning("redis INFO cluster refused (%s); assuming a single Redis", exc)
                self._cluster = False
                return
            enabled = isinstance(info, dict) and str(info.get("cluster_enabled", "0")) == "1"
            if enabled:
                self._switch_to_cluster()
            else:
                self._cluster = False

    def _switch_to_cluster(self) -> None:
        """From the single-Redis client that :meth:`from_url` started with to a cluster client."""
        factory = self._cluster_factory
        assert factory is not None
        if self._cluster:
            return  # switched already (a MOVED and INFO both said so)
        old = self.client
        self._use(factory())
        self._cluster = True
        logger.info("redis is a Redis Cluster node: using redis-py's cluster client")
        # Closed in the background: a command may still hold one of its connections.
        task = self._detach("close", old.aclose)
        task.add_done_callback(_late_handler(None))

    async def _cluster_client(self) -> Any:
        """The cluster client, its layout read (once, or again after a failure)."""
        client = self.client
        await client.initialize()
        return client

    async def __aenter__(self) -> Self:
        # On another loop every call would fail, and failing open would hide it.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "RedisCache needs asyncio (redis-py's asyncio client), not another event loop"
            ) from None
        if self._cluster is not False:
            # Learn what the URL names, and a cluster's layout, before the first
            # page needs them; in the background: a down Redis must not block start-up.
            task = self._detach("connect", self._connect)
            task.add_done_callback(_late_handler(None))
        return self

    async def connect(self) -> bool:
        """Reach Redis now, within ``hard_timeout``: False (and backed off) if it did not answer.

        Never needed: every call connects by itself. It tells a readiness
        check whether Redis answers, and has :meth:`from_url` learn whether it
        names a cluster node (and a cluster client its layout) before the
        first page does.
        """
        done = await self._call("connect", self._connect, budget=self.hard_timeout)
        return done is not _SKIPPED

    async def _connect(self) -> None:
        if self._cluster:
            await self._cluster_client()
        else:
            await self.client.ping()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._detecting = None  # a lock belongs to its event loop; the next entry may be on another
        with anyio.CancelScope(shield=True):
            await self._drain()
            if self.owns_client:
                # The pool reconnects lazily, so the cache may be entered again.
                await self.client.aclose()

    async def _drain(self) -> None:
        """End the commands still running in the background: nothing outlives the cache."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    # -- availability -------------------------------------------------------

    def watch_health(self, listener: Callable[[str, bool], object]) -> None:
        """Call ``listener("redis", healthy)`` when Redis is marked down, and when it is back."""
        if listener not in self._health_listeners:
            self._health_listeners.append(listener)

    def _health(self, healthy: bool) -> None:
        for listener in self._health_listeners:
            try:
                listener("redis", healthy)
            except Exception:
                logger.exception("redis health listener failed")

    @property
    def in_flight(self) -> int:
        """Commands running now, including those nobody waits for any more."""
        return len(self._tasks)

    @property
    def available(self) -> bool:
        """False while Redis is being skipped after a failure."""
        return self._down_until is None or self._monotonic() >= self._down_until

    def _backing_off(self, kind: _Kind) -> bool:
        now = self._monotonic()
        if kind is _Kind.WRITE and self._writes_down_until is not None:
            if now < self._writes_down_until:
                return True
            self._writes_down_until = None
        return self._down_until is not None and (self._probing or now < self._down_until)

    async def _call(
        self,
        op: str,
        fn: Callable[[], Awaitable[T]],
        *,
        kind: _Kind = _Kind.READ,
        budget: float | None = None,
        late: Callable[[T], object] | None = None,
    ) -> T | _Skipped:
        """``await fn()``, or ``_SKIPPED`` if Redis is backing off, slow, or the call failed.

        After the back-off one call (the probe) tries Redis while the others
        keep skipping, so an outage costs one failed call per back-off, not
        one per concurrent request. The call waits at most ``command_timeout``
        (or ``budget``); ``late(result)`` handles an answer that
        came after the caller stopped waiting (a lock nobody holds, say).
        """
        if self._backing_off(kind) or len(self._tasks) >= _MAX_IN_FLIGHT:
            self.stats.skipped += 1
            return _SKIPPED
        if budget is None:
            budget = self.command_timeout
        if budget <= 0:
            self.stats.skipped += 1
            return _SKIPPED
        probe = self._down_until is not None
        if probe:
            self._probing = True
        task = self._detach(op, fn)
        try:
            done, _ = await asyncio.wait((task,), timeout=budget)
        finally:
            if probe:
                self._probing = False
            if not task.done():
                # The caller stopped waiting (budget, or cancelled): the command
                # finishes alone, and whatever it got is undone or dropped.
                task.add_done_callback(_late_handler(late))
        if not done:
            self.stats.slow += 1
            self._failed(op, TimeoutError(f"no answer within {budget * 1000:.0f} ms"), probe=probe)
            return _SKIPPED
        if task.cancelled():  # the cache is closing
            return _SKIPPED
        exc = task.exception()
        if exc is not None:
            self._failed(op, exc, probe=probe, kind=kind)
            return _SKIPPED
        if self._down_until is not None:
            self._down_until = None
            logger.warning("redis is reachable again")
            self._health(True)
        return task.result()

    def _within(self, seconds: float | None) -> float:
        """The command budget, or less if the caller has less time left."""
        if seconds is None or seconds > self.command_timeout:
            return self.command_timeout
        return max(seconds, 0.0)

    def _detach(self, op: str, fn: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        hard = self.hard_timeout

        async def command() -> T:
            async with asyncio.timeout(hard):
                if self._cluster is None:
                    await self._ensure_mode()
                return await fn()

        task = asyncio.get_running_loop().create_task(command(), name=f"batchpage redis {op}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieved)
        return task

    def _failed(
        self, op: str, exc: BaseException, *, probe: bool, kind: _Kind = _Kind.READ
    ) -> None:
        self.stats.errors += 1
        if _is_moved(exc) and not self._cluster:
            self._moved(exc)
        elif _is_refusal(exc):
            # Redis answered: it is up, but will not do this (full under
            # noeviction, read-only replica). Reads go on; writes back off.
            self.stats.refused += 1
            if kind is _Kind.WRITE:
                first = self._writes_down_until is None
                self._writes_down_until = self._monotonic() + self.backoff
                if first:
                    logger.warning(
                        "redis refused a %s (%s); skipping redis writes for %.3g s",
                        op,
                        exc,
                        self.backoff,
                    )
            return
        was_up = self._down_until is None
        self._down_until = self._monotonic() + self.backoff
        if was_up:
            self.stats.outages += 1
            self._health(False)
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

    def _moved(self, exc: BaseException) -> None:
        """A single-Redis client was answered MOVED: the server is a cluster node."""
        if self._cluster_factory is not None:
            self._switch_to_cluster()  # from_url: the next command goes to the cluster
            return
        if not self._moved_logged:
            self._moved_logged = True
            logger.error(
                "redis answered MOVED (%s): it is a Redis Cluster node, and this RedisCache "
                "has a single-Redis client; pass a redis.asyncio.cluster.RedisCluster, or use "
                "RedisCache.from_url(url), which finds out by itself",
                exc,
            )

    # -- reading ------------------------------------------------------------

    async def _mget(self, keys: Sequence[str]) -> list[Any]:
        values: object
        if self._cluster:
            # One MGET per slot; one pipeline per node, the nodes in parallel.
            client = await self._cluster_client()
            values = await client.mget_nonatomic(keys)
        else:
            values = await self.client.mget(keys)
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

    async def get_many(
        self, keys: Sequence[str], /, *, budget: float | None = None
    ) -> list[Entry | None]:
        """Every key's entry in one ``MGET``; ``None`` for a miss."""
        if not keys:
            return []
        values = await self._call("get", lambda: self._mget(keys), budget=self._within(budget))
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

    async def set(self, key: str, entry: Entry, /, *, token: str | None = None) -> bool:
        """Store ``entry`` until it is of no use to anyone (``SET PX``).

        With a lock's ``token``, only while that lock is still held: an
        invalidation deletes the lock, so the fill it overtook stores nothing.
        A local token (Redis was down when the lock was asked for) stores
        nothing here: no lock, no proof that no invalidation came since.
        """
        return await self.store(key, entry, token=token) is Stored.WRITTEN

    async def store(self, key: str, entry: Entry, *, token: str | None = None) -> Stored:
        """:meth:`set`, telling a refused write (an invalidation won) from a failed one."""
        ttl = entry.useless_after - self.clock()
        if not ttl > 0:
            return Stored.FAILED
        if token == LOCAL_TOKEN:
            return Stored.FAILED
        data = entry.dumps()
        px = _milliseconds(ttl)
        if token is not None:
            expiry = "" if px > _MAX_PX else str(px)
            done: object = await self._call(
                "set",
                lambda: self._set_script(
                    keys=[key, self.lock_key(key)], args=[token, data, expiry]
                ),
                kind=_Kind.WRITE,
            )
        elif px > _MAX_PX:
            done = await self._call("set", lambda: self.client.set(key, data), kind=_Kind.WRITE)
        else:
            done = await self._call(
                "set", lambda: self.client.set(key, data, px=px), kind=_Kind.WRITE
            )
        if done is _SKIPPED:
            return Stored.FAILED
        if not done:
            self.stats.stale_writes += 1
            return Stored.REFUSED
        self.stats.writes += 1
        return Stored.WRITTEN

    async def invalidate(self, pattern: KeyPattern | str, /) -> bool:
        """Delete every key ``pattern`` matches (a str: a literal prefix), then tell the others.

        ``SCAN MATCH`` with the pattern's glob, then ``UNLINK``; on a cluster,
        on every master (only the slot's master when the pattern fixes a hash
        tag), the masters in parallel. The deletion comes first, so an
        instance that drops its memory entry on the message cannot refill it
        from Redis with the old value. Returns False when Redis could not be
        reached, or not wholly (a master down): the old value may then come
        back, and the caller should retry.
        """
        if isinstance(pattern, str) and not pattern:
            raise ValueError("prefix must be a non-empty str")
        pattern = KeyPattern.of(pattern)
        # A SCAN of a large keyspace takes many round trips: its own budget.
        complete = await self._call(
            "invalidate",
            lambda: self._delete_matching(pattern),
            kind=_Kind.WRITE,
            budget=self.hard_timeout,
        )
        if complete is _SKIPPED:
            return False
        published = await self._call(
            "publish", lambda: self._publish(pattern.glob()), kind=_Kind.WRITE
        )
        return complete is True and published is not _SKIPPED

    async def _publish(self, message: str) -> object:
        if not self._cluster:
            return await self.client.publish(self.channel, message)
        # A cluster carries a PUBLISH on any node to every node: the first
        # node that answers will do, masters first (one may be down).
        client = await self._cluster_client()
        error: Exception | None = None
        for node in _masters_first(client.get_nodes()):
            try:
                return await client.publish(self.channel, message, target_nodes=node)
            except Exception as exc:
                error = exc
        raise error if error is not None else ConnectionError("the cluster lists no node")

    async def _delete_matching(self, pattern: KeyPattern) -> bool:
        glob = pattern.glob()
        if not self._cluster:
            return await self._scan_and_unlink(self.client, glob, None)
        client = await self._cluster_client()
        tag = pattern.hash_tag
        nodes = client.get_primaries() if tag is None else [client.get_node_from_key(f"{{{tag}}}")]
        results = await asyncio.gather(
            *(self._scan_and_unlink(client, glob, node) for node in nodes), return_exceptions=True
        )
        failed = [
            (node, r)
            for node, r in zip(nodes, results, strict=True)
            if isinstance(r, BaseException)
        ]
        if len(failed) == len(nodes):
            raise failed[0][1]  # no master answered: an outage
        for node, exc in failed:
            self.stats.errors += 1
            logger.warning(
                "redis invalidate of %r did not reach master %s (%s: %s); incomplete",
                glob,
                node.name,
                type(exc).__name__,
                exc,
            )
        return all(r is True for r in results)

    async def _scan_and_unlink(self, client: Any, glob: str, node: Any) -> bool:
        """SCAN one Redis (or one cluster ``node``) for ``glob``, unlinking what it finds."""
        target = {} if node is None else {"target_nodes": node}
        cursor: object = 0
        for _ in range(_MAX_SCAN_ROUNDS):
            cursor, keys = await client.scan(
                cursor=cursor, match=glob, count=self.scan_count, **target
            )
            if isinstance(cursor, dict):  # the cluster client answers {node name: cursor}
                cursor = next(iter(cursor.values()), 0)
            if keys:
                await client.unlink(*keys)  # on a cluster: one UNLINK per slot
            if cursor == 0:
                return True
        logger.warning(
            "redis invalidate of %r stopped after %d SCAN rounds", glob, _MAX_SCAN_ROUNDS
        )
        return False

    # -- locks --------------------------------------------------------------

    @staticmethod
    def lock_key(key: str) -> str:
        """The lock of ``key``: same ``{...}`` hash tag, so same Redis Cluster slot."""
        return key + ":lock"

    async def try_lock(self, key: str, ttl: float, /) -> str | None:
        """A token if this caller may fill ``key`` now (``SET NX PX``), else ``None``.

        While Redis is unavailable every caller gets ``LOCAL_TOKEN``:
        better one fetch per instance than none. A lock granted after the
        caller gave up waiting is released at once, so it blocks nobody.
        """
        token = secrets.token_hex(16)
        lock_key = self.lock_key(key)
        px = _milliseconds(min(ttl, _MAX_LOCK_SECONDS) if ttl > 0 else 0.0)

        def release_late(got: object) -> None:
            if got:
                self._detach("unlock", lambda: self._unlock_script(keys=[lock_key], args=[token]))

        got = await self._call(
            "lock",
            lambda: self.client.set(lock_key, token, nx=True, px=px),
            kind=_Kind.WRITE,
            late=release_late,
        )
        if got is _SKIPPED:
            return LOCAL_TOKEN
        return token if got else None

    async def unlock(self, key: str, token: str, /) -> None:
        """Release ``key``'s lock if ``token`` still holds it (compare-and-delete).

        Returns at once: the command runs in the background, so releasing a
        lock never holds a page past its deadline.
        """
        if token == LOCAL_TOKEN or len(self._tasks) >= _MAX_IN_FLIGHT:
            return  # the lock expires on its own
        lock_key = self.lock_key(key)
        task = self._detach("unlock", lambda: self._unlock_script(keys=[lock_key], args=[token]))
        task.add_done_callback(_late_handler(None))

    async def _exists(self, key: str) -> object:
        if self._cluster:
            client = await self._cluster_client()
            return await client.exists(key)
        return await self.client.exists(key)

    async def wait_for(self, key: str, wait: float, /) -> Entry | None:
        """Poll until another instance drops its lock on ``key``, or ``wait`` ends.

        Polls the small lock, not the value: a waiter reads the value once,
        when the lock is gone. Only an entry that is not expired counts: what
        was there before the other instance started fetching was expired (or
        absent).
        """
        deadline = anyio.current_time() + min(max(wait, 0.0), _MAX_LOCK_SECONDS)
        lock_key = self.lock_key(key)
        while True:  # bounded by the deadline
            remaining = deadline - anyio.current_time()
            held = await self._call(
                "wait", lambda: self._exists(lock_key), budget=self._within(remaining)
            )
            if held is _SKIPPED:
                return None
            if not held:
                (entry,) = await self.get_many([key], budget=max(remaining, 0.0))
                if entry is not None and entry.freshness(self.clock()) is not Freshness.EXPIRED:
                    return entry
                return None  # the holder gave up without writing
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return None
            await anyio.sleep(min(self.poll_interval, remaining))

    # -- invalidations from other instances ---------------------------------

    async def listen_invalidations(
        self,
        on_invalidation: Callable[[KeyPattern], object],
        *,
        on_resubscribe: Callable[[], object] | None = None,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_invalidation(pattern)`` for each invalidation published, until cancelled.

        A lost subscription is retried after ``backoff``, doubling up to 30 s;
        ``on_resubscribe()`` runs once it is back, because messages sent
        meanwhile are lost. Reports started after the first attempt, whether
        or not Redis answered: a down Redis must not block start-up.

        On a cluster the subscription is made through one node (Redis
        Cluster delivers a ``PUBLISH`` on any node to every node); when it is
        lost, the next attempt picks the next node the cluster lists.
        """
        # Clients of its own that never retry: with retries, redis-py would
        # reconnect and resubscribe silently, and the messages lost meanwhile
        # would go unnoticed.
        listeners: dict[str, Any] = {}
        try:
            await self._listen(listeners, on_invalidation, on_resubscribe, task_status)
        finally:
            with anyio.CancelScope(shield=True, deadline=anyio.current_time() + 1.0):
                for listener in listeners.values():
                    with contextlib.suppress(Exception):
                        await listener.aclose()

    async def _listener(self, listeners: dict[str, Any]) -> Any:
        """The client to subscribe through this time (new on a cluster after each loss)."""
        if self._cluster is None:
            async with asyncio.timeout(self.hard_timeout):
                await self._ensure_mode()
        if not self._cluster:
            if "single" not in listeners:
                listeners["single"] = _without_retries(self.client)
            return listeners["single"]
        # A cluster: one node this time, the next one after a failure.
        for name in list(listeners):
            with contextlib.suppress(Exception):
                await listeners.pop(name).aclose()
        client = self.client
        async with asyncio.timeout(self.hard_timeout):
            await client.initialize()
        nodes = _masters_first(client.get_nodes())
        if not nodes:
            raise ConnectionError("the cluster lists no node")
        node = nodes[self._pubsub_turn % len(nodes)]
        listeners[node.name] = _node_client(node)
        return listeners[node.name]

    async def _listen(
        self,
        listeners: dict[str, Any],
        on_invalidation: Callable[[KeyPattern], object],
        on_resubscribe: Callable[[], object] | None,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        started = False
        failures = 0
        while True:  # a service loop: it ends when its task is cancelled
            pubsub = None
            try:
                listener = await self._listener(listeners)
                pubsub = listener.pubsub(ignore_subscribe_messages=True)
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
                        self._deliver(message.get("data"), on_invalidation)
            except Exception as exc:
                failures += 1
                self._pubsub_turn += 1  # a cluster: through another node next time
                if failures == 1:
                    logger.warning(
                        "redis invalidation channel %r lost (%s: %s); resubscribing",
                        self.channel,
                        type(exc).__name__,
                        exc,
                    )
            finally:
                if pubsub is not None:
                    with anyio.CancelScope(shield=True, deadline=anyio.current_time() + 1.0):
                        with contextlib.suppress(Exception):
                            await pubsub.aclose()
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(min(self.backoff * 2 ** (failures - 1), _MAX_RESUBSCRIBE_DELAY))

    def _deliver(self, data: object, on_invalidation: Callable[[KeyPattern], object]) -> None:
        if not isinstance(data, bytes):
            logger.warning("ignored a %s on the invalidation channel", type(data).__name__)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            logger.warning("ignored an undecodable invalidation (%d bytes)", len(data))
            return
        pattern = KeyPattern.from_glob(text)
        try:
            on_invalidation(pattern)
        except Exception:
            logger.exception("invalidation handler failed for %r", text)

    def __repr__(self) -> str:
        state = "up" if self._down_until is None else "backing off"
        return f"RedisCache(channel={self.channel!r}, {state})"


class Stored(enum.Enum):
    """What a write did."""

    WRITTEN = "written"
    REFUSED = "refused"  #: the fill's lock was gone: an invalidation overtook it
    FAILED = "failed"  #: Redis unavailable, slow or refusing writes; nothing stored


def _is_refusal(exc: BaseException) -> bool:
    """Redis answered with an error reply: it is reachable, but refused the command.

    Not a cluster that cannot serve the slot now (``CLUSTERDOWN``,
    ``MASTERDOWN``, ``TRYAGAIN``, a redirection not followed): that is an
    outage of the slot's node, backed off like one.
    """
    from redis.exceptions import AskError, ClusterError, ResponseError, TryAgainError

    return isinstance(exc, ResponseError) and not isinstance(
        exc, ClusterError | AskError | TryAgainError
    )


def _is_moved(exc: BaseException) -> bool:
    from redis.exceptions import MovedError

    return isinstance(exc, MovedError)


def _late_handler(late: Callable[[Any], object] | None) -> Callable[[asyncio.Task[Any]], None]:
    """A done-callback for a command nobody waits for any more."""

    def done(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved, so asyncio does not log it as lost
        if exc is None and late is not None:
            try:
                late(task.result())
            except Exception:
                logger.exception("redis: handling a late answer failed")

    return done


def _milliseconds(seconds: float) -> int:
    """A Redis expiry: whole milliseconds, at least 1, capped for infinite input."""
    if not seconds < _MAX_PX / 1000:  # also catches inf and NaN
        return _MAX_PX + 1
    return max(1, math.ceil(seconds * 1000))


def _masters_first(nodes: Sequence[Any]) -> list[Any]:
    """A cluster's nodes, masters first, each group by name: the same order on every call."""
    return sorted(nodes, key=lambda node: (node.server_type != "primary", node.name))


def _node_client(node: Any) -> Any:
    """A single-Redis client, without retries, to one node of a cluster (for pub/sub)."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kwargs = {k: v for k, v in node.connection_kwargs.items() if k not in _CLUSTER_ONLY}
    kwargs["retry"] = Retry(NoBackoff(), 0)
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool(
            connection_class=node.connection_class, **kwargs
        )
    )


# What redis-py's cluster client hands its nodes' connections and a plain pool does not take.
_CLUSTER_ONLY = frozenset(
    (
        "himport_registry",
        "oss_cluster_maint_notifications_handler",
        "maint_notifications_config",
        "max_connections",
        "connection_class",
    )
)


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


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Retrieve a detached command's outcome: nobody awaits a fire-and-forget unlock.

    Its failure is Redis's (the lock lapses at its TTL); asyncio would
    otherwise log "Task exception was never retrieved" for it.
    """
    if not task.cancelled() and task.exception() is not None:
        logger.debug("redis %s failed: %r", task.get_name(), task.exception())
