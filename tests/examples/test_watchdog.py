"""The watchdog (``examples/homepage/watchdog.py``): its child never outlives its parent.

Real processes, nothing mocked: a parent process starts the watchdog over
a child, the test ends the parent (or the watchdog) and checks, from
``/proc``, that the child is gone within a bounded time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from examples.homepage.mongo import WATCHDOG
from examples.homepage.watchdog import GRACE

from processes import HAS_PROC, Proc, alive, process, survivors

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="reads /proc")

GONE_WITHIN: Final = GRACE + 8.0

#: A child that says it is ready (a file), then sleeps; a stubborn one ignores SIGTERM first.
CHILD: Final = "import signal, sys, time\n{ignore}open(sys.argv[1], 'w').close()\ntime.sleep(60)\n"

#: The parent: starts the watchdog as EmbeddedMongo does, prints both pids, sleeps.
PARENT: Final = """
import subprocess, sys, time
watchdog = subprocess.Popen(
    [sys.executable, "-I", sys.argv[1], "--remove", sys.argv[2], "--", *sys.argv[3:]],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
)
print(watchdog.pid, watchdog.stdout.readline().decode().strip(), flush=True)
time.sleep(60)
"""


def _child(ready: Path, *, stubborn: bool = False) -> list[str]:
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if stubborn else ""
    return [sys.executable, "-c", CHILD.format(ignore=ignore), str(ready)]


@pytest.fixture
def reaper() -> Iterator[list[Proc]]:
    """Processes to SIGKILL after the test whatever happened, so a failure leaks nothing."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        if alive(proc):
            os.kill(proc.pid, signal.SIGKILL)


def _start_parent(
    workdir: Path, reaper: list[Proc], *, stubborn: bool = False
) -> tuple[subprocess.Popen[bytes], Proc, Proc]:
    """The parent process, the watchdog and the watchdog's child, all running and ready."""
    ready = workdir.parent / f"{workdir.name}.ready"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PARENT,
            str(WATCHDOG),
            str(workdir),
            *_child(ready, stubborn=stubborn),
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert parent.stdout is not None
    with parent.stdout:
        line = parent.stdout.readline().decode().split()
    watchdog, child_proc = (process(int(pid)) for pid in line)
    assert watchdog is not None
    assert child_proc is not None
    reaper.extend([child_proc, watchdog])
    assert child_proc.ppid == watchdog.pid
    deadline = time.monotonic() + GONE_WITHIN
    while not ready.exists():
        assert time.monotonic() < deadline, "the child never got ready"
        time.sleep(0.01)
    return parent, watchdog, child_proc


@pytest.mark.parametrize("stubborn", [False, True], ids=["child", "stubborn-child"])
def test_parent_sigkilled_stops_the_child(
    stubborn: bool, tmp_path: Path, reaper: list[Proc]
) -> None:
    """SIGKILL of the parent closes the pipe: the watchdog stops the child (SIGKILL after the
    grace if SIGTERM is ignored), removes the directory, and exits."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    parent, watchdog, child = _start_parent(workdir, reaper, stubborn=stubborn)
    parent.kill()
    parent.wait()
    assert survivors([child, watchdog], within=GONE_WITHIN) == []
    assert not workdir.exists()


def test_sigterm_to_the_watchdog_stops_the_child(tmp_path: Path, reaper: list[Proc]) -> None:
    """The watchdog stops its child on SIGTERM as on EOF."""
    parent, watchdog, child = _start_parent(tmp_path / "server", reaper)
    try:
        os.kill(watchdog.pid, signal.SIGTERM)
        assert survivors([child, watchdog], within=GONE_WITHIN) == []
    finally:
        parent.kill()
        parent.wait()


def test_watchdog_sigkilled_takes_the_child_along(tmp_path: Path, reaper: list[Proc]) -> None:
    """Even the watchdog's SIGKILL leaves no child behind (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    parent, watchdog, child = _start_parent(tmp_path / "server", reaper)
    try:
        os.kill(watchdog.pid, signal.SIGKILL)
        assert survivors([child], within=GONE_WITHIN) == []
    finally:
        parent.kill()
        parent.wait()


def test_the_childs_exit_status_is_the_watchdogs(tmp_path: Path) -> None:
    """A child that exits by itself ends the watchdog with its status; the directory stays."""
    child = [sys.executable, "-c", "import sys; print('bye', file=sys.stderr); sys.exit(3)"]
    read, write = os.pipe()  # stdin: open while the child runs (EOF would stop it)
    try:
        result = subprocess.run(
            [sys.executable, "-I", str(WATCHDOG), "--remove", str(tmp_path), "--", *child],
            stdin=read,
            capture_output=True,
            timeout=GONE_WITHIN,
        )
    finally:
        os.close(read)
        os.close(write)
    assert result.returncode == 3
    assert result.stdout.strip().isdigit()  # the child's pid, one line
    assert b"bye" in result.stderr
    assert tmp_path.exists()


@pytest.mark.mongo
def test_embedded_mongo_ends_with_a_sigkilled_parent(reaper: list[Proc]) -> None:
    """The embedded server started by a process that is SIGKILLed is stopped, its files removed."""
    script = (
        "import os\n"
        "from examples.homepage.mongo import EmbeddedMongo\n"
        "server = EmbeddedMongo()\n"
        "server.start()\n"
        "print(server.pid, server.watchdog_pid, server._workdir.name, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    server_pid, watchdog_pid, workdir = result.stdout.decode().split()
    procs = [p for p in (process(int(server_pid)), process(int(watchdog_pid))) if p is not None]
    reaper.extend(procs)
    assert survivors(procs, within=GONE_WITHIN) == []
    assert not Path(workdir).exists()
