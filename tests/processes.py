"""Processes as ``/proc`` shows them, for tests of what outlives what.

A process is named by its pid *and* its start time, so a pid the kernel
reused is not mistaken for a survivor; a zombie counts as gone (its parent,
after a SIGKILL often pid 1, may never reap it).
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs

#: Whether this system has a Linux-style /proc to read.
HAS_PROC = Path("/proc/self/stat").exists()


@attrs.frozen
class Proc:
    """One process: its pid and start time name it uniquely."""

    pid: int
    ppid: int
    started: int  # clock ticks after boot
    cmdline: str


def _read(pid: int) -> tuple[Proc, str] | None:
    """The process and its state letter, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces and parentheses itself.
    fields = stat[stat.rindex(")") + 2 :].split()
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return Proc(pid, int(fields[1]), int(fields[19]), cmdline), fields[0]


def process(pid: int) -> Proc | None:
    """The process with this pid now, if there is one."""
    found = _read(pid)
    return None if found is None else found[0]


def descendants(root: int) -> list[Proc]:
    """Every process under ``root``, at any depth (whatever session or group it is in)."""
    found = (_read(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    table = [proc for proc, _ in filter(None, found)]
    result: list[Proc] = []
    parents = {root}
    while children := [p for p in table if p.ppid in parents and p not in result]:
        result.extend(children)
        parents = {p.pid for p in children}
    return result


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) & (1 << (signum - 1)))


def alive(proc: Proc) -> bool:
    """Still running: the same process (pid and start time), and not a zombie."""
    now = _read(proc.pid)
    return now is not None and now[0].started == proc.started and now[1] not in "ZX"


def survivors(procs: list[Proc], within: float) -> list[Proc]:
    """Those of ``procs`` still alive after waiting up to ``within`` seconds for all to end."""
    deadline = time.monotonic() + within
    while (left := [p for p in procs if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
