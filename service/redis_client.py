"""The Redis client of the API and the precompute job, built one way for both."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError


def redis_client(url: str, timeout_s: float, max_connections: int) -> redis.Redis:
    """A client that retries a failed command once after a short backoff and reconnects on its
    own once Redis is back; bounded by ``timeout_s`` per attempt, so a dead Redis costs a
    request at most ~2 timeouts, never a hang. A connection Redis dropped fails its next
    command, which the retry runs again on a fresh connection; so no health-check PINGs (their
    clock check on every command cost the cache hit ~3%).

    The pool opens up to ``max_connections`` connections; a command beyond that fails (and is
    retried once) instead of queueing. The blocking pool queues instead, but its condition
    variable cost the cache-hit path a fifth of its throughput at 64 concurrent requests
    (benchmarks/serve_load.py: 0.67x vs 0.83x of the bare endpoint), and a request that finds
    every connection busy is better answered degraded than late.
    """
    pool: redis.ConnectionPool = redis.ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return redis.Redis(connection_pool=pool)


async def ping(client: redis.Redis, timeout_s: float) -> str:
    """ "ok", or ``error: <why>`` when Redis did not answer PING within ``timeout_s``."""
    try:
        await asyncio.wait_for(client.ping(), timeout=timeout_s)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"error: {str(exc) or type(exc).__name__}"
    return "ok"
