"""EmbeddedRedis: the real server binary starts, answers, and goes away cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from service.keys import history_key
from service.local.redis_server import EmbeddedRedis, RedisServerError, find_redis_binary, free_port


def test_finds_a_binary() -> None:
    assert find_redis_binary()


def test_start_answers_ping_and_stop_closes_it() -> None:
    server = EmbeddedRedis()
    with server as url:
        client = redis.Redis.from_url(url)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
    assert server.url is None
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_explicit_port_is_used() -> None:
    port = free_port()
    server = EmbeddedRedis()
    try:
        assert server.start(port) == f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()
    server.stop()  # idempotent


def test_a_binary_that_exits_gives_a_clear_error() -> None:
    with pytest.raises(RedisServerError, match="exited with code"):
        EmbeddedRedis(binary="/bin/false").start()


def test_a_missing_binary_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RedisServerError, match="cannot run Redis server"):
        EmbeddedRedis(binary=str(tmp_path / "no-such-redis")).start()


async def test_a_data_directory_keeps_every_accepted_event_across_a_restart(tmp_path: Path) -> None:
    """The API accepts events, the embedded Redis restarts (as `genrec serve` does): all are there."""
    from service_fakes import HashRecommender, open_client

    from model.catalog import Catalog, CatalogItem
    from model.semantic_id import SidScheme
    from service.api.app import create_app
    from service.settings import Settings

    catalog = Catalog(SidScheme((8,)), [CatalogItem(f"i{n}", f"t{n}", (n,)) for n in range(8)])
    data_dir = tmp_path / "redis"
    port = free_port()
    events = [{"user_id": f"u{n % 3}", "item_id": f"i{n % 8}"} for n in range(30)]
    with EmbeddedRedis(data_dir=data_dir) as url:
        assert redis.Redis.from_url(url).config_get("appendonly") == {"appendonly": "yes"}
        settings = Settings(redis_url=url)
        async with open_client(create_app(settings, HashRecommender(catalog))) as http:
            for start in range(0, 30, 5):  # six requests, each acknowledged
                response = await http.post("/v1/events", json={"events": events[start : start + 5]})
                assert response.status_code == 200
    assert (data_dir / "redis.log").is_file()
    server = EmbeddedRedis(data_dir=data_dir)
    try:
        client = redis.Redis.from_url(server.start(port), decode_responses=True)
        for user in ("u0", "u1", "u2"):
            expected = [e["item_id"] for e in events if e["user_id"] == user]
            assert client.lrange(history_key(user), 0, -1) == expected
        client.close()
    finally:
        server.stop()
