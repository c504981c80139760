"""A TCP proxy that puts network faults between a test's client and a real server.

Failure handling is only proven against a server that is slow, silent, rude
or gone *on cue*, over a real socket, while its data stays put. The proxy
listens on a free loopback port in front of one upstream (redis-server,
nx-27017, ...) and forwards bytes both ways. A test switches the fault at
run time, from any thread; a switch applies to open connections and new
ones alike, and has taken effect when the call returns:

* :meth:`FaultProxy.pass_through`: forward at once (the initial state).
  Switching back to it releases what latency or drip still held back.
* :meth:`FaultProxy.latency`: hold each chunk until ``seconds`` after it
  arrived, in each direction (or one), in order. A request and its reply
  cross both directions, so a round trip grows by twice the delay; a large
  reply, many chunks read back to back, is delayed once, not once per chunk.
* :meth:`FaultProxy.black_hole`: keep accepting and reading, forward nothing,
  answer nothing (not even the end of a stream): clients time out. What is
  read meanwhile, and what latency or drip still held, is *dropped*, not
  delivered later, so a connection that lived through a black hole has lost
  part of its protocol stream and should be discarded by its client (redis-py
  and pymongo discard a connection that timed out).
* :meth:`FaultProxy.reset`: abort open connections with a TCP RST
  (``SO_LINGER`` 0) at once, and each new one as soon as it is accepted.
* :meth:`FaultProxy.slow_drip`: the upstream's replies trickle out a few
  bytes at a time at a set rate; requests pass at once.
* :meth:`FaultProxy.refuse`: close the listening port, so connecting fails
  with ECONNREFUSED; open connections pass through. Any other fault listens
  on the same port again. ``reset()`` then ``refuse()`` is a server that died.

The proxy runs its own asyncio loop in its own thread, on non-blocking
sockets it owns: it serves tests on asyncio, on trio and with synchronous
clients alike, and a test blocked in a synchronous call does not stall it.
Bounds: every call from a test (start, a switch, close) waits at most
:data:`CALL_TIMEOUT` and raises if the proxy does not answer; inside the
loop, a wait ends on data or room to send, on a timer, on a fault switch,
or at close, which cancels it; nothing polls. Each direction of a
connection holds at most ``_QUEUE_CHUNKS`` reads of 64 KiB before it stops
reading, and TCP then slows the sender down. An upstream that does not
accept within ``connect_timeout`` gets its client's connection closed (a
FIN), counted in :attr:`ProxyStats.upstream_failures`.

The ``redis_fault_proxy`` fixture is a proxy in front of the session's
redis-server (registered in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Final, Literal, Self

import attrs
import pytest

from redis_server import RedisServer

HOST: Final = "127.0.0.1"
#: The longest a call from a test waits for the proxy's thread (start, switch, close).
CALL_TIMEOUT: Final = 5.0
#: The longest the proxy waits for the upstream to accept a connection.
CONNECT_TIMEOUT: Final = 5.0
_READ_SIZE: Final = 64 * 1024
#: Reads a direction may hold (delayed or dripping) before it stops reading.
_QUEUE_CHUNKS: Final = 64
#: A drip without an explicit piece size sends this many pieces a second.
_DRIP_PIECES_PER_SECOND: Final = 50
#: Connections accepted per wake-up of the listener, before other work gets a turn.
_ACCEPTS_PER_WAKEUP: Final = 64
_LINGER_ZERO: Final = struct.pack("ii", 1, 0)
_URL_PATHS: Final = {"redis": "/0", "rediss": "/0", "mongodb": "/?directConnection=true"}

Direction = Literal["to_upstream", "to_client"]
Directions = Literal["both", "to_upstream", "to_client"]
FaultKind = Literal["pass_through", "latency", "black_hole", "reset", "slow_drip", "refuse"]
_BOTH: Final[frozenset[Direction]] = frozenset(("to_upstream", "to_client"))
_COUNTERS: Final[dict[Direction, tuple[str, str]]] = {
    "to_upstream": ("bytes_from_client", "bytes_to_upstream"),
    "to_client": ("bytes_from_upstream", "bytes_to_client"),
}


@attrs.frozen
class Fault:
    """What the proxy does to traffic right now: one fault at a time."""

    kind: FaultKind = "pass_through"
    #: ``latency``: how long each chunk is held after it arrived.
    seconds: float = 0.0
    #: ``latency``: the directions it delays.
    directions: frozenset[Direction] = _BOTH
    #: ``slow_drip``: the rate of the upstream's replies, and the size of each piece.
    bytes_per_second: float = 0.0
    piece_size: int = 0


@attrs.frozen
class ProxyStats:
    """Counters since start: connections, and bytes read and forwarded each way.

    A chunk is counted just after the socket call that read or sent it, so a
    client may hold bytes a moment before they are counted:
    :meth:`FaultProxy.wait_for_stats` waits for the counters to catch up.
    """

    accepted: int = 0
    open: int = 0
    #: Connections the proxy aborted with an RST (the ``reset`` fault).
    reset: int = 0
    #: Connections closed because the upstream did not accept the proxy's.
    upstream_failures: int = 0
    bytes_from_client: int = 0
    bytes_to_upstream: int = 0
    bytes_from_upstream: int = 0
    bytes_to_client: int = 0


class _Counters:
    """Counters written by the proxy's thread and read by the test's, under one lock."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._values = dict.fromkeys(attrs.fields_dict(ProxyStats), 0)
        self.errors: list[BaseException] = []

    def add(self, name: str, amount: int = 1) -> None:
        with self._changed:
            self._values[name] += amount
            self._changed.notify_all()

    def record(self, error: BaseException) -> None:
        with self._changed:
            self.errors.append(error)

    def snapshot(self) -> ProxyStats:
        with self._changed:
            return ProxyStats(**self._values)

    def wait_for(self, predicate: Callable[[ProxyStats], bool], timeout: float) -> ProxyStats:
        """Block until ``predicate`` holds for the counters; TimeoutError after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: predicate(ProxyStats(**self._values)), timeout=timeout
            ):
                raise TimeoutError(f"proxy counters still {ProxyStats(**self._values)}")
            return ProxyStats(**self._values)


def _abort(sock: socket.socket) -> None:
    """Close with an RST, not a FIN: ``SO_LINGER`` on, with a zero timeout."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


