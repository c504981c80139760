"""Run a command that must not outlive the process that started this one.

``python watchdog.py [--remove DIR] -- COMMAND [ARG...]`` starts COMMAND as
its child, prints the child's pid on a line of stdout, then waits for one
of three things:

* **EOF on stdin.** The parent holds the pipe's write end and never writes,
  so EOF means it closed the pipe or died, however it died (SIGKILL
  included: the kernel closes a dead process's descriptors). The child is
  stopped, ``DIR`` removed, and the watchdog exits 0.
* **SIGTERM, SIGINT or SIGHUP** to the watchdog: the same.
* **The child's exit**: the watchdog exits with its status (128 + N for
  signal N) and leaves ``DIR`` to the parent, which still reads the log there.

Stopping is SIGTERM, two seconds' grace (nx-27017 is slow to heed SIGTERM),
then SIGKILL, and the child is reaped. Should the watchdog itself be
SIGKILLed, the child gets SIGKILL from the kernel (``PR_SET_PDEATHSIG``,
Linux). Why a process of its own rather than PR_SET_PDEATHSIG on the server
itself: the death signal follows the *thread* that forked, and
:class:`examples.homepage.mongo.EmbeddedMongo` starts servers from worker
threads that come and go; and a watchdog gives the server its grace period.

Only the standard library is used, and the file runs as a script
(``python -I path/to/watchdog.py``): it needs nothing importable from the
parent's working directory.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from types import FrameType
from typing import Final

#: Seconds between SIGTERM and SIGKILL.
GRACE: Final = 2.0
_PR_SET_PDEATHSIG: Final = 1
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _wake(signum: int, frame: FrameType | None) -> None:
    """Nothing: the signal's number, written to the wakeup fd, ends :func:`_wait`."""


def _die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child SIGKILL when ``parent`` dies (Linux; else None)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal
            os.kill(os.getpid(), signal.SIGKILL)

    return set_death_signal


def _wait(child: subprocess.Popen[bytes], wakeup: int) -> bool:
    """Wait for EOF on stdin or a stop signal (True), or the child's exit (False).

    Signal handlers only wake this wait, through ``wakeup`` (the read end of
    :func:`signal.set_wakeup_fd`'s pipe): a handler that raised could cut the
    child's stop short.
    """
    try:
        pidfd: int | None = os.pidfd_open(child.pid)  # readable when the child exits
    except (AttributeError, OSError):  # not Linux >= 5.3: poll the child instead
        pidfd = None
    stdin = sys.stdin.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(stdin, selectors.EVENT_READ)
        selector.register(wakeup, selectors.EVENT_READ)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while child.poll() is None:
                for key, _ in selector.select(timeout=None if pidfd is not None else 0.5):
                    if key.fd == wakeup or (key.fd == stdin and not os.read(stdin, 4096)):
                        return True
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _terminate(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, :data:`GRACE` seconds, then SIGKILL; reap it."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    remove: str | None = None
    if args[:1] == ["--remove"] and len(args) > 1:
        remove, args = args[1], args[2:]
    if args[:1] != ["--"] or len(args) < 2:
        print("usage: watchdog.py [--remove DIR] -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    wakeup, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _wake)
    child = subprocess.Popen(
        args[1:],
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),  # the parent's log; stdout carries the pid alone
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with(os.getpid()),
    )
    try:
        print(child.pid, flush=True)
        stopped = _wait(child, wakeup)
    finally:
        _terminate(child)
    if stopped:
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)
        return 0
    code = child.returncode
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
