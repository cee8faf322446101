"""Shared fixtures: a real Redis server, and a real three-master Redis Cluster, for the whole test
session (no mocks of Redis).

A test marked ``cluster`` runs twice, ``[single]`` on the Redis server and ``[cluster]`` on the
cluster: its ``redis_url`` (and so every fixture built on it: ``redis_client``, the settings,
the stores, the app) is parametrized over both. The cluster starts only if such a test runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as redis

from service.local.redis_cluster import EmbeddedRedisCluster
from service.local.redis_server import EmbeddedRedis
from service.redis_client import RedisClient, parse_cluster_url
from service.redis_client import redis_client as service_redis_client

BACKENDS = ("single", "cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("cluster") is not None and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_url", BACKENDS, indirect=True, scope="function")


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """URL of a throwaway, non-persistent redis-server on a free 127.0.0.1 port."""
    server = EmbeddedRedis()
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """``redis+cluster://`` URL of a throwaway cluster of three masters, no replicas, nothing persisted."""
    with EmbeddedRedisCluster() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The Redis server's URL; in a test marked ``cluster``, the server's and then the cluster's."""
    backend = getattr(request, "param", "single")
    return str(request.getfixturevalue("redis_cluster_url" if backend == "cluster" else "redis_server_url"))


def open_client(url: str) -> RedisClient:
    """A plain client for a server URL; the service's own (redis-py's cluster client) for a cluster."""
    if parse_cluster_url(url) is not None:
        return service_redis_client(url, timeout_s=5.0, max_connections=64)
    return redis.Redis.from_url(url)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client on an emptied database (every master's, on the cluster), so every test starts
    from a blank Redis."""
    client = open_client(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
