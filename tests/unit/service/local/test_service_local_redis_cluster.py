"""EmbeddedRedisCluster (the session's cluster fixture): three real masters that refuse what a
cluster refuses, and the store SCAN's node-by-node checkpoint on it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError

from service.history import HistoryStore
from service.keys import history_key, times_key
from service.local.redis_cluster import EmbeddedRedisCluster, free_node_port
from service.precompute.checkpoint import Progress
from service.precompute.sources import SCAN_DONE, store_batches
from service.redis_client import redis_client


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = redis_client(redis_cluster_url, timeout_s=5.0, max_connections=16)
    assert isinstance(client, RedisCluster)
    await client.flushdb()
    yield client
    await client.aclose()


async def test_three_masters_serve_every_slot(cluster: RedisCluster, redis_cluster_url: str) -> None:
    assert redis_cluster_url.startswith("redis+cluster://127.0.0.1:")
    info = await cluster.cluster_info()
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384
    assert len(cluster.get_primaries()) == 3 and not cluster.get_replicas()


async def test_it_refuses_a_transaction_across_slots_and_takes_one_users_keys(cluster: RedisCluster) -> None:
    node = cluster.get_node_from_key(history_key("a"))
    assert key_slot(b"genrec:hist:a") != key_slot(b"genrec:v1:topk:a")
    # CROSSSLOT, what the old key scheme ran into (redis-py drops the error's code word)
    with pytest.raises(ResponseError, match="don't hash to the same slot"):
        await cluster.execute_command("DEL", "genrec:hist:a", "genrec:hist_ts:a", target_nodes=node)
    with pytest.raises(RedisClusterException):
        async with cluster.pipeline(transaction=True) as pipe:
            pipe.rpush("genrec:hist:a", "i1")
            pipe.delete("genrec:v1:topk:a")
            await pipe.execute()
    async with cluster.pipeline(transaction=True) as pipe:
        pipe.rpush(history_key("a"), "i1")
        pipe.rpush(times_key("a"), "1.0")
        assert await pipe.execute() == [1, 1]


async def test_a_store_scan_checkpoint_naming_a_lost_master_starts_over(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    users = {f"u{n}": ["i1"] for n in range(40)}
    await HistoryStore(cluster).set_many(users)
    positions = [batch.position async for batch in store_batches(cluster, 8, None)]
    names = sorted(node.name for node in cluster.get_primaries())
    assert positions[-1] == SCAN_DONE
    assert all(p.rpartition("/")[0] in names for p in positions[:-1])  # <master>/<cursor>
    with caplog.at_level(logging.WARNING, logger="service.precompute.sources"):
        again = [b async for b in store_batches(cluster, 8, Progress("127.0.0.1:1/17", 8))]
    assert "not in the cluster" in caplog.text
    assert {u for batch in again for u in batch.user_ids} == set(users)


def test_node_ports_leave_room_for_the_cluster_bus() -> None:
    port = free_node_port()
    assert port + 10000 <= 65535


def test_stop_before_start_is_harmless() -> None:
    cluster = EmbeddedRedisCluster()
    cluster.stop()
    assert cluster.url is None and cluster.ports == []
