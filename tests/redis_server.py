"""A real ``redis-server`` for tests, on a free loopback port, persistence off.

``redis_server`` is one server for the session, flushed (data and command
statistics) before each test; ``private_redis_server`` is a server of the
test's own, for tests that stop and restart it. Tests speak to Redis over
the wire: nothing here is a mock.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from batchpage import LayeredCache, MemoryCache, RedisCache

REDIS_SERVER = "redis-server"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0

# Commands a client sends to set up a connection or that tests send to
# inspect the server: not the cache's data traffic.
_HOUSEKEEPING = ("info", "ping", "hello", "select", "client|", "config|", "subscribe")


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process in ``directory``, on 127.0.0.1 only."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        executable = shutil.which(REDIS_SERVER)
        if executable is None:
            pytest.fail(
                "redis-server is not installed: the Redis tests need Debian's "
                "redis-server (apt-get install redis-server)",
                pytrace=False,
            )
        self.executable = executable
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A synchronous client for setting up and inspecting the server."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.process is not None:
            raise RuntimeError("redis-server is already running")
        log = (self.directory / "redis.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._answers():
                return
            time.sleep(0.01)
        self.stop()
        tail = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"redis-server did not answer PING on port {self.port}:\n{tail}")

    def _answers(self) -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): connections are accepted, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the server, waiting briefly, then kill it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server cannot shut down
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)

    def reset(self) -> None:
        """Forget every key and every command count."""
        with self.client() as client:
            client.flushall()
            client.config_resetstat()

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the last reset (``INFO commandstats``)."""
        with self.client() as client:
            stats = client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if isinstance(value, dict)
        }

    def data_calls(self) -> dict[str, int]:
        """Like :meth:`command_calls`, without connection set-up and inspection."""
        return {
            name: calls
            for name, calls in self.command_calls().items()
            if not name.startswith(_HOUSEKEEPING)
        }


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands issued between two :meth:`RedisServer.data_calls` snapshots."""
    diff = {name: calls - before.get(name, 0) for name, calls in after.items()}
    return {name: calls for name, calls in diff.items() if calls}


async def eventually(predicate: Callable[[], bool], *, polls: int = 2000) -> None:
    """Poll ``predicate`` every 5 ms until it holds; fail after ``polls`` tries (10 s)."""
    for _ in range(polls):
        if predicate():
            return
        await anyio.sleep(0.005)
    raise AssertionError(f"still false after {polls} polls: {predicate}")


def layered_cache(
    server: RedisServer, clock: Callable[[], float], **redis_options: Any
) -> LayeredCache:
    """One application instance's cache: its own memory over the shared Redis."""
    return LayeredCache(
        MemoryCache(clock=clock), RedisCache.from_url(server.url, clock=clock, **redis_options)
    )


class Ticker:
    """A monotonic clock that only moves when told to (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def _session_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(_session_redis_server: RedisServer) -> RedisServer:
    """The session's Redis, empty and with zeroed command statistics."""
    _session_redis_server.reset()
    return _session_redis_server


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may stop and start again."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()
