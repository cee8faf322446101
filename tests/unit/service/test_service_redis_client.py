"""The Redis client: which URLs name a cluster, and how writes over many users are cut by slot."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from service.keys import history_key
from service.redis_client import ClusterUrl, for_each_group, parse_cluster_url, redis_client, slot_groups


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0", None),
        ("rediss://h:6379", None),
        ("redis+cluster://h1:7000", ClusterUrl("redis://h1:7000", [("h1", 7000)])),
        (
            "redis+cluster://user:p%40ss@h1:7000,h2:7001/0?socket_keepalive=true",
            ClusterUrl("redis://user:p%40ss@h1:7000?socket_keepalive=true", [("h1", 7000), ("h2", 7001)]),
        ),
        ("rediss+cluster://h1", ClusterUrl("rediss://h1:6379", [("h1", 6379)])),
        ("redis+cluster://[::1]:7000,h2", ClusterUrl("redis://[::1]:7000", [("::1", 7000), ("h2", 6379)])),
    ],
)
def test_the_scheme_alone_says_cluster(url: str, expected: ClusterUrl | None) -> None:
    assert parse_cluster_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h1:7000/1", "only database 0"),
        ("redis+cluster://h1:x", "expected host:port"),
        ("redis+cluster://h1:7000,", "expected host:port"),
    ],
)
def test_a_malformed_cluster_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)


async def test_the_client_follows_the_scheme() -> None:
    plain = redis_client("redis://127.0.0.1:1/0", 0.5, 4)
    cluster = redis_client("redis+cluster://127.0.0.1:1,127.0.0.1:2", 0.5, 4)
    try:
        assert type(plain) is redis.Redis
        assert isinstance(cluster, RedisCluster)
        assert [(n.host, n.port) for n in cluster.startup_nodes] == [("127.0.0.1", 2), ("127.0.0.1", 1)]
    finally:
        await plain.aclose()
        await cluster.aclose()


async def test_slot_groups_are_one_transaction_on_a_server_and_one_per_slot_on_a_cluster() -> None:
    users = [f"u{n}" for n in range(50)]
    plain = redis.Redis()
    cluster = RedisCluster(host="127.0.0.1", port=1)
    try:
        assert slot_groups(plain, users, history_key) == [users]
        assert slot_groups(plain, [], history_key) == []
        groups = slot_groups(cluster, users, history_key)
        assert sorted(u for group in groups for u in group) == sorted(users)
        for group in groups:
            assert len({key_slot(history_key(u).encode()) for u in group}) == 1
    finally:
        await plain.aclose()
        await cluster.aclose()


async def test_for_each_group_runs_every_group_then_raises_the_first_failure() -> None:
    ran: list[int] = []

    async def write(group: int) -> int:
        ran.append(group)
        if group == 2:
            raise RuntimeError("slot 2 failed")
        return group * 10

    assert await for_each_group([1, 3], write) == [10, 30]
    with pytest.raises(RuntimeError, match="slot 2 failed"):
        await for_each_group([1, 2, 3, 4], write)
    assert sorted(ran[2:]) == [1, 2, 3, 4]
