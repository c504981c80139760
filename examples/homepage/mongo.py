"""Where the homepage's MongoDB is: ``MONGODB_URL``, or an embedded server.

The embedded default is ``nx-27017`` (a MongoDB wire-protocol server on
SQLite, from PyPI), started on a free loopback port with an in-memory
database. The sources talk to it over the wire with pymongo's
``AsyncMongoClient``, exactly as they would to MongoDB.

Facts about nx-27017 this module works around:

* it writes a pid file (default ``/tmp/nx_27017.pid``) and refuses to start
  while the process named there lives, so every instance gets its own
  private directory for the pid file and its log;
* it does not exit promptly on SIGTERM, so it is given two seconds, then
  killed.

The server must not outlive the process that started it, however that
process ends (SIGKILL included), so it runs under a watchdog
(:mod:`examples.homepage.watchdog`): a small Python process holding the
read end of a pipe whose write end only this process has. When the write
end closes (:meth:`EmbeddedMongo.stop`, or this process's death: the kernel
closes a dead process's descriptors), the watchdog stops the server and exits.
The write end is close-on-exec and Popen's ``close_fds`` keeps it out of other
children; only a copy of this process forked without exec shares it.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

import anyio
import anyio.to_thread
import pymongo
import pymongo.errors
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

#: The database the homepage's collections live in.
DEFAULT_DB: Final = "homepage"

#: The environment variable naming a real MongoDB; unset or empty = embedded.
URL_ENV: Final = "MONGODB_URL"

#: The seed's connection pool.
POOL_SIZE: Final = 50

HOST: Final = "127.0.0.1"
EXECUTABLE: Final = "nx-27017"
#: The watchdog, run as a script: it must not depend on the working directory.
WATCHDOG: Final = Path(__file__).with_name("watchdog.py")
#: Seconds the watchdog gets to stop the server (two of grace, then SIGKILL).
STOP_TIMEOUT: Final = 10.0

Document: TypeAlias = dict[str, Any]
Client: TypeAlias = AsyncMongoClient[Document]
Database: TypeAlias = AsyncDatabase[Document]


class EmbeddedMongoError(RuntimeError):
    """nx-27017 is not installed, or did not answer in time."""


def connect(url: str) -> Client:
    """A client for the homepage: the seed's pool of 50, quick to give up on a dead server.

    Server selection gives up after 2 s instead of pymongo's 30 s: every
    section has its own, shorter timeout anyway, and a dead database should
    show as a failed section, not as requests piling up. Datetimes come back
    timezone-aware in UTC.
    """
    return AsyncMongoClient(
        url,
        maxPoolSize=POOL_SIZE,
        serverSelectionTimeoutMS=2000,
        connectTimeoutMS=2000,
        tz_aware=True,
        tzinfo=UTC,
        appname="batchpage-homepage",
    )


def find_executable() -> str:
    """The ``nx-27017`` console script: beside this interpreter, else on ``PATH``."""
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise EmbeddedMongoError(
            f"{EXECUTABLE} was found neither beside {sys.executable} nor on PATH: "
            f"install it (pip install nx-27017, or batchpage[examples]), "
            f"or set {URL_ENV} to a MongoDB server"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _release(
    watchdog: subprocess.Popen[bytes] | None, workdir: tempfile.TemporaryDirectory[str] | None
) -> None:
    """Close the watchdog's stdin (it stops the server and exits), reap it, remove the directory.

    Should the watchdog not exit in time, it is killed, and the server with
    it (it dies with its parent, see :mod:`examples.homepage.watchdog`).
    """
    try:
        if watchdog is not None:
            for pipe in (watchdog.stdin, watchdog.stdout):
                if pipe is not None:
                    pipe.close()
            try:
                watchdog.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait(timeout=STOP_TIMEOUT)
    finally:
        if workdir is not None:
            workdir.cleanup()


class _Exited(Exception):
    """The server process ended before it answered (often: the port was taken)."""


class EmbeddedMongo:
    """An nx-27017 server with an in-memory database on a free loopback port.

    Use it as an async context manager (``async with EmbeddedMongo() as m:``,
    then ``m.url``), a plain one, or with :meth:`start` and :meth:`stop`.
    Starting waits until a ``ping`` succeeds, at most ``startup_timeout``
    seconds; the data lives as long as the process.

    The server runs under a watchdog (see the module's docstring): :attr:`pid`
    is the nx-27017 server's, :attr:`watchdog_pid` the watchdog's, its parent.
    """

    def __init__(self, *, startup_timeout: float = 20.0, executable: str | None = None) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout!r}")
        self.startup_timeout = startup_timeout
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None  # the watchdog
        self._server_pid: int | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._port: int | None = None
        self._finalizer: weakref.finalize[..., EmbeddedMongo] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The nx-27017 server's pid (None when stopped)."""
        return self._server_pid

    @property
    def watchdog_pid(self) -> int | None:
        """The pid of the watchdog, the server's parent (None when stopped)."""
        return None if self._process is None else self._process.pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"mongodb://{HOST}:{self.port}"

    # -- lifetime ---------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it answers; blocks (use ``async with`` in async code)."""
        if self._process is not None:
            raise RuntimeError("this server is already started")
        executable = self._executable or find_executable()
        deadline = time.monotonic() + self.startup_timeout
        failure = ""
        # Another process may take the free port before nx-27017 binds it:
        # then it exits at once, and a new port is tried (three times at most).
        for _ in range(3):
            try:
                self._spawn(executable, _free_port(), deadline)
                self._wait_until_ready(deadline)
                return
            except _Exited as exc:
                failure = str(exc)
                self.stop()
                if time.monotonic() >= deadline:
                    break
            except BaseException:
                self.stop()
                raise
        raise EmbeddedMongoError(failure)

    def stop(self) -> None:
        """Stop the server (SIGTERM, two seconds' grace, then SIGKILL), then its watchdog."""
        if self._finalizer is not None:
            self._finalizer.detach()
        process, workdir = self._process, self._workdir
        self._finalizer = self._process = self._workdir = self._port = self._server_pid = None
        _release(process, workdir)

    def _spawn(self, executable: str, port: int, deadline: float) -> None:
        # The watchdog removes it once the server is stopped; cleanup() then finds it gone, fine.
        self._workdir = tempfile.TemporaryDirectory(prefix="nx-27017-")
        workdir = Path(self._workdir.name)
        self._port = port
        server = [
            executable,
            "--db",
            "memory",
            "-p",
            str(port),
            "--host",
            HOST,
            "--pid-file",
            str(workdir / "nx-27017.pid"),
            # Its log goes to stderr as well; one copy (in server.log) is enough.
            "--log-file",
            os.devnull,
        ]
        with (workdir / "server.log").open("wb") as log:
            self._process = subprocess.Popen(
                # -I: the watchdog imports nothing from the working directory.
                [sys.executable, "-I", str(WATCHDOG), "--remove", str(workdir), "--", *server],
                # The watchdog waits for EOF here. Popen's pipes are close-on-exec and
                # close_fds keeps them out of other children: only we hold the write end.
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # the server's pid, one line
                stderr=log,
                close_fds=True,
                # Ctrl-C in a terminal reaches us, not the server: stop() ends it.
                start_new_session=True,
            )
        # A server nobody stopped still ends with its object, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _release, self._process, self._workdir)
        self._server_pid = self._read_server_pid(deadline)

    def _read_server_pid(self, deadline: float) -> int | None:
        """The line the watchdog prints once the server is started (None: it printed none)."""
        process = self._process
        assert process is not None
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = process.stdout.readline() if ready else b""
        process.stdout.close()
        return int(line) if line.strip().isdigit() else None

    def _wait_until_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        probe: pymongo.MongoClient[Document] = pymongo.MongoClient(
            self.url, serverSelectionTimeoutMS=250, connectTimeoutMS=250, directConnection=True
        )
        try:
            while True:
                if process.poll() is not None:
                    raise _Exited(
                        f"{EXECUTABLE} exited with status {process.returncode} before "
                        f"answering on {self.url}; its log ends with:\n{self._log_tail()}"
                    )
                try:
                    probe.admin.command("ping")
                except pymongo.errors.PyMongoError:
                    pass
                else:
                    return
                if time.monotonic() >= deadline:
                    raise EmbeddedMongoError(
                        f"{EXECUTABLE} did not answer a ping on {self.url} within "
                        f"{self.startup_timeout:g} s; its log ends with:\n{self._log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            probe.close()

    def _log_tail(self, lines: int = 20) -> str:
        if self._workdir is None:
            return ""
        try:
            text = (Path(self._workdir.name) / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- context managers -------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Stopping must finish even when the surrounding scope is cancelled.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    def __repr__(self) -> str:
        state = f"url={self.url!r}, pid={self.pid}" if self._port is not None else "stopped"
        return f"EmbeddedMongo({state})"


@asynccontextmanager
async def mongo_url() -> AsyncIterator[str]:
    """``MONGODB_URL`` when set; otherwise an embedded server's url, for the block's duration."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    async with EmbeddedMongo() as server:
        yield server.url
