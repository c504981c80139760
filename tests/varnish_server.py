"""A real ``varnishd`` (Debian's varnish) for tests: a shared HTTP cache on loopback.

:class:`VarnishServer` runs the shipped VCL (``examples/varnish/homepage.vcl``)
with only its backend's port changed to the test's app server, in the
foreground (``-F``) as a child of the test, with a private working
directory (``-n``) in the test's tmp directory: its shared-memory log and
counters live there, and ``varnishstat -n DIR`` reads them. No admin port
(``-T none``), no privilege separation (``-j none``: the workdir is the
test's own, whoever runs it), small storage and thread pool. ``stop()``
ends the manager and its cache process (they share the process group the
server was started in); nothing is left running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Final

import httpx
import pytest

from redis_server import free_port

ROOT: Final = Path(__file__).resolve().parent.parent
#: The VCL a team would deploy, as shipped.
HOMEPAGE_VCL: Final = ROOT / "examples" / "varnish" / "homepage.vcl"
HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 30.0  # the VCL is compiled to C and built with cc at start-up
STOP_TIMEOUT: Final = 10.0

# The backend's port in the shipped file: `.port = "8000";` inside `backend default`.
_BACKEND_PORT = re.compile(r'(backend default \{[^}]*?\.port = )"[0-9]+";', re.DOTALL)


def executable(name: str) -> str:
    """A varnish program: on the PATH, or in /usr/sbin (varnishd, for a user without it)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(
            f"{name} is not installed: the CDN tests need Debian's varnish "
            "(apt-get install varnish; scripts/test installs it)",
            pytrace=False,
        )
    return found


def with_backend_port(vcl: str, port: int) -> str:
    """The VCL with its default backend's port replaced; fails unless there is exactly one."""
    text, count = _BACKEND_PORT.subn(rf'\g<1>"{port}";', vcl)
    if count != 1:
        raise ValueError("the VCL must have one `backend default` with a `.port`")
    return text


class VarnishServer:
    """``varnishd`` in front of ``backend_port``, listening on a free loopback port."""

    def __init__(self, directory: Path, backend_port: int, *, vcl: Path = HOMEPAGE_VCL) -> None:
        self.varnishd = executable("varnishd")
        self.varnishstat = executable("varnishstat")
        self.directory = directory
        self.workdir = directory / "varnish"
        self.vcl_path = directory / vcl.name
        self.vcl_path.write_text(with_backend_port(vcl.read_text(), backend_port))
        self.log_path = directory / "varnishd.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0)

    def command(self) -> list[str]:
        return [
            self.varnishd,
            "-F",  # foreground: a child of the test, stopped by it
            "-j",
            "none",
            "-a",
            f"{HOST}:{self.port}",
            "-f",
            str(self.vcl_path),
            "-n",
            str(self.workdir),
            "-T",
            "none",
            "-s",
            "malloc,32m",
            "-l",
            "4m",
            "-p",
            "thread_pools=1",
            "-p",
            "thread_pool_min=10",
            "-p",
            "thread_pool_max=100",
        ]

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("varnishd is already running")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: the manager and its cache process
            )

    def wait_until_ready(self) -> None:
        """Until a request through Varnish reaches the app (``/rollout``, never stored)."""
        process = self.process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(
                        f"varnishd exited with status {process.returncode}:\n{self.log_tail()}",
                        pytrace=False,
                    )
                try:
                    if client.get("/rollout").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(
                        f"varnishd did not answer within {START_TIMEOUT:g} s:\n{self.log_tail()}",
                        pytrace=False,
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to the manager (it stops the cache process), then SIGKILL to the group."""
        process, self.process = self.process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the group is named by the manager's pid
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        # The cache process, should it have outlived its manager.
        deadline = time.monotonic() + STOP_TIMEOUT
        while _group_alive(group):
            if time.monotonic() > deadline:
                os.killpg(group, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
            time.sleep(0.05)

    def counters(self, *names: str) -> dict[str, int]:
        """Varnish's counters (``varnishstat -1 -j``), e.g. ``MAIN.backend_req``."""
        fields = [arg for name in names for arg in ("-f", name)]
        out = subprocess.run(
            [self.varnishstat, "-n", str(self.workdir), "-1", "-j", *fields],
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout
        counters = json.loads(out)["counters"]
        return {name: int(counters[name]["value"]) for name in names}

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"VarnishServer(url={self.url!r})"


def _group_alive(group: int) -> bool:
    """Whether a process of the group is left that is not a zombie."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False
