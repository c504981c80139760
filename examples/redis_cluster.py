"""A Redis Cluster of 3 masters and 3 replicas on loopback: ``python -m examples.redis_cluster``.

For trying the example on a cluster on one machine (``docs/deployment.md``),
and the one starter the tests and the benchmarks share. It runs Debian's
``redis-server`` six times with ``--cluster-enabled yes``, each node in a
directory of its own, and joins them with ``redis-cli --cluster create ...
--cluster-replicas 1``, as an operator would. A node's cluster bus listens
on its port + 10000, so every port is below 55535 and its bus port is free
too. ``cluster-node-timeout`` is short (2 s), so a killed master is replaced
by its replica within seconds. Persistence is off.

Run as a program it prints the URL of one node (a cluster client finds the
rest), and stops every node on Ctrl-C or SIGTERM.

The nodes must not outlive what started them, however it ends (SIGKILL
included): where util-linux's ``setpriv`` is there, each is exec'd with a
parent-death signal. That signal follows the *thread* that started the
node, so start a cluster from a thread that lives as long as it (the main
thread, as pytest's fixtures and the benchmarks do), never from a worker
thread. Each node runs in a session of its own, so a Ctrl-C in a terminal
reaches the starter, which stops them, rather than the nodes themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import redis
from redis.cluster import RedisCluster as SyncRedisCluster

NODES: Final = 6
NODE_TIMEOUT_MS: Final = 2000
HOST: Final = "127.0.0.1"
_BUS_OFFSET = 10000
_MAX_PORT = 65535 - _BUS_OFFSET  # the bus port must exist too
_JOIN_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0

_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT: tuple[str, ...] = (
    (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV and sys.platform == "linux" else ()
)


class ClusterError(RuntimeError):
    """The cluster could not be started (the message carries the nodes' log tails)."""


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
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
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port >= _MAX_PORT or port in avoid or port + _BUS_OFFSET in avoid:
            continue
        if not _bindable(port + _BUS_OFFSET):
            continue
        avoid.update((port, port + _BUS_OFFSET))
        chosen.append(port)
    raise ClusterError(f"found only {len(chosen)} of {count} cluster ports")


class ClusterNode:
    """One ``redis-server`` of the cluster, in its own directory."""

    def __init__(self, executable: str, directory: Path, port: int) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5.0)

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
                    HOST,
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
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def answers(self) -> bool:
        try:
            with redis.Redis(host=HOST, port=self.port, socket_timeout=0.5) as client:
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
        process.send_signal(signal.SIGCONT)  # a frozen node cannot shut down
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
            raise ClusterError(
                "redis-server and redis-cli are needed for a Redis Cluster "
                "(apt-get install redis-server)"
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
        """Start the six nodes, join them, and wait until every slot is served and replicated."""
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
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_JOIN_TIMEOUT,
                check=False,
            )
            if created.returncode != 0:
                raise ClusterError(
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
                raise ClusterError(f"the Redis Cluster did not start: {exc}\n{tails}") from exc
            raise

    def _wait(self, done: Callable[[], bool], what: str, timeout: float = _JOIN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.05)
        raise ClusterError(f"timed out waiting for {what}")

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
        return SyncRedisCluster(host=HOST, port=self.nodes[0].port, socket_timeout=5.0)

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
        raise ClusterError("no cluster node answers")

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
        raise ClusterError(f"no node serves slot {slot}")

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.redis_cluster",
        description="Start a Redis Cluster (3 masters, 3 replicas) on loopback until Ctrl-C.",
    )
    parser.add_argument(
        "--dir", type=Path, help="the nodes' directories go here (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with contextlib.ExitStack() as exits:
        directory: Path = args.dir or Path(
            exits.enter_context(tempfile.TemporaryDirectory(prefix="redis-cluster-"))
        )
        try:
            cluster = RedisClusterServer(directory)
            exits.callback(cluster.stop)
            cluster.start()
        except ClusterError as error:
            print(error, file=sys.stderr)
            return 1
        masters = ", ".join(n.address for n in cluster.masters())
        print(cluster.url, flush=True)
        print(
            f"a Redis Cluster of {NODES} nodes in {directory} (masters {masters}); Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        # A node killed meanwhile (to watch a failover) is no reason to stop.
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
