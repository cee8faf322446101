"""LocalRecommender: a blocking recommender run off the event loop, concurrent requests batched
into one engine call at a time and identical ones coalesced."""

from __future__ import annotations

import asyncio

import pytest
from service_fakes import HashRecommender

from model.catalog import Catalog
from service.api.recommend import RecommendService
from service.cache import RecommendationCache
from service.engine.runner import LocalRecommender
from service.history import HistoryStore
from service.settings import Settings


async def test_concurrent_misses_are_batched_and_never_overlap(
    catalog: Catalog, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> None:
    slowish = HashRecommender(catalog, delay_s=0.05)  # raises if two threads overlap
    runner = LocalRecommender(slowish, timeout_s=5.0, max_batch=4)
    sizes: list[int] = []
    runner.on_batch = sizes.append
    service = RecommendService(runner, cache, history, settings)
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
    service = RecommendService(LocalRecommender(slowish, timeout_s=5.0), cache, history, settings)
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
    runner = LocalRecommender(flaky, timeout_s=5.0)
    with pytest.raises(RuntimeError, match="engine crashed"):
        await runner.recommend([["i1"], ["i2"]], 5)
    assert len(await runner.recommend([["i1"]], 5)) == 1
