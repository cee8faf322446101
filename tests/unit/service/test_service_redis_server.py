"""EmbeddedRedis: the real server binary starts, answers, and goes away cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from service.redis_server import EmbeddedRedis, RedisServerError, find_redis_binary, free_port


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
