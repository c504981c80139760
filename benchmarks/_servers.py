"""The benchmarks' servers: redis-server, a Redis Cluster and the homepage apps, on loopback.

Each binds 127.0.0.1 on a port the OS picked, and is a context manager that
stops its processes however the block ends (SIGTERM, a short grace, then
SIGKILL). Nothing here is a mock: the benchmarks speak the real protocols.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from examples.redis_cluster import RedisClusterServer

import attrs

HOST: Final = "127.0.0.1"
ROOT: Final = Path(__file__).resolve().parent.parent
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 10.0

# What the developer's shell sets for the apps must not leak into a benchmark.
_APP_VARIABLES = ("MONGODB_URL", "REDIS_URL", "ROLLOUT_PERCENT", "DJANGO_SETTINGS_MODULE")


class ServerError(RuntimeError):
    """A benchmark server did not start or answer."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after the grace; reap."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A ``redis-server`` (no persistence) for the block; yields its ``redis://`` URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise ServerError("redis-server is not installed (apt-get install redis-server)")
    import redis

    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        port = free_port()
        log_path = Path(directory) / "redis.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    executable,
                    "--port",
                    str(port),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    directory,
                    "--daemonize",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops it
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise ServerError(f"redis-server exited:\n{_tail(log_path)}")
                try:
                    with redis.Redis(host=HOST, port=port, socket_timeout=0.5) as client:
                        if client.ping():
                            break
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(f"redis-server did not answer:\n{_tail(log_path)}")
                time.sleep(0.01)
            yield f"redis://{HOST}:{port}/0"
        finally:
            _stop(process)


@contextlib.contextmanager
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A Redis Cluster of 3 masters and 3 replicas (:mod:`examples.redis_cluster`) for the block.

    Start it from the main thread: each node dies with the thread that started it.
    """
    from examples.redis_cluster import ClusterError, RedisClusterServer

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as directory:
        try:
            cluster = RedisClusterServer(Path(directory))
            cluster.start()
        except ClusterError as error:
            raise ServerError(str(error)) from error
        try:
            yield cluster
        finally:
            cluster.stop()


#: The apps, by name: their ASGI import path (a factory for FastAPI).
APPS: Final[dict[str, str]] = {
    "fastapi": "examples.fastapi_app.app:create_app",
    "django": "examples.django_app.asgi:application",
    # The same page as a team writes it today (examples/peers), for bench_peers.
    "fastapi-peer": "examples.peers.fastapi_app:create_app",
    "django-peer": "examples.peers.django_asgi:application",
}
#: The server stacks an app can run on.
STACKS: Final = ("uvicorn", "uvicorn-uvloop", "hypercorn", "granian")
#: What the examples run each app on (``examples.serve``, ``./scripts/run``, the docs),
#: chosen on ``bench_stack.py``'s figures.
EXAMPLE_STACKS: Final[Mapping[str, str]] = {
    "fastapi": "uvicorn-uvloop",
    "django": "uvicorn-uvloop",
}


def server_command(app: str, stack: str, port: int) -> list[str]:
    """One worker of ``app`` on ``stack``, bound to loopback ``port``, as a user would start it.

    ``uvicorn`` is plain uvicorn (asyncio loop, h11); ``uvicorn-uvloop`` is
    uvicorn with uvloop and httptools; ``granian`` is granian's ASGI interface
    (needs ``pip install granian``).
    """
    target = APPS[app]
    factory = ["--factory"] if app.startswith("fastapi") else []
    if stack in ("uvicorn", "uvicorn-uvloop"):
        flavour = (
            ["--loop", "asyncio", "--http", "h11"]
            if stack == "uvicorn"
            else ["--loop", "uvloop", "--http", "httptools"]
        )
        return [
            sys.executable, "-m", "uvicorn", target, *factory, *flavour,
            "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
    if stack == "hypercorn":
        return [
            sys.executable, "-m", "hypercorn", target,
            "--bind", f"{HOST}:{port}", "--log-level", "WARNING",
        ]  # fmt: skip
    if stack == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", *factory,
            "--host", HOST, "--port", str(port), "--workers", "1", "--log-level", "warning",
            "--no-ws", target,
        ]  # fmt: skip
    raise ValueError(f"unknown server stack {stack!r}; one of {', '.join(STACKS)}")


class AppServer:
    """One homepage app on one server stack, configured only by its environment."""

    def __init__(
        self,
        label: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        workers: int = 1,
        app: str = "fastapi",
        stack: str = "uvicorn",
    ) -> None:
        if workers > 1 and stack != EXAMPLE_STACKS[app]:
            raise ValueError("several workers: on the examples' stack (examples.serve) only")
        self.label = label
        self.workers = workers
        self.app = app
        self.stack = stack
        self.env = dict(env)
        self.log_path = log_dir / f"{label}.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            # Several workers the way users start them (examples.serve sets the
            # TCP_NODELAY that uvicorn's own --workers socket lacks).
            command = (
                [
                    sys.executable,
                    "-m",
                    "examples.serve",
                    "--app",
                    self.app,
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ]
                if self.workers > 1
                else server_command(self.app, self.stack, self.port)
            )
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_ready(self, deadline: float) -> None:
        """Poll ``/rollout`` until it answers 200."""
        process = self.process
        assert process is not None
        while True:
            if process.poll() is not None:
                raise ServerError(
                    f"{self.label} exited with status {process.returncode}:\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/rollout", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.label} did not answer within {START_TIMEOUT:g} s:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        _stop(process)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server has used so far: its process and their children.

        Exited threads count (the kernel keeps their time in the process's);
        a server's worker processes (granian's, uvicorn's ``--workers``) are
        its descendants, found in ``/proc``. Linux only.
        """
        assert self.process is not None
        return process_tree_cpu(self.process.pid)


