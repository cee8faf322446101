"""RecommendationCache against a real Redis (and a real cluster): round trip, seen marks, TTL,
invalidation to the stale key, the history-guarded put, versioned keys, corrupt entries."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as redis

from model.recommender import ScoredItem
from service.cache import CachedList, RecommendationCache, decode_entry
from service.history import HistoryStore
from service.keys import history_key, stale_key, topk_key

pytestmark = pytest.mark.cluster

ITEMS = [ScoredItem("i3", -0.5), ScoredItem("i1", -1.25), ScoredItem("i7", -2.0)]
ENTRY = CachedList.of(ITEMS, history=["i9", "i1"])


def test_seen_marks_the_items_of_the_history() -> None:
    assert ENTRY.seen == frozenset({1})
    assert ENTRY.visible(exclude_seen=True) == [ITEMS[0], ITEMS[2]]
    assert ENTRY.visible(exclude_seen=False) == ITEMS


async def test_miss_is_none(cache: RecommendationCache) -> None:
    assert await cache.get("nobody") is None


async def test_put_get_round_trip(cache: RecommendationCache) -> None:
    await cache.put("u1", ENTRY)
    assert await cache.get("u1") == ENTRY


async def test_put_sets_the_ttl(cache: RecommendationCache, redis_client: redis.Redis) -> None:
    await cache.put("u1", ENTRY)
    ttl = await redis_client.ttl(cache.key("u1"))
    assert 0 < ttl <= cache.ttl_s


async def test_invalidate_keeps_the_list_as_stale_with_its_ttl(
    cache: RecommendationCache, redis_client: redis.Redis
) -> None:
    await cache.put("u1", ENTRY)
    await cache.invalidate("u1")
    assert await cache.get("u1") is None
    assert cache.stale_key("u1") == stale_key(cache.model_version, "u1") == "genrec:{u1}:test-v1:stale"
    assert await cache.parse_stale("u1", await redis_client.get(cache.stale_key("u1"))) == ENTRY
    assert 0 < await redis_client.ttl(cache.stale_key("u1")) <= cache.ttl_s
    await cache.invalidate("nobody")  # no list: nothing to keep, no error
    assert await redis_client.exists(cache.stale_key("nobody")) == 0


async def test_put_unless_history_changed(
    cache: RecommendationCache, history: HistoryStore, redis_client: redis.Redis
) -> None:
    await history.set_many({"u1": ["i1", "i2"]})
    assert await cache.put_unless_history_changed("u1", ENTRY, history_key("u1"), 2)
    assert await cache.get("u1") == ENTRY
    await cache.invalidate("u1")
    await history.append("u1", ["i5"])  # an event landed while the list was computed
    assert not await cache.put_unless_history_changed("u1", ENTRY, history_key("u1"), 2)
    assert await cache.get("u1") is None
    # a user without stored history (length 0) is cached
    assert await cache.put_unless_history_changed("u2", ENTRY, history_key("u2"), 0)
    assert 0 < await redis_client.ttl(cache.key("u2")) <= cache.ttl_s


async def test_model_version_is_in_the_key(redis_client: redis.Redis) -> None:
    old = RecommendationCache(redis_client, "v1", ttl_s=60)
    new = RecommendationCache(redis_client, "v2", ttl_s=60)
    await old.put("u1", ENTRY)
    assert old.key("u1") == topk_key("v1", "u1") == "genrec:{u1}:v1:topk"
    assert await redis_client.exists("genrec:{u1}:v1:topk") == 1
    assert await new.get("u1") is None  # a new model never serves the old model's list


async def test_put_many_writes_every_user_with_ttl(
    cache: RecommendationCache, redis_client: redis.Redis
) -> None:
    entries = {f"u{n}": CachedList.of(ITEMS[: n % 3 + 1], [f"i{n}"]) for n in range(10)}
    await cache.put_many(entries)
    for user_id, entry in entries.items():
        assert await cache.get(user_id) == entry
        assert await redis_client.ttl(cache.key(user_id)) > 0
    await cache.put_many({})  # nothing to do, no error


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        json.dumps([{"item_id": "i1", "score": -1.0}]),  # the list format of earlier releases
        json.dumps({"items": [["i1", -1.0]], "seen": [3]}),  # mark outside the list
        json.dumps({"items": [["i1", "NaN"]], "seen": []}),
        json.dumps({"items": [["i1"]], "seen": []}),
    ],
)
async def test_corrupt_entry_is_a_miss_and_is_dropped(
    cache: RecommendationCache, redis_client: redis.Redis, raw: bytes | str
) -> None:
    await redis_client.set(cache.key("u1"), raw)
    assert await cache.get("u1") is None
    assert await redis_client.exists(cache.key("u1")) == 0
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_entry(raw)
