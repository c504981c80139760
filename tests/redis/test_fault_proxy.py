"""The fault proxy against a real redis-server (and nx-27017): each fault as a client sees it.

Clients here are synchronous and never retry (``Retry(NoBackoff(), 0)``), so
each fault shows on the first command. Timing bounds: a lower bound is exact,
since the proxy never sends a chunk before its deadline on the monotonic
clock; an upper bound of the expected time plus one second only proves the
proxy adds no delay of its own (per chunk, or per connection): it leaves
room for scheduling on two shared, busy cores, where a thread can wait
hundreds of milliseconds for its turn.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import pymongo
import pymongo.errors
import pytest
import redis
from examples.homepage.mongo import EmbeddedMongo, EmbeddedMongoError
from redis.backoff import NoBackoff
from redis.retry import Retry

from fault_proxy import HOST, FaultProxy
from redis_server import RedisServer

T = TypeVar("T")

#: The slack of every upper bound on a duration (see the module's docstring).
SLACK: Final = 1.0
PING: Final = b"*1\r\n$4\r\nPING\r\n"
PONG: Final = b"+PONG\r\n"


def client(proxy: FaultProxy, *, timeout: float = 5.0) -> redis.Redis:
    """A client through the proxy that never retries: a fault shows on the first command."""
    return redis.Redis(
        host=HOST,
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


@contextmanager
def after(seconds: float, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` on another thread after ``seconds``, while the block waits in a call."""
    timer = threading.Timer(seconds, action)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join(5.0)