def _listening_socket(port: int) -> socket.socket:
    """A non-blocking listener on ``HOST``; ``SO_REUSEADDR`` lets ``refuse`` bind the port again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _until_switch(switched: asyncio.Event, at_most: float | None) -> None:
    """Wait for the next fault switch, at most ``at_most`` seconds (None: a switch or close)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(at_most):
            await switched.wait()


class _Connection:
    """A client's socket and the proxy's to the upstream, owned by the handler task."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None
        self.reset = False
        #: Loop time from which the next drip piece may go.
        self.drip_next = 0.0

    def close(self) -> None:
        """Close both sockets: with an RST after :meth:`abort`, else with a FIN."""
        for sock in (self.client, self.upstream):
            if sock is not None:
                if self.reset:
                    _abort(sock)
                else:
                    sock.close()


class _Engine:
    """The proxy's state and work inside its loop; only the proxy's thread touches it."""

    def __init__(
        self,
        port: int,
        upstream: tuple[socket.AddressFamily, str, int],
        connect_timeout: float,
        fault: Fault,
        counters: _Counters,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self.fault = fault
        self.counters = counters
        #: Set, then replaced, at each switch: waits for a deadline also end on a switch.
        self.switched = asyncio.Event()
        self.stopping = asyncio.Event()
        self.listener: socket.socket | None = None
        self.connections: set[_Connection] = set()

    async def run(self, listener: socket.socket, started: Future[None]) -> None:
        """Serve until :meth:`FaultProxy.close`, then close every socket."""
        self.loop.set_exception_handler(self._on_loop_error)
        if self.fault.kind == "refuse":  # switched to before start
            listener.close()
        else:
            self._listen(listener)
        started.set_result(None)
        try:
            await self.stopping.wait()
        finally:
            await self._shutdown()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.counters.record(
            error if isinstance(error, BaseException) else RuntimeError(context["message"])
        )

    def _listen(self, listener: socket.socket) -> None:
        self.listener = listener
        self.loop.add_reader(listener.fileno(), self._accept, listener)

    def _stop_listening(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            self.loop.remove_reader(listener.fileno())
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        """Accept what waits, in a plain callback: an accepted socket is owned at once.

        (A task awaiting ``sock_accept`` could be cancelled between the accept
        and its next step, leaking the socket it had just accepted.)
        """
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: the test should hear of it
                self.counters.record(exc)
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(client)
            self.connections.add(conn)
            self.counters.add("accepted")
            self.counters.add("open")
            if self.fault.kind == "reset":
                self._reset(conn)
            else:
                conn.task = self.loop.create_task(self._serve(conn))

    async def apply(self, fault: Fault) -> None:
        """Switch the fault; wake every wait so it reconsiders under the new one."""
        self.fault = fault
        switched, self.switched = self.switched, asyncio.Event()
        switched.set()
        if fault.kind == "refuse":
            self._stop_listening()
        elif self.listener is None:
            self._listen(_listening_socket(self.port))
        if fault.kind == "reset":
            for conn in list(self.connections):
                self._reset(conn)
            await self._finish(list(self.connections))

    def _reset(self, conn: _Connection) -> None:
        if conn.reset:
            return
        conn.reset = True
        self.counters.add("reset")
        if conn.task is None:
            self._forget(conn)
        else:
            conn.task.cancel()  # its ``finally`` closes the sockets, with an RST

    def _forget(self, conn: _Connection) -> None:
        """Close a connection's sockets and stop counting it (once)."""
        if conn in self.connections:
            self.connections.discard(conn)
            conn.close()
            self.counters.add("open", -1)

    async def _finish(self, conns: list[_Connection]) -> None:
        """Wait (bounded) for cancelled handlers; close what a handler never got to close.

        A task cancelled before its first step never runs its ``finally``.
        """
        tasks = [conn.task for conn in conns if conn.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_TIMEOUT)
        for conn in conns:
            if conn.task is None or conn.task.done():
                self._forget(conn)

    async def _shutdown(self) -> None:
        self._stop_listening()
        conns = list(self.connections)
        for conn in conns:
            if conn.task is not None:
                conn.task.cancel()
        await self._finish(conns)

    async def _serve(self, conn: _Connection) -> None:
        try:
            await self._connect_and_pipe(conn)
        except* OSError:
            pass  # a peer went away or refused: its doing, not the proxy's
        except* Exception as group:
            self.counters.record(group)
        finally:
            self._forget(conn)

    async def _connect_and_pipe(self, conn: _Connection) -> None:
        family, host, port = self.upstream
        upstream = socket.socket(family, socket.SOCK_STREAM)
        conn.upstream = upstream
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.loop.sock_connect(upstream, (host, port))
        except OSError:
            self.counters.add("upstream_failures")
            raise
        to_upstream: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)
        to_client: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_CHUNKS)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._receive(conn.client, to_upstream, "to_upstream"))
            group.create_task(self._deliver(conn, upstream, to_upstream, "to_upstream"))
            group.create_task(self._receive(upstream, to_client, "to_client"))
            group.create_task(self._deliver(conn, conn.client, to_client, "to_client"))

    async def _receive(
        self,
        sock: socket.socket,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        direction: Direction,
    ) -> None:
        """Read until the end of the stream; queue each chunk with its arrival time."""
        received, _ = _COUNTERS[direction]
        while data := await self.loop.sock_recv(sock, _READ_SIZE):
            self.counters.add(received, len(data))
            if self.fault.kind != "black_hole":
                await queue.put((self.loop.time(), data))
        await queue.put(None)

    async def _deliver(
        self,
        conn: _Connection,
        sock: socket.socket,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        direction: Direction,
    ) -> None:
        """Send queued chunks in order under the current fault; pass on the end of the stream."""
        while (item := await queue.get()) is not None:
            arrived, data = item
            await self._send(conn, sock, direction, arrived, data)
        while self.fault.kind == "black_hole":  # not even a FIN comes out of a black hole
            await _until_switch(self.switched, None)
        sock.shutdown(socket.SHUT_WR)

    async def _send(
        self,
        conn: _Connection,
        sock: socket.socket,
        direction: Direction,
        arrived: float,
        data: bytes,
    ) -> None:
        _, sent = _COUNTERS[direction]
        while data:
            fault, switched = self.fault, self.switched
            if fault.kind in ("black_hole", "reset"):
                return  # dropped: see the module's docstring
            if fault.kind == "latency" and direction in fault.directions:
                wait = arrived + fault.seconds - self.loop.time()
                if wait > 0:
                    await _until_switch(switched, wait)
                    continue
            if fault.kind == "slow_drip" and direction == "to_client":
                wait = conn.drip_next - self.loop.time()
                if wait > 0:
                    await _until_switch(switched, wait)
                    continue
                piece, data = data[: fault.piece_size], data[fault.piece_size :]
                conn.drip_next = self.loop.time() + len(piece) / fault.bytes_per_second
            else:
                piece, data = data, b""
            await self.loop.sock_sendall(sock, piece)
            self.counters.add(sent, len(piece))


