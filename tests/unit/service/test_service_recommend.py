"""RecommendService: cache-aside over the model, the popularity fallback, k handling."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from service_fakes import HashRecommender

from model.catalog import Catalog
from service.cache import RecommendationCache
from service.history import HistoryStore
from service.recommend import EngineTimeout, InvalidK, ModelRunner, RecommendService, usable_history
from service.settings import Settings


async def test_miss_runs_the_model_then_hits_the_cache(
    service: RecommendService, history: HistoryStore, recommender: HashRecommender, settings: Settings
) -> None:
    await history.set_many({"u1": ["i1", "i2", "i3"]})
    first = await service.recommend("u1", 10, exclude_seen=False)
    assert first.source == "model"
    assert first.model_version == recommender.model_version
    assert [item.item_id for item in first.items] == [
        s.item_id for s in recommender.top_k(["i1", "i2", "i3"], settings.max_k)[:10]
    ]
    assert recommender.calls == [[["i1", "i2", "i3"]]]

    second = await service.recommend("u1", 10, exclude_seen=False)
    assert second.source == "cache"
    assert second.items == first.items
    assert len(recommender.calls) == 1  # served without the model


async def test_cache_holds_max_k_and_requests_slice_it(
    service: RecommendService, history: HistoryStore, cache: RecommendationCache, settings: Settings
) -> None:
    await history.set_many({"u1": ["i4"]})
    three = await service.recommend("u1", 3, exclude_seen=False)
    cached = await cache.get("u1")
    assert cached is not None and len(cached) == settings.max_k
    full = await service.recommend("u1", settings.max_k, exclude_seen=False)
    assert full.source == "cache"
    assert len(full.items) == settings.max_k
    assert full.items[:3] == three.items
    assert len({item.item_id for item in full.items}) == settings.max_k
    assert all(item.title == f"Item {item.item_id[1:]}" for item in full.items)


async def test_unknown_user_gets_popular_items_uncached(
    service: RecommendService, cache: RecommendationCache, catalog: Catalog, recommender: HashRecommender
) -> None:
    result = await service.recommend("stranger", 5)
    assert result.source == "fallback"
    assert [item.item_id for item in result.items] == ["i0", "i1", "i2", "i3", "i4"]
    assert [item.score for item in result.items] == [float(catalog[f"i{n}"].popularity) for n in range(5)]
    assert await cache.get("stranger") is None
    assert recommender.calls == []
    assert (await service.recommend("stranger", 5)).source == "fallback"


async def test_unknown_history_items_are_skipped(
    service: RecommendService, history: HistoryStore, recommender: HashRecommender
) -> None:
    await history.set_many({"u1": ["i1", "gone", "i2", "also-gone"]})
    result = await service.recommend("u1", 4)
    assert result.source == "model"
    assert recommender.calls == [[["i1", "i2"]]]


async def test_history_of_only_unknown_items_falls_back(
    service: RecommendService, history: HistoryStore, recommender: HashRecommender
) -> None:
    await history.set_many({"u1": ["gone", "also-gone"]})
    assert (await service.recommend("u1", 3)).source == "fallback"
    assert recommender.calls == []


async def test_only_the_last_history_len_items_reach_the_model(
    service: RecommendService, history: HistoryStore, recommender: HashRecommender, settings: Settings
) -> None:
    items = [f"i{n}" for n in range(12)]
    await history.set_many({"u1": items})
    await service.recommend("u1", 1)
    assert recommender.calls == [[items[-settings.history_len :]]]


@pytest.mark.parametrize("k", [0, -1, 21])
async def test_k_outside_1_to_max_k_is_rejected(service: RecommendService, k: int) -> None:
    with pytest.raises(InvalidK, match="between 1 and 20"):
        await service.recommend("u1", k)


def test_usable_history(catalog: Catalog) -> None:
    assert usable_history(["x", "i1", "y", "i2", "i3"], catalog, 4) == (["i1", "i2", "i3"], 1)
    assert usable_history(["i1", "x", "y"], catalog, 2) == ([], 2)
    assert usable_history([], catalog, 4) == ([], 0)


async def test_slow_model_times_out(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore, redis_url: str
) -> None:
    slow = HashRecommender(catalog, delay_s=0.5)
    settings = Settings(redis_url=redis_url, engine_timeout_s=0.1)
    service = RecommendService(slow, cache, history, settings)
    await history.set_many({"u1": ["i1"]})
    result = await service.recommend("u1", 5)
    assert result.source == "fallback"
    assert result.degraded is not None and "did not answer within 0.1s" in result.degraded
    assert len(result.items) == 5
    assert await cache.get("u1") is None
    with pytest.raises(EngineTimeout, match="did not answer within"):
        await service.runner.run([["i1"]], 5)


async def test_concurrent_misses_are_batched_and_never_overlap(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> None:
    slowish = HashRecommender(catalog, delay_s=0.05)  # raises if two threads overlap
    runner = ModelRunner(slowish, timeout_s=5.0, max_batch=4)
    sizes: list[int] = []
    runner.on_batch = sizes.append
    service = RecommendService(slowish, cache, history, settings, runner)
    await history.set_many({f"u{n}": [f"i{n}"] for n in range(9)})
    results = await asyncio.gather(*(service.recommend(f"u{n}", 5, exclude_seen=False) for n in range(9)))
    assert {r.source for r in results} == {"model"}
    for n, result in enumerate(results):  # each user got the list of their own history
        expected = [s.item_id for s in slowish.top_k([f"i{n}"], settings.max_k)[:5]]
        assert [i.item_id for i in result.items] == expected
    assert sum(sizes) == 9 and max(sizes) <= 4
    assert len(slowish.calls) < 9  # misses that waited went in together


async def test_concurrent_misses_of_one_user_are_one_generation(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> None:
    slowish = HashRecommender(catalog, delay_s=0.05)
    service = RecommendService(slowish, cache, history, settings, ModelRunner(slowish, timeout_s=5.0))
    await history.set_many({"u1": ["i3"]})
    results = await asyncio.gather(*(service.recommend("u1", 5) for _ in range(6)))
    assert len({tuple(i.item_id for i in r.items) for r in results}) == 1
    assert slowish.calls == [[["i3"]]]


async def test_an_engine_failure_reaches_every_waiter_and_the_next_call_works(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> None:
    class Flaky(HashRecommender):
        fail = True

        def recommend(self, histories, k):  # type: ignore[no-untyped-def]
            if self.fail:
                self.fail = False
                raise RuntimeError("engine crashed")
            return super().recommend(histories, k)

    flaky = Flaky(catalog)
    runner = ModelRunner(flaky, timeout_s=5.0)
    with pytest.raises(RuntimeError, match="engine crashed"):
        await runner.run([["i1"], ["i2"]], 5)
    assert len(await runner.run([["i1"]], 5)) == 1


def test_cache_of_another_model_version_is_refused(
    recommender: HashRecommender, redis_client: redis.Redis, history: HistoryStore, settings: Settings
) -> None:
    other = RecommendationCache(redis_client, "other-version", ttl_s=60)
    with pytest.raises(ValueError, match="other-version"):
        RecommendService(recommender, other, history, settings)
