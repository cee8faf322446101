"""RecommendationCache against a real Redis: round trip, TTL, invalidation, versioned keys."""

from __future__ import annotations

import redis.asyncio as redis

from model.recommender import ScoredItem
from service.cache import RecommendationCache, topk_key

ITEMS = [ScoredItem("i3", -0.5), ScoredItem("i1", -1.25), ScoredItem("i7", -2.0)]


async def test_miss_is_none(cache: RecommendationCache) -> None:
    assert await cache.get("nobody") is None


async def test_put_get_round_trip(cache: RecommendationCache) -> None:
    await cache.put("u1", ITEMS)
    assert await cache.get("u1") == ITEMS


async def test_put_sets_the_ttl(cache: RecommendationCache, redis_client: redis.Redis) -> None:
    await cache.put("u1", ITEMS)
    ttl = await redis_client.ttl(cache.key("u1"))
    assert 0 < ttl <= cache.ttl_s


async def test_invalidate(cache: RecommendationCache) -> None:
    await cache.put("u1", ITEMS)
    await cache.invalidate("u1")
    assert await cache.get("u1") is None


async def test_model_version_is_in_the_key(redis_client: redis.Redis) -> None:
    old = RecommendationCache(redis_client, "v1", ttl_s=60)
    new = RecommendationCache(redis_client, "v2", ttl_s=60)
    await old.put("u1", ITEMS)
    assert old.key("u1") == topk_key("v1", "u1") == "genrec:v1:topk:u1"
    assert await redis_client.exists("genrec:v1:topk:u1") == 1
    assert await new.get("u1") is None  # a new model never serves the old model's list


async def test_put_many_writes_every_user_with_ttl(
    cache: RecommendationCache, redis_client: redis.Redis
) -> None:
    lists = {f"u{n}": ITEMS[: n % 3 + 1] for n in range(10)}
    await cache.put_many(lists)
    for user_id, items in lists.items():
        assert await cache.get(user_id) == items
        assert await redis_client.ttl(cache.key(user_id)) > 0
    await cache.put_many({})  # nothing to do, no error


async def test_corrupt_entry_is_a_miss_and_is_dropped(
    cache: RecommendationCache, redis_client: redis.Redis
) -> None:
    await redis_client.set(cache.key("u1"), b"not json")
    assert await cache.get("u1") is None
    assert await redis_client.exists(cache.key("u1")) == 0
