"""However an example server stops, nothing it started outlives it (issue 7, item 11).

Each example runs as a user starts it, in a process group of its own, on
its embedded database (an nx-27017 behind a watchdog); once ``/homepage``
answers, every process descending from the server is recorded from
``/proc``. The server is then stopped one way: Ctrl-C (SIGINT to the
server), SIGTERM to the server, SIGTERM to its process group (``kill %1``,
``timeout``, systemd), or SIGKILL. Within :data:`GONE_WITHIN` seconds every
recorded process must be gone (``tests/processes.py``: pid and start time),
and the server's private directory (pid file, log) removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal

import httpx
import pytest

from http_servers import HOST, ROOT
from http_servers import command as server_command
from processes import HAS_PROC, Proc, alive, descendants, survivors
from redis_server import free_port

pytestmark = [
    pytest.mark.mongo,
    pytest.mark.http,
    pytest.mark.skipif(not HAS_PROC, reason="reads /proc"),
]

START_TIMEOUT: Final = 60.0
GONE_WITHIN: Final = 10.0

Stop = Literal["sigint", "sigterm", "sigterm-group", "sigkill"]
STOPS: Final[tuple[Stop, ...]] = ("sigint", "sigterm", "sigterm-group", "sigkill")


Server = Literal[
    "fastapi",
    "fastapi-workers",
    "django",
    "django-workers",
    "django-hypercorn",
    "django-hypercorn-workers",
]


def _command(framework: Server, port: int) -> list[str]:
    serve = [sys.executable, "-m", "examples.serve", "--host", HOST, "--port", str(port)]
    if framework == "fastapi":  # the documented way to start it: Ctrl-C stops it
        return serve
    if framework == "fastapi-workers":  # ./scripts/run --workers 2
        return [*serve, "--workers", "2"]
    if framework == "django-workers":  # ./scripts/run --app django --workers 2
        return [*serve, "--app", "django", "--workers", "2"]
    if framework == "django-hypercorn":  # hypercorn: Lifespan's process guard at work
        return server_command("django", port, server="hypercorn")
    if framework == "django-hypercorn-workers":  # hypercorn --workers 2: a database each
        return server_command("django", port, workers=2, server="hypercorn")
    return server_command("django", port)  # uvicorn examples.django_app.asgi:application


def _environment() -> dict[str, str]:
    """The embedded defaults (no MONGODB_URL, no Redis), with a small seed to start fast."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MONGODB_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
        and not k.startswith("BATCHPAGE_")
    }
    # /debug/vitals names the worker that answered: every worker is seen serving.
    env.update(BATCHPAGE_PRODUCTS="200", PYTHONUNBUFFERED="1", BATCHPAGE_DEBUG_VITALS="1")
    return env


@pytest.fixture
def reaper() -> Iterator[list[Proc]]:
    """Processes to SIGKILL after the test whatever happened, so a failure leaks nothing."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        if alive(proc):
            os.kill(proc.pid, signal.SIGKILL)


def _wait_until_serving(
    process: subprocess.Popen[bytes], url: str, log: Path, *, workers: int
) -> None:
    """Until ``/homepage`` answers 200, and every one of ``workers`` has answered.

    A worker still starting when its server is killed has no guard yet; the
    test is of a running server, so each worker must be seen to serve (its
    pid, from ``/debug/vitals``, asked on new connections).
    """
    deadline = time.monotonic() + START_TIMEOUT
    serving: set[int] = set()
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}):\n{_tail(log)}")
            try:
                if client.get("/homepage", params={"limit": 1}).status_code == 200:
                    vitals = client.get("/debug/vitals", headers={"Connection": "close"})
                    serving.add(vitals.json()["pid"])
                    if len(serving) == workers:
                        return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{len(serving)} of {workers} workers served /homepage within "
                    f"{START_TIMEOUT:g} s:\n{_tail(log)}"
                )
            time.sleep(0.1)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes], how: Stop) -> None:
    if how == "sigint":
        process.send_signal(signal.SIGINT)
    elif how == "sigterm":
        process.send_signal(signal.SIGTERM)
    elif how == "sigterm-group":
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.kill()


@pytest.mark.parametrize("how", STOPS)
@pytest.mark.parametrize(
    "framework",
    [
        "fastapi",
        "fastapi-workers",
        "django",
        "django-workers",
        "django-hypercorn",
        "django-hypercorn-workers",
    ],
)
def test_nothing_outlives_the_example_server(
    framework: Server, how: Stop, tmp_path: Path, reaper: list[Proc]
) -> None:
    """The server and every process it started (nx-27017, its watchdog) are gone after the stop."""
    with _serving(framework, tmp_path, reaper) as (process, started, log):
        _stop(process, how)
        left = survivors(started, within=GONE_WITHIN)
        assert not left, f"still running {GONE_WITHIN:g} s after {how}: {left}\n{_tail(log)}"
        process.wait(timeout=GONE_WITHIN)  # the server itself ends as well


def test_a_dead_hypercorn_worker_ends_the_server_and_all_it_started(
    tmp_path: Path, reaper: list[Proc]
) -> None:
    """SIGKILL one of hypercorn's workers: hypercorn stops the others and exits; nothing is left.

    hypercorn does not start a worker again (uvicorn's supervisor does): it
    SIGTERMs the other workers and exits, with status 0, so a supervisor
    must restart it whatever its status. The dead worker's embedded
    database ends through its watchdog, the others' through the lifespan.
    """
    with _serving("django-hypercorn-workers", tmp_path, reaper) as (process, started, log):
        workers = [p for p in started if p.ppid == process.pid and "spawn_main" in p.cmdline]
        assert len(workers) == 2, started
        os.kill(workers[0].pid, signal.SIGKILL)
        assert process.wait(timeout=GONE_WITHIN) == 0  # hypercorn's status hides the death
        left = survivors(started, within=GONE_WITHIN)
        assert not left, f"still running {GONE_WITHIN:g} s after the kill: {left}\n{_tail(log)}"


@contextmanager
def _serving(
    framework: Server, tmp_path: Path, reaper: list[Proc]
) -> Iterator[tuple[subprocess.Popen[bytes], list[Proc], Path]]:
    """The server, answering ``/homepage``, and every process under it then.

    After the block, the directories of its embedded databases must be gone.
    """
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _command(framework, port),
            cwd=ROOT,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group (and no Ctrl-C from pytest's)
        )
    workdirs: list[Path] = []
    try:
        workers = 2 if framework.endswith("-workers") else 1
        _wait_until_serving(process, f"http://{HOST}:{port}", log, workers=workers)
        started = descendants(process.pid)
        reaper.extend(started)
        argvs = [p.cmdline.split() for p in started]
        # nx-27017 is a Python console script: "python .../nx-27017 --db memory ...".
        servers = [argv for argv in argvs if any(Path(a).name == "nx-27017" for a in argv[:2])]
        # hypercorn: one per worker's lifespan; examples.serve: one, shared by its workers
        expected = workers if framework == "django-hypercorn-workers" else 1
        assert len(servers) == expected, f"not {expected} nx-27017 under the server: {started}"
        workdirs += [Path(argv[argv.index("--pid-file") + 1]).parent for argv in servers]
        yield process, started, log
        assert not [d for d in workdirs if d.exists()], "the server's directory is left behind"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for workdir in workdirs:  # this server's own (leftovers of a failure; the reaper kills)
            shutil.rmtree(workdir, ignore_errors=True)
