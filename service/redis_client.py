"""The Redis client of the API, the precompute job and the CLI, built one way for all of them.

``REDIS_URL`` names either one Redis server (``redis://``, ``rediss://``, as redis-py reads
them) or a Redis Cluster: ``redis+cluster://[user:password@]host:port[,host:port...]``
(``rediss+cluster://`` for TLS), any of its nodes, the others being found from them. The rule
is the scheme and nothing else: a cluster needs redis-py's cluster client, which routes each
command to the node of its key's hash slot, and detecting it (``INFO cluster``) would cost every
start a round trip before the client could even be built.

On a cluster a transaction (or a script) may only touch keys of one hash slot. Every per-user
key carries the user's hash tag (``service.keys``), so one user's writes always fit;
``slot_groups`` is how a write that spans users is cut into such transactions.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Either client: the code above this module is written once for both.
RedisClient: TypeAlias = redis.Redis | RedisCluster
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DEFAULT_PORT = 6379
# Transactions one call runs at once on a cluster (each holds a connection until its EXEC).
CLUSTER_CONCURRENCY = 16

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class ClusterUrl:
    """A ``redis+cluster://`` URL taken apart: the first node as a plain redis-py URL (with the
    credentials and options), and every node as (host, port)."""

    first: str
    nodes: list[tuple[str, int]]


def parse_cluster_url(url: str) -> ClusterUrl | None:
    """The nodes of a ``redis+cluster://`` URL, None for any other URL; ValueError if malformed."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    if scheme is None:
        return None
    credentials, at, hosts = parts.netloc.rpartition("@")
    nodes = [_host_port(hostport, url) for hostport in hosts.split(",")]
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has only database 0, got {parts.path!r} in {url!r}")
    host, port = nodes[0]
    netloc = f"{credentials}{at}{f'[{host}]' if ':' in host else host}:{port}"
    return ClusterUrl(urlunsplit((scheme, netloc, "", parts.query, "")), nodes)


def _host_port(hostport: str, url: str) -> tuple[str, int]:
    """``host[:port]`` or ``[ipv6][:port]``; the port defaults to 6379."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    port = port or str(DEFAULT_PORT)
    if not host or not port.isdigit():
        raise ValueError(f"bad node {hostport!r} in Redis Cluster URL {url!r}: expected host:port")
    return host, int(port)


def redis_client(url: str, timeout_s: float, max_connections: int) -> RedisClient:
    """A client that retries a failed command once after a short backoff and reconnects on its
    own once Redis is back; bounded by ``timeout_s`` per attempt, so a dead Redis costs a
    request at most ~2 timeouts, never a hang. A connection Redis dropped fails its next
    command, which the retry runs again on a fresh connection; so no health-check PINGs (their
    clock check on every command cost the cache hit ~3%).

    The pool opens up to ``max_connections`` connections (per node, on a cluster); a command
    beyond that fails (and is retried once) instead of queueing. The blocking pool queues
    instead, but its condition variable cost the cache-hit path a fifth of its throughput at
    64 concurrent requests (benchmarks/serve_load.py: 0.67x vs 0.83x of the bare endpoint), and
    a request that finds every connection busy is better answered degraded than late.
    """
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)
    retry_on_error: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError]
    cluster = parse_cluster_url(url)
    if cluster is not None:
        return RedisCluster.from_url(
            cluster.first,
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes[1:]],
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=retry,
            retry_on_error=retry_on_error,
        )
    pool: redis.ConnectionPool = redis.ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=retry,
        retry_on_error=retry_on_error,
    )
    return redis.Redis(connection_pool=pool)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def slot_groups(client: RedisClient, items: Iterable[K], key: Callable[[K], str]) -> list[list[K]]:
    """``items`` cut into the groups one transaction may hold: all of them on a single Redis,
    those whose ``key`` is in the same hash slot on a cluster (first-seen order kept)."""
    if not is_cluster(client):
        everything = list(items)
        return [everything] if everything else []
    groups: defaultdict[int, list[K]] = defaultdict(list)
    for item in items:
        groups[key_slot(key(item).encode())].append(item)
    return list(groups.values())


async def for_each_group(groups: Sequence[T], write: Callable[[T], Awaitable[R]]) -> list[R]:
    """``write`` run on every group, at most CLUSTER_CONCURRENCY at once (a cluster's groups
    are independent transactions; a single Redis has one); its results in group order. Every
    group is attempted, and the first failure raised once all have finished, so no write is
    left running behind the caller."""
    if len(groups) == 1:
        return [await write(groups[0])]
    limit = asyncio.Semaphore(CLUSTER_CONCURRENCY)

    async def bounded(group: T) -> R:
        async with limit:
            return await write(group)

    done: list[R] = []
    for result in await asyncio.gather(*(bounded(group) for group in groups), return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
        done.append(result)
    return done


async def queue_script(
    pipe: RedisPipeline, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int | float]
) -> None:
    """Queue a Lua script into a transaction.

    A single Redis's pipeline checks that the script is loaded before its MULTI, so it sends
    only the SHA. A cluster pipeline does not; a NOSCRIPT inside EXEC would fail that one
    command and leave the rest of the transaction applied, so there the script travels whole.
    """
    if isinstance(pipe, ClusterPipeline):
        pipe.eval(script.script, len(keys), *keys, *args)  # type: ignore[arg-type]
    else:
        await script(keys=keys, args=args, client=pipe)


async def ping(client: RedisClient, timeout_s: float) -> str:
    """ "ok", or ``error: <why>`` when Redis did not answer PING within ``timeout_s``."""
    try:
        await asyncio.wait_for(client.ping(), timeout=timeout_s)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"error: {str(exc) or type(exc).__name__}"
    return "ok"