class FaultProxy:
    """A loopback TCP proxy in front of ``upstream_host:upstream_port`` with switchable faults.

    Use it as a context manager, or :meth:`start` and :meth:`close`. A proxy
    starts once; after :meth:`close` every socket is closed and its thread has
    ended. Fault switches are thread-safe; switching before :meth:`start`
    sets the fault the proxy starts with.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, connect_timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.connect_timeout = connect_timeout
        self._counters = _Counters()
        self._lifecycle = threading.Lock()  # start, switches and close, one at a time
        self._fault = Fault()
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: _Engine | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free port and serve from a thread of the proxy's own."""
        with self._lifecycle:
            if self._thread is not None or self._closed:
                raise RuntimeError("a FaultProxy starts once")
            # Resolved here, to a numeric address: the loop then needs no resolver thread.
            family, _, _, _, address = socket.getaddrinfo(
                self.upstream_host, self.upstream_port, type=socket.SOCK_STREAM
            )[0]
            upstream = (family, str(address[0]), int(address[1]))
            listener = _listening_socket(0)
            self._port = int(listener.getsockname()[1])
            started: Future[None] = Future()
            self._thread = threading.Thread(
                target=self._run,
                args=(listener, upstream, started),
                name=f"fault-proxy:{self._port}",
                daemon=True,  # a proxy a test forgot to close cannot hang the interpreter's exit
            )
            self._thread.start()
            try:
                started.result(timeout=CALL_TIMEOUT)
            except BaseException:
                self._closed = True
                self._thread.join(CALL_TIMEOUT)
                raise
            return self

    def _run(
        self,
        listener: socket.socket,
        upstream: tuple[socket.AddressFamily, str, int],
        started: Future[None],
    ) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._engine = _Engine(
                self.port, upstream, self.connect_timeout, self._fault, self._counters
            )
            await self._engine.run(listener, started)

        try:
            asyncio.run(main())
        except BaseException as exc:
            listener.close()
            if not started.done():
                started.set_exception(exc)
            else:
                self._counters.record(exc)

    def close(self) -> None:
        """Close the listener and every connection; return once the thread has ended."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            thread, loop, engine = self._thread, self._loop, self._engine
            if thread is None:
                return
            if loop is not None and engine is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(engine.stopping.set)
            thread.join(CALL_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"{thread.name} did not end within {CALL_TIMEOUT} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- where it listens ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy has not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def url_for(self, scheme: str, path: str | None = None) -> str:
        """A URL to the proxy: ``redis`` gets ``/0``, ``mongodb`` ``/?directConnection=true``.

        A direct connection keeps pymongo on the proxy's address instead of the
        addresses the server announces.
        """
        if path is None:
            path = _URL_PATHS.get(scheme, "")
        return f"{scheme}://{HOST}:{self.port}{path}"

    # -- faults ----------------------------------------------------------------------------

    @property
    def fault(self) -> Fault:
        return self._fault

    def pass_through(self) -> None:
        """Forward at once; release what latency or drip held back."""
        self._switch(Fault())

    def latency(self, seconds: float, *, direction: Directions = "both") -> None:
        """Hold each chunk ``seconds`` after its arrival, in order (both directions by default)."""
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {seconds!r}")
        directions: frozenset[Direction] = _BOTH if direction == "both" else frozenset([direction])
        self._switch(Fault("latency", seconds=seconds, directions=directions))

    def black_hole(self) -> None:
        """Accept and read, forward and answer nothing; what is read meanwhile is dropped."""
        self._switch(Fault("black_hole"))

    def reset(self) -> None:
        """Abort every open connection with an RST now, and each new one once accepted."""
        self._switch(Fault("reset"))

    def slow_drip(self, bytes_per_second: float, *, piece_size: int | None = None) -> None:
        """Let the upstream's replies out ``piece_size`` bytes at a time, at ``bytes_per_second``.

        By default a piece is a fiftieth of a second's worth (at least a byte).
        """
        if not 0 < bytes_per_second < float("inf"):
            raise ValueError(f"bytes_per_second must be positive, got {bytes_per_second!r}")
        if piece_size is None:
            piece_size = max(1, int(bytes_per_second / _DRIP_PIECES_PER_SECOND))
        if piece_size < 1:
            raise ValueError(f"piece_size must be at least 1, got {piece_size!r}")
        self._switch(Fault("slow_drip", bytes_per_second=bytes_per_second, piece_size=piece_size))

    def refuse(self) -> None:
        """Close the port (ECONNREFUSED for new clients); open connections pass through."""
        self._switch(Fault("refuse"))

    def _switch(self, fault: Fault) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("switch faults from the test, not from the proxy's own thread")
        with self._lifecycle:
            self._fault = fault
            if self._closed or self._loop is None or self._engine is None:
                return  # not started (it starts with this fault) or closed
            self._call(self._engine.apply(fault))

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            future.result(timeout=CALL_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise

    # -- counters --------------------------------------------------------------------------

    def stats(self) -> ProxyStats:
        return self._counters.snapshot()

    def wait_for_stats(
        self, predicate: Callable[[ProxyStats], bool], timeout: float = CALL_TIMEOUT
    ) -> ProxyStats:
        """Block until ``predicate(stats)`` holds, e.g. ``lambda s: s.open == 0``; bounded."""
        return self._counters.wait_for(predicate, timeout)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the proxy (a peer going away is expected, not here)."""
        return list(self._counters.errors)


@pytest.fixture
def redis_fault_proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the session's (flushed) redis-server, passing through.

    Closed after the test, which fails if the proxy met an unexpected error.
    """
    with FaultProxy(HOST, redis_server.port) as proxy:
        yield proxy
    assert not proxy.errors, f"the fault proxy failed: {proxy.errors!r}"
