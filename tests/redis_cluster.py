"""A real Redis Cluster for tests: 3 masters and 3 replicas on loopback.

The starter is :mod:`examples.redis_cluster` (shared with the benchmarks and
``python -m examples.redis_cluster``): six ``redis-server --cluster-enabled
yes`` processes joined by ``redis-cli --cluster create``, each exec'd with a
parent-death signal, so none outlives the test run however it ends. The
fixtures start clusters from pytest's main thread, whose exit is the
parent's.

``redis_cluster`` is one cluster for the session, emptied before each test;
``private_redis_cluster`` is a cluster of the test's own, for tests that
kill one of its nodes. Every process is stopped at the end: nothing is left
running, however the test ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.redis_cluster import (
    NODE_TIMEOUT_MS,
    NODES,
    ClusterError,
    ClusterNode,
    RedisClusterServer,
    cluster_ports,
)

__all__ = [
    "NODES",
    "NODE_TIMEOUT_MS",
    "ClusterNode",
    "RedisClusterServer",
    "cluster_ports",
    "private_redis_cluster",
    "redis_cluster",
    "started_cluster",
]


def started_cluster(directory: Path) -> RedisClusterServer:
    """A cluster in ``directory``, started; a test failure (not an error) when it cannot be."""
    try:
        cluster = RedisClusterServer(directory)
        cluster.start()
    except ClusterError as error:
        pytest.fail(str(error), pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def _session_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServer]:
    cluster = started_cluster(tmp_path_factory.mktemp("cluster"))
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
    cluster = started_cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()
