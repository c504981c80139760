"""A real Redis Cluster for tests: 3 masters and 3 replicas on loopback.

Six ``redis-server --cluster-enabled yes`` processes, each in a directory of
its own, joined by ``redis-cli --cluster create ... --cluster-replicas 1``.
A node's cluster bus listens on its port + 10000, so every port is below
55535 and its bus port is free too. ``cluster-node-timeout`` is short (2 s)
so a killed master is replaced by its replica within seconds.

``redis_cluster`` is one cluster for the session, emptied before each test;
``private_redis_cluster`` is a cluster of the test's own, for tests that
kill one of its nodes. Every process is stopped at the end: nothing is left
running, however the test ended.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster as SyncRedisCluster

NODES = 6
NODE_TIMEOUT_MS = 2000
_BUS_OFFSET = 10000
_MAX_PORT = 65535 - _BUS_OFFSET  # the bus port must exist too
_START_TIMEOUT = 10.0
_JOIN_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0


# Six servers must not outlive the test run, however it ends (SIGKILL
# included): util-linux's setpriv execs each with a parent-death signal. The
# fixtures start them from pytest's main thread, whose exit is the parent's.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT: tuple[str, ...] = (
    (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV and sys.platform == "linux" else ()
)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(count: int, *, taken: set[int] | None = None) -> list[int]:
    """``count`` free ports below 55535 whose cluster-bus port (+10000) is free too."""
    chosen: list[int] = []
    avoid = set(taken or ())
    for _ in range(10_000):  # bounded: the OS hands out free ports quickly
        if len(chosen) == count:
            return chosen
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port >= _MAX_PORT or port in avoid or port + _BUS_OFFSET in avoid:
            continue
        if not _bindable(port + _BUS_OFFSET):
            continue
        avoid.update((port, port + _BUS_OFFSET))
        chosen.append(port)
    raise RuntimeError(f"found only {len(chosen)} of {count} cluster ports")


class ClusterNode:
    """One ``redis-server`` of the cluster, in its own directory."""

    def __init__(self, executable: str, directory: Path, port: int) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *_DIE_WITH_PARENT,
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.directory / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    # Replicas sync at once, not after the default 5 s wait.
                    "--repl-diskless-sync-delay",
                    "0",
                    "--dir",
                    str(self.directory),
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def answers(self) -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node dies at once, without a word to the others."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(_STOP_TIMEOUT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)

    def log_tail(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""


class RedisClusterServer:
    """Six nodes (3 masters, 3 replicas) joined into one cluster on loopback."""

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if executable is None or cli is None:
            pytest.fail(
                "redis-server and redis-cli are needed for the cluster tests "
                "(apt-get install redis-server)",
                pytrace=False,
            )
        self.cli = cli
        self.directory = directory
        ports = cluster_ports(NODES)
        self.nodes = [ClusterNode(executable, directory / str(p), p) for p in ports]

    @property
    def url(self) -> str:
        """A URL naming one node: the client discovers the rest."""
        return f"redis://{self.nodes[0].address}/0"

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._wait(lambda: all(n.answers() for n in self.nodes), "every node answering")
            created = subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(n.address for n in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                capture_output=True,
                timeout=_JOIN_TIMEOUT,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    "redis-cli --cluster create failed:\n"
                    + created.stdout.decode(errors="replace")[-2000:]
                    + created.stderr.decode(errors="replace")[-2000:]
                )
            self.wait_ok(self.nodes)
            self._wait(self._replicas_attached, "every master with a replica")
        except BaseException as exc:
            tails = "\n".join(f"--- {n.address}\n{n.log_tail()}" for n in self.nodes)
            self.stop()
            if isinstance(exc, Exception):
                pytest.fail(f"the Redis Cluster did not start: {exc}\n{tails}", pytrace=False)
            raise

    def _wait(self, done: object, what: str, timeout: float = _JOIN_TIMEOUT) -> None:
        assert callable(done)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}")

    def _state(self, node: ClusterNode) -> dict[str, str]:
        try:
            with node.client() as client:
                info = client.cluster("info")
        except redis.RedisError:
            return {}
        return {str(k): str(v) for k, v in info.items()}

    def wait_ok(self, nodes: list[ClusterNode], timeout: float = _JOIN_TIMEOUT) -> None:
        """Until every node in ``nodes`` says ``cluster_state:ok`` and knows all 16384 slots."""

        def ok() -> bool:
            for node in nodes:
                state = self._state(node)
                if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != "16384":
                    return False
            return True

        self._wait(ok, "cluster_state:ok", timeout)

    def _replicas_attached(self) -> bool:
        with self.nodes[0].client() as client:
            nodes = client.cluster("nodes")
        masters = [n for n in nodes.values() if "master" in n["flags"]]
        replicas = [n for n in nodes.values() if "slave" in n["flags"]]
        return len(masters) == NODES // 2 and len(replicas) == NODES // 2

    def client(self) -> SyncRedisCluster:
        """A synchronous cluster client, for setting up and inspecting."""
        return SyncRedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5.0)

    def masters(self) -> list[ClusterNode]:
        """The nodes that are masters now (by a running node's ``CLUSTER NODES``)."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client() as client:
                    view = client.cluster("nodes")
            except redis.RedisError:
                continue
            ports = {
                int(address.split(":")[1].split("@")[0])
                for address, info in view.items()
                if "master" in info["flags"] and "fail" not in info["flags"]
            }
            return [n for n in self.nodes if n.port in ports and n.running]
        raise RuntimeError("no cluster node answers")

    def slot_owner(self, slot: int) -> ClusterNode:
        """The master serving ``slot`` now."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client() as client:
                    ranges = client.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in ranges:
                if int(start) <= slot <= int(end):
                    return self.node(int(master[1]))
        raise RuntimeError(f"no node serves slot {slot}")

    def slot_map(self) -> dict[int, int]:
        """slot -> port of the master serving it."""
        owners: dict[int, int] = {}
        node = next(n for n in self.nodes if n.running)
        with node.client() as client:
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                for slot in range(int(start), int(end) + 1):
                    owners[slot] = int(master[1])
        return owners

    def reset(self) -> None:
        """Forget every key and every command count, on every node."""
        for node in self.masters():
            with node.client() as client:
                client.flushall()
        for node in self.nodes:
            if node.running:
                with node.client() as client, contextlib.suppress(redis.RedisError):
                    client.config_resetstat()

    def command_calls(self) -> dict[str, int]:
        """Calls per command on every master since the last reset, summed."""
        total: dict[str, int] = {}
        for node in self.masters():
            with node.client() as client:
                stats = client.info("commandstats")
            for name, value in stats.items():
                if isinstance(value, dict):
                    key = name.removeprefix("cmdstat_")
                    total[key] = total.get(key, 0) + int(value["calls"])
        return total

    def freeze(self) -> None:
        """Stop every node (SIGSTOP): connections are accepted, nothing is answered.

        All of them at once, so no node sees the others miss their node
        timeout; thaw within it (2 s) and the cluster carries on unchanged.
        """
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGCONT)
        self.wait_ok([n for n in self.nodes if n.running])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def _session_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(_session_redis_cluster: RedisClusterServer) -> RedisClusterServer:
    """The session's cluster, empty, with zeroed command statistics."""
    _session_redis_cluster.reset()
    return _session_redis_cluster


@pytest.fixture
def private_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """A cluster of this test's own, whose nodes it may kill."""
    cluster = RedisClusterServer(tmp_path / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