_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "


def process_tree_cpu(root: int) -> float:
    """Seconds of CPU (user + system) used by ``root`` and every living descendant."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])  # ppid
    tree, grew = {root}, True
    while grew:
        added = {pid for pid, ppid in parents.items() if ppid in tree and pid not in tree}
        tree |= added
        grew = bool(added)
    total = 0
    for pid in tree:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


def app_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the apps' own variables, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _APP_VARIABLES and not k.startswith("BATCHPAGE_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


@attrs.frozen
class ServerSpec:
    """What one benchmark server runs: its environment, app and stack."""

    env: Mapping[str, str]
    app: str = "fastapi"
    stack: str = "uvicorn"
    workers: int = 1


@contextlib.contextmanager
def started(specs: Mapping[str, ServerSpec]) -> Iterator[dict[str, AppServer]]:
    """One server per ``label: spec``, started together; all stopped afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-apps-") as log_dir,
        contextlib.ExitStack() as exits,
    ):
        servers = {
            label: AppServer(
                label,
                spec.env,
                Path(log_dir),
                workers=spec.workers,
                app=spec.app,
                stack=spec.stack,
            )
            for label, spec in specs.items()
        }
        for server in servers.values():
            exits.callback(server.stop)
            server.start()
        deadline = time.monotonic() + START_TIMEOUT
        for server in servers.values():
            server.wait_until_ready(deadline)
        yield servers


@contextlib.contextmanager
def app_servers(
    envs: Mapping[str, Mapping[str, str]],
    *,
    workers: int = 1,
    app: str = "fastapi",
    stack: str | None = None,
) -> Iterator[dict[str, AppServer]]:
    """One server of ``app`` per ``label: environment`` (on the examples' stack by default)."""
    stack = EXAMPLE_STACKS[app] if stack is None else stack
    specs = {label: ServerSpec(env, app, stack, workers) for label, env in envs.items()}
    with started(specs) as servers:
        yield servers
