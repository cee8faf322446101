"""``genrec migrate-keys`` on a real Redis (and a real cluster) holding the keys of the old scheme."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from service_fakes import MODEL_VERSION, HashRecommender, make_catalog, open_client
from typer.testing import CliRunner

from model.recommender import ScoredItem
from service.api.app import create_app
from service.cache import CachedList, RecommendationCache, encode_entry
from service.cli import app
from service.history import HistoryStore
from service.keys import history_key, stale_key, times_key, topk_key
from service.migrate import migrate_keys, new_name
from service.redis_client import RedisClient, redis_client
from service.settings import Settings, get_settings

ENTRY = CachedList.of([ScoredItem("i3", -0.5), ScoredItem("i1", -1.0)], ["i1"])
USERS = ["u1", "a}b", "x:y"]


async def write_old_scheme(client: RedisClient) -> None:
    """What a release before the hash tags left in Redis: histories, times, live and stale lists
    (with their TTL) of two model versions, and the keys that never were per user."""
    for user in USERS:
        await client.rpush(f"genrec:hist:{user}", "i1", "i2")
        await client.rpush(f"genrec:hist_ts:{user}", "0", "10.5")
        await client.set(f"genrec:{MODEL_VERSION}:topk:{user}", encode_entry(ENTRY), ex=600)
        await client.set(f"genrec:old-v0:stale:{user}", encode_entry(ENTRY), ex=600)
    await client.set(f"genrec:{MODEL_VERSION}:similar:i3", encode_entry(ENTRY))
    await client.hset(f"genrec:{MODEL_VERSION}:precompute:abc", mapping={"position": "10", "users_done": 10})


def test_new_name_knows_the_old_keys_and_nothing_else() -> None:
    assert new_name("genrec:hist:u1") == ("hist", history_key("u1"))
    assert new_name("genrec:hist_ts:a:b") == ("hist_ts", times_key("a:b"))
    assert new_name("genrec:v1:topk:u:topk:2") == ("topk", topk_key("v1", "u:topk:2"))
    assert new_name("genrec:v1:stale:u1") == ("stale", stale_key("v1", "u1"))
    for other in (
        history_key("u1"),
        topk_key("v1", "u1"),
        "genrec:v1:similar:i3",
        "genrec:v1:precompute:abc",
        "genrec:hist:",  # no user
        "genrec:a:b:topk:u1",  # a model version with ":" is not told apart from the user id
        "other:hist:u1",
    ):
        assert new_name(other) is None, other


@pytest.mark.cluster
async def test_migration_moves_every_old_key_once_and_keeps_values_and_ttls(
    redis_client: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    await write_old_scheme(redis_client)
    await redis_client.rpush(history_key("taken"), "new")  # written by the new release already
    await redis_client.rpush("genrec:hist:taken", "old")

    dry = await migrate_keys(redis_client, dry_run=True)
    assert dry.scanned == 16 and dry.moved.total() == 12 and dry.taken == 1
    assert await redis_client.exists(history_key("u1")) == 0  # a dry run changes nothing

    with caplog.at_level(logging.WARNING, logger="service.migrate"):
        summary = await migrate_keys(redis_client)
    assert dict(summary.moved) == {"hist": 3, "hist_ts": 3, "topk": 3, "stale": 3}
    assert summary.taken == 1 and "left genrec:hist:taken in place" in caplog.text
    assert "12 renamed (hist 3, hist_ts 3, stale 3, topk 3), 1 left in place" in summary.describe()

    history = HistoryStore(redis_client)
    cache = RecommendationCache(redis_client, MODEL_VERSION, ttl_s=600)
    for user in USERS:
        assert await history.get_all(user) == ["i1", "i2"]
        assert await history.get_times(user) == [0.0, 10.5]
        assert await cache.get(user) == ENTRY
        assert 0 < await redis_client.ttl(cache.key(user)) <= 600  # the TTL came along
        assert 0 < await redis_client.ttl(stale_key("old-v0", user)) <= 600
        assert await redis_client.exists(f"genrec:hist:{user}", f"genrec:{MODEL_VERSION}:topk:{user}") == 0
    assert await history.get_all("taken") == ["new"]  # never overwritten; the old key is kept
    assert await redis_client.lrange("genrec:hist:taken", 0, -1) == [b"old"]
    assert await cache.get_similar("i3") == ENTRY  # not per user: untouched
    assert await redis_client.hget(f"genrec:{MODEL_VERSION}:precompute:abc", "users_done") == b"10"

    again = await migrate_keys(redis_client)
    assert again.moved.total() == 0 and again.taken == 1  # idempotent


@pytest.mark.cluster
async def test_migrated_data_is_served(redis_client: RedisClient, redis_url: str) -> None:
    """After the migration the API finds the old histories and lists under the new names."""
    await write_old_scheme(redis_client)
    await migrate_keys(redis_client)
    settings = Settings(redis_url=redis_url, max_k=20, default_k=2)
    async with open_client(create_app(settings, HashRecommender(make_catalog()))) as http:
        body = (await http.get("/v1/recommend", params={"user_id": "a}b", "exclude_seen": "false"})).json()
        assert body["source"] == "cache" and [i["item_id"] for i in body["items"]] == ["i3", "i1"]
        history = (await http.get("/v1/users/x:y/history")).json()
        assert [i["item_id"] for i in history["items"]] == ["i1", "i2"]


async def test_a_cluster_move_stopped_half_way_is_completed(redis_cluster_url: str) -> None:
    """On a cluster a move is RESTORE then DEL; a run stopped between them left both keys."""
    client = redis_client(redis_cluster_url, timeout_s=5.0, max_connections=16)
    assert isinstance(client, RedisCluster)
    try:
        await client.flushdb()
        await client.rpush("genrec:hist:u1", "i1", "i2")
        dumped = await client.dump("genrec:hist:u1")
        assert dumped is not None
        await client.restore(history_key("u1"), 0, dumped)
        summary = await migrate_keys(client)
        assert (summary.moved.total(), summary.taken) == (1, 0)
        assert await client.exists("genrec:hist:u1") == 0
        assert await client.lrange(history_key("u1"), 0, -1) == [b"i1", b"i2"]
    finally:
        await client.aclose()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


async def test_the_command_reports_counts_and_a_dry_run_changes_nothing(
    cli_env: pytest.MonkeyPatch, redis_client: RedisClient
) -> None:
    await write_old_scheme(redis_client)
    dry = await asyncio.to_thread(CliRunner().invoke, app, ["migrate-keys", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "migrate-keys (dry run): 14 keys scanned, 12 would be renamed" in dry.output
    done = await asyncio.to_thread(CliRunner().invoke, app, ["migrate-keys"])
    assert done.exit_code == 0, done.output
    assert "12 renamed (hist 3, hist_ts 3, stale 3, topk 3), 0 left in place" in done.output
    assert await redis_client.lrange(history_key("u1"), 0, -1) == [b"i1", b"i2"]


def test_the_command_without_redis_url_migrates_the_embedded_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    sigterm = signal.getsignal(signal.SIGTERM)  # the embedded Redis's command sets its own
    try:
        done = CliRunner().invoke(app, ["migrate-keys"])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    assert "0 keys scanned, 0 renamed" in done.output
    assert (tmp_path / "redis").is_dir()


def test_an_unreachable_redis_fails_with_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("REDIS_TIMEOUT_S", "0.5")
    get_settings.cache_clear()
    try:
        failed = CliRunner().invoke(app, ["migrate-keys"])
    finally:
        get_settings.cache_clear()
    assert failed.exit_code == 1
    assert "error: ConnectionError" in failed.output
