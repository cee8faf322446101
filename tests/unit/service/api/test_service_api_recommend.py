"""RecommendService: cache-aside over the model, the popularity fallback, k handling (the tests marked
``cluster`` also on a Redis Cluster)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from service_fakes import HashRecommender, run_locally

from model.catalog import Catalog
from service.api.recommend import Event, InvalidRequest, RecommendService
from service.api.render import RecommendResult
from service.cache import RecommendationCache
from service.engine.protocol import EngineTimeout
from service.history import HistoryStore
from service.settings import Settings


@pytest.mark.cluster
async def test_miss_runs_the_model_then_hits_the_cache(
    service: RecommendService, history: HistoryStore, recommender: HashRecommender, settings: Settings
) -> None:
    await history.set_many({"u1": ["i1", "i2", "i3"]})
    first = await service.recommend("u1", 10, exclude_seen=False)
    assert first.source == "model"
    assert (
        RecommendResult.model_validate_json(service.render(first)).model_version == recommender.model_version
    )
    assert [item.item_id for item in first.items] == [
        s.item_id for s in recommender.top_k(["i1", "i2", "i3"], settings.max_k)[:10]
    ]
    assert recommender.calls == [[["i1", "i2", "i3"]]]

    second = await service.recommend("u1", 10, exclude_seen=False)
    assert second.source == "cache"
    assert second.items == first.items
    assert len(recommender.calls) == 1  # served without the model


async def test_cache_holds_list_len_and_requests_slice_it(
    service: RecommendService, history: HistoryStore, cache: RecommendationCache, settings: Settings
) -> None:
    await history.set_many({"u1": ["i4"]})
    three = await service.recommend("u1", 3, exclude_seen=False)
    cached = await cache.get("u1")
    assert (
        cached is not None and len(cached.items) == settings.list_len == settings.max_k + settings.cache_extra
    )
    full = await service.recommend("u1", settings.max_k, exclude_seen=False)
    assert full.source == "cache"
    assert len(full.items) == settings.max_k
    assert full.items[:3] == three.items
    assert len({item.item_id for item in full.items}) == settings.max_k
    rendered = RecommendResult.model_validate_json(service.render(full))
    assert [item.item_id for item in rendered.items] == [item.item_id for item in full.items]
    assert all(item.title == f"Item {item.item_id[1:]}" for item in rendered.items)
    assert [item.score for item in rendered.items] == [item.score for item in full.items]


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
    with pytest.raises(InvalidRequest, match="between 1 and 20"):
        await service.recommend("u1", k)


async def test_slow_model_times_out(
    catalog: Catalog,
    cache: RecommendationCache,
    history: HistoryStore,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = HashRecommender(catalog, delay_s=0.5)
    settings = Settings(redis_url=redis_url, engine_timeout_s=0.1)
    service = RecommendService(run_locally(slow, settings), cache, history, settings)
    await history.set_many({"u1": ["i1"]})
    result = await service.recommend("u1", 5)
    assert result.source == "fallback"
    assert result.degraded == "model unavailable"
    assert "did not answer within 0.1s" in caplog.text  # the detail is logged for operators
    assert len(result.items) == 5
    assert await cache.get("u1") is None
    with pytest.raises(EngineTimeout, match="did not answer within"):
        await service.recommender.recommend([["i1"]], 5)


def test_cache_of_another_model_version_is_refused(
    recommender: HashRecommender, redis_client: redis.Redis, history: HistoryStore, settings: Settings
) -> None:
    other = RecommendationCache(redis_client, "other-version", ttl_s=60)
    with pytest.raises(ValueError, match="other-version"):
        RecommendService(run_locally(recommender, settings), other, history, settings)


@pytest.mark.cluster
async def test_a_hit_excludes_seen_items_from_the_entry_alone(
    service: RecommendService, history: HistoryStore, cache: RecommendationCache, recommender: HashRecommender
) -> None:
    """The cached entry marks what the user had, so a hit reads no history: a history written
    behind the service's back (no event, so no invalidation) does not change the hit."""
    had = ["i1", "i2", "i3", "i4", "i5"]
    top = [s.item_id for s in recommender.top_k(had, 20)]
    assert set(top) & set(had)  # 20 of 30 items: the list holds some of the user's own
    await history.set_many({"u1": had})
    first = await service.recommend("u1", 5)
    assert first.source == "model"
    assert [i.item_id for i in first.items] == [t for t in top if t not in had][:5]
    cached = await cache.get("u1")
    assert cached is not None and {cached.items[n].item_id for n in cached.seen} == set(top) & set(had)
    await history.set_many({"u1": had})  # the same facts, rewritten
    hit = await service.recommend("u1", 5)
    assert hit.source == "cache" and hit.items == first.items
    everything = await service.recommend("u1", 5, exclude_seen=False)
    assert everything.source == "cache"
    assert everything.items == cached.items[:5]


@pytest.mark.cluster
async def test_model_down_serves_the_stale_list_then_the_fallback(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> None:
    class Broken(HashRecommender):
        broken = False

        def recommend(self, histories, k):  # type: ignore[no-untyped-def]
            if self.broken:
                raise RuntimeError("engine crashed")
            return super().recommend(histories, k)

    broken = Broken(catalog)
    service = RecommendService(run_locally(broken, settings), cache, history, settings)
    await history.set_many({"u1": ["i1"], "u2": ["i2"]})
    before = await service.recommend("u1", 5)
    entry = await cache.get("u1")
    assert entry is not None
    got = before.items[0].item_id
    broken.broken = True
    await service.record_events([Event(user_id="u1", item_id=got)])
    stale = await service.recommend("u1", 5)
    assert stale.source == "cache"
    assert stale.degraded == "model unavailable; serving the list cached before the latest events"
    # the old list, without what the user has now (including the item just got)
    assert stale.items == [i for i in entry.items if i.item_id not in {"i1", got}][:5]
    fallback = await service.recommend("u2", 5)  # nothing cached before: popular items
    assert fallback.source == "fallback" and fallback.degraded is not None


@pytest.mark.cluster
async def test_an_event_during_a_miss_is_not_undone_by_its_list(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> None:
    slow = HashRecommender(catalog, delay_s=0.3)
    service = RecommendService(run_locally(slow, settings), cache, history, settings)
    await history.set_many({"u1": ["i1"]})
    miss = asyncio.create_task(service.recommend("u1", 5))
    await asyncio.sleep(0.1)  # the model is running on history ["i1"]
    await service.record_events([Event(user_id="u1", item_id="i2")])
    assert (await miss).source == "model"
    assert await cache.get("u1") is None  # the list computed without i2 was not cached
    again = await service.recommend("u1", 5)
    assert again.source == "model" and slow.calls[-1] == [["i1", "i2"]]
