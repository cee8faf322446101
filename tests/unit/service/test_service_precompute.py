"""The precompute job fills the cache batch by batch, and the app then serves from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as redis
from service_fakes import HashRecommender, open_client

from model.recommender import ScoredItem
from service.app import create_app
from service.cache import RecommendationCache
from service.history import HistoryStore
from service.precompute import precompute
from service.recommend import RecommendService
from service.settings import Settings


class CountingCache(RecommendationCache):
    """The real cache, counting put_many calls (each is one pipeline round trip)."""

    def __init__(self, client: redis.Redis, model_version: str, ttl_s: int) -> None:
        super().__init__(client, model_version, ttl_s)
        self.put_many_sizes: list[int] = []

    async def put_many(self, lists: Mapping[str, Sequence[ScoredItem]]) -> None:
        self.put_many_sizes.append(len(lists))
        await super().put_many(lists)


def make_users(n: int) -> list[tuple[str, list[str]]]:
    return [(f"u{u}", [f"i{(u + j) % 30}" for j in range(u % 4 + 1)]) for u in range(n)]


async def test_precompute_caches_every_user_one_pipeline_per_batch(
    redis_client: redis.Redis, recommender: HashRecommender, history: HistoryStore, settings: Settings
) -> None:
    cache = CountingCache(redis_client, recommender.model_version, settings.cache_ttl_s)
    users = make_users(23)
    summary = await precompute(
        recommender,
        iter(users),
        cache,
        history,
        k=settings.max_k,
        batch_size=10,
        history_len=settings.history_len,
    )
    assert (summary.users, summary.batches, summary.cached, summary.skipped_users) == (23, 3, 23, 0)
    assert summary.users_per_s > 0
    assert [len(call) for call in recommender.calls] == [10, 10, 3]  # one model call per batch
    assert cache.put_many_sizes == [10, 10, 3]  # one pipelined write per batch
    for user_id, items in users:
        cached = await cache.get(user_id)
        assert cached == recommender.top_k(items, settings.max_k)
        assert await history.get(user_id, 100) == items


async def test_users_without_known_items_are_stored_not_modelled(
    cache: RecommendationCache, recommender: HashRecommender, history: HistoryStore
) -> None:
    users = [("a", ["i1", "nope"]), ("b", ["nope", "never"]), ("c", [])]
    summary = await precompute(recommender, users, cache, history, k=5, batch_size=64, history_len=20)
    assert (summary.users, summary.batches, summary.cached, summary.skipped_users) == (3, 1, 1, 2)
    assert summary.skipped_unknown_items == 3
    assert recommender.calls == [[["i1"]]]
    assert await cache.get("b") is None
    assert await history.get("b", 10) == ["nope", "never"]


async def test_precomputed_lists_are_served_from_cache_and_match_on_demand(
    redis_client: redis.Redis,
    cache: RecommendationCache,
    recommender: HashRecommender,
    history: HistoryStore,
    settings: Settings,
) -> None:
    users = make_users(12)
    await precompute(
        recommender, users, cache, history, k=settings.max_k, batch_size=5, history_len=settings.history_len
    )
    async with open_client(create_app(settings, recommender)) as http:
        for user_id, _ in users:
            body = (await http.get("/recommend", params={"user_id": user_id, "k": 10})).json()
            assert body["source"] == "cache"
            assert len(body["items"]) == 10
    calls_before = len(recommender.calls)

    # A miss recomputed on demand from the stored history gives the same list.
    await cache.invalidate("u7")
    service = RecommendService(recommender, cache, history, settings)
    fresh = await service.recommend("u7", settings.max_k, exclude_seen=False)
    assert fresh.source == "model"
    assert [i.item_id for i in fresh.items] == [
        s.item_id for s in recommender.top_k(users[7][1], settings.max_k)
    ]
    assert len(recommender.calls) == calls_before + 1