def value_of(size: int) -> bytes:
    """``size`` bytes that are not all alike, so a lost or reordered piece shows."""
    pattern = bytes(range(251))  # a prime length: no chunk size lines up with it
    return (pattern * (size // len(pattern) + 1))[:size]


def open_sockets() -> int:
    """Sockets this process holds (Linux' ``/proc``)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            count += os.readlink(fd).startswith("socket:")
    return count


@pytest.mark.redis
def test_pass_through_forwards_both_ways_and_counts(
    redis_fault_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    """Writes through the proxy reach the server; counters see one connection, PING/PONG."""
    with client(redis_fault_proxy) as through:
        assert through.ping()
        # A byte is counted as sent right after the send: the client may read it first.
        stats = redis_fault_proxy.wait_for_stats(
            lambda s: s.bytes_to_client == s.bytes_from_upstream >= len(PONG)
        )
        assert (stats.accepted, stats.open, stats.reset) == (1, 1, 0)
        assert stats.bytes_from_client == stats.bytes_to_upstream >= len(PING)
        through.set("k", b"via proxy")
    with redis_server.client() as direct:
        assert direct.get("k") == b"via proxy"
    stats = redis_fault_proxy.wait_for_stats(lambda s: s.open == 0, timeout=2.0)
    assert stats.accepted == 1


@pytest.mark.redis
def test_latency_delays_each_direction(redis_fault_proxy: FaultProxy) -> None:
    """A PING crosses both directions: its round trip grows by twice the delay, or once for one."""
    delay = 0.15
    with client(redis_fault_proxy) as through:
        assert through.ping()  # connected beforehand: only the round trip is timed
        redis_fault_proxy.latency(delay)
        _, both = timed(through.ping)
        redis_fault_proxy.latency(delay, direction="to_client")
        _, replies_only = timed(through.ping)
    assert 2 * delay <= both < 2 * delay + SLACK
    assert delay <= replies_only < delay + SLACK


@pytest.mark.redis
def test_a_large_reply_is_delayed_once_not_per_chunk(
    redis_fault_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    """1 MiB comes in 16 or more reads of 64 KiB: in order, and late by the delay, not 16x it."""
    value = value_of(1024 * 1024)
    delay = 0.2
    with redis_server.client() as direct:
        direct.set("big", value)
    with client(redis_fault_proxy) as through:
        assert through.ping()
        redis_fault_proxy.latency(delay, direction="to_client")
        got, elapsed = timed(lambda: through.get("big"))
    assert got == value
    assert delay <= elapsed < delay + SLACK


@pytest.mark.redis
def test_switching_latency_off_releases_held_data(redis_fault_proxy: FaultProxy) -> None:
    """A reply held for 5 s goes out as soon as another thread switches back to pass-through."""
    with client(redis_fault_proxy) as through:
        assert through.ping()
        redis_fault_proxy.latency(5.0)
        with after(0.2, redis_fault_proxy.pass_through):
            answered, elapsed = timed(through.ping)
    assert answered
    assert 0.2 <= elapsed < 0.2 + SLACK


@pytest.mark.redis
def test_black_hole_times_out_clients_then_recovers(redis_fault_proxy: FaultProxy) -> None:
    """Nothing is forwarded or answered, on an open connection or a new one; then back to normal."""
    with client(redis_fault_proxy, timeout=0.2) as through:
        assert through.ping()
        redis_fault_proxy.black_hole()
        before = redis_fault_proxy.stats()
        with pytest.raises(redis.TimeoutError):
            through.ping()  # the open connection
        with pytest.raises(redis.TimeoutError):
            through.ping()  # redis-py dropped it: a new one, accepted but never answered
        during = redis_fault_proxy.stats()
        assert during.accepted == before.accepted + 1
        assert during.bytes_from_client > before.bytes_from_client  # read...
        assert during.bytes_to_upstream == before.bytes_to_upstream  # ...and swallowed
        assert during.bytes_to_client == before.bytes_to_client
        redis_fault_proxy.pass_through()
        assert through.ping()


def raw_connection(proxy: FaultProxy) -> socket.socket:
    """A bare socket through the proxy that has had its PONG: the connection is set up."""
    sock = socket.create_connection(proxy.address, timeout=2.0)
    sock.sendall(PING)
    assert sock.recv(len(PONG)) == PONG
    return sock


@pytest.mark.redis
def test_reset_aborts_open_and_new_connections(redis_fault_proxy: FaultProxy) -> None:
    """Open connections get an RST (not a FIN) at the switch, new ones once accepted; then not."""
    with raw_connection(redis_fault_proxy) as opened, client(redis_fault_proxy) as through:
        assert through.ping()
        redis_fault_proxy.reset()
        assert redis_fault_proxy.stats().open == 0  # closed before reset() returned
        with pytest.raises(ConnectionResetError):
            opened.recv(1)  # a FIN would read b""
        with pytest.raises(redis.ConnectionError):
            through.ping()
        with (  # the RST may already fail the connect, else the first read
            pytest.raises(ConnectionResetError),
            socket.create_connection(redis_fault_proxy.address, timeout=2.0) as later,
        ):
            later.recv(1)
        # Every connection, open or new, was reset (redis-py's own reconnect may
        # still be being reset when its error reaches us: wait for the count).
        stats = redis_fault_proxy.wait_for_stats(
            lambda s: s.open == 0 and s.reset == s.accepted, timeout=5.0
        )
        assert stats.accepted >= 3
        redis_fault_proxy.pass_through()
        assert through.ping()


@pytest.mark.redis
def test_slow_drip_delivers_a_large_value_intact_but_slowly(
    redis_fault_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    """32 KiB at 64 KiB/s: half a second (less the first piece), every byte in place."""
    value = value_of(32 * 1024)
    rate = 64 * 1024
    piece = 512
    with redis_server.client() as direct:
        direct.set("big", value)
    with client(redis_fault_proxy) as through:
        assert through.ping()
        redis_fault_proxy.slow_drip(rate, piece_size=piece)
        got, elapsed = timed(lambda: through.get("big"))
    assert got == value
    expected = len(value) / rate
    assert expected - piece / rate <= elapsed < expected + SLACK


@pytest.mark.redis
def test_switching_a_drip_off_sends_the_rest_at_once(
    redis_fault_proxy: FaultProxy, redis_server: RedisServer
) -> None:
    """A 256 KiB reply dripping at 16 KiB/s (16 s) completes, intact, right after the switch."""
    value = value_of(256 * 1024)
    with redis_server.client() as direct:
        direct.set("big", value)
    with client(redis_fault_proxy) as through:
        assert through.ping()
        redis_fault_proxy.slow_drip(16 * 1024)
        with after(0.3, redis_fault_proxy.pass_through):
            got, elapsed = timed(lambda: through.get("big"))
    assert got == value
    assert 0.3 <= elapsed < 0.3 + SLACK


@pytest.mark.redis
def test_refuse_closes_the_port_and_keeps_open_connections(redis_fault_proxy: FaultProxy) -> None:
    """New clients are refused, an open connection still works; the same port serves again."""
    with client(redis_fault_proxy) as opened, client(redis_fault_proxy) as later:
        assert opened.ping()
        redis_fault_proxy.refuse()
        with pytest.raises(redis.ConnectionError, match="refused"):
            later.ping()
        assert opened.ping()
        redis_fault_proxy.pass_through()
        assert later.ping()
    assert redis_fault_proxy.stats().accepted == 2


@pytest.mark.redis
def test_close_leaves_no_thread_and_no_socket(redis_server: RedisServer) -> None:
    """Closing with connections open, one holding a PING back, ends the thread and each socket."""
    threads_before = set(threading.enumerate())
    sockets_before = open_sockets()
    proxy = FaultProxy(HOST, redis_server.port).start()
    through = client(proxy, timeout=1.0)
    try:
        assert through.ping()
        with raw_connection(proxy) as held:
            proxy.latency(5.0)
            held.sendall(PING)
            proxy.wait_for_stats(lambda s: s.bytes_from_client > s.bytes_to_upstream)
            assert proxy.stats().open == 2
            proxy.close()
            assert set(threading.enumerate()) == threads_before
            assert proxy.stats().open == 0
            assert held.recv(len(PONG)) == b""  # closed, and the held PING never went out
        with pytest.raises(redis.ConnectionError):
            through.ping()  # its connection was closed under it, and the port is closed too
        assert not proxy.errors
    finally:
        through.close()
        proxy.close()  # idempotent
    assert open_sockets() == sockets_before


@pytest.mark.mongo
def test_mongo_through_the_proxy() -> None:
    """pymongo via ``url_for("mongodb")``: pass-through, a timeout in the black hole, recovery."""
    server = EmbeddedMongo()
    try:
        server.start()
    except EmbeddedMongoError as exc:
        pytest.fail(f"the embedded MongoDB (nx-27017) did not start: {exc}", pytrace=False)
    try:
        with FaultProxy(HOST, server.port) as proxy:
            mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                proxy.url_for("mongodb"),
                serverSelectionTimeoutMS=3000,
                connectTimeoutMS=300,
                socketTimeoutMS=300,
                retryReads=False,
                retryWrites=False,
            )
            try:
                assert mongo.admin.command("ping")["ok"] == 1
                proxy.black_hole()
                with pytest.raises(pymongo.errors.PyMongoError):
                    mongo.admin.command("ping")
                proxy.pass_through()
                assert mongo.admin.command("ping")["ok"] == 1
            finally:
                mongo.close()
        assert not proxy.errors
    finally:
        server.stop()
