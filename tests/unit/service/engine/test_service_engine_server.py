"""The engine as its own service: the engine app over real HTTP, the API talking to it through
RemoteRecommender, and the API's behaviour while the engine process is down and after it returns."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
import redis.asyncio as redis
from live_server import live_server
from service_fakes import MODEL_VERSION, HashRecommender, open_client

from model.catalog import Catalog
from service.api.app import create_app
from service.cache import RecommendationCache
from service.engine.client import EngineUnavailable, RemoteRecommender
from service.engine.server import create_engine_app
from service.history import HistoryStore
from service.local.redis_server import free_port
from service.precompute.job import precompute
from service.precompute.sources import Source
from service.settings import Settings


@pytest.fixture
def engine_settings() -> Settings:
    return Settings(max_k=20, engine_max_batch=8)


async def test_engine_service_answers_recommend_rank_and_info(
    catalog: Catalog, engine_settings: Settings
) -> None:
    model = HashRecommender(catalog, delay_s=0.05)
    with live_server(create_engine_app(engine_settings, model), free_port()) as url:
        client = RemoteRecommender(url, catalog, MODEL_VERSION, timeout_s=10)
        try:
            info = await client.info()
            assert (info.model_version, info.catalog_items, info.max_batch) == (MODEL_VERSION, 30, 8)
            assert await client.status() == "ok"
            lists = await asyncio.gather(*(client.recommend([[f"i{n}"]], 5) for n in range(6)))
            for n, [top] in enumerate(lists):
                assert top == model.top_k([f"i{n}"], 5)
            assert len(model.calls) < 6  # concurrent HTTP requests shared engine calls
            [ranked] = await client.rank([(["i1"], ["i4", "i2", "i4", "i9"])])
            assert ranked == model.rank([(["i1"], ["i4", "i2", "i9"])])[0]
            async with httpx.AsyncClient(base_url=url) as http:
                bad = await http.post("/v1/engine/rank", json={"requests": [[["i1"], ["nope"]]]})
                assert bad.status_code == 422 and "nope" in bad.json()["detail"]
                assert (
                    await http.post("/v1/engine/recommend", json={"histories": [], "k": 5})
                ).status_code == 422
                assert (await http.get("/health/ready")).json() == {
                    "status": "ready",
                    "model_version": MODEL_VERSION,
                    "pid": os.getpid(),  # the live server runs in this process
                }
                assert "genrec_engine_batch_size_count" in (await http.get("/metrics")).text
        finally:
            await client.aclose()


async def test_a_client_refuses_an_engine_of_another_model_version(
    catalog: Catalog, engine_settings: Settings
) -> None:
    with live_server(
        create_engine_app(engine_settings, HashRecommender(catalog, "v-other")), free_port()
    ) as url:
        client = RemoteRecommender(url, catalog, MODEL_VERSION, timeout_s=10)
        try:
            assert "v-other" in await client.status()
            with pytest.raises(EngineUnavailable, match="v-other"):
                await client.recommend([["i1"]], 5)
        finally:
            await client.aclose()


async def test_api_on_the_engine_service_survives_the_engine_going_down_and_recovers(
    catalog: Catalog, redis_url: str, history: HistoryStore, engine_settings: Settings
) -> None:
    """Kill the engine process's server mid-traffic: hits stay hits, a user whose list an event
    invalidated gets the stale list, others the fallback; nothing hangs, readiness says
    "degraded"; once the engine is back, misses go to the model again."""
    port = free_port()
    engine_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        redis_url=redis_url, max_k=20, default_k=5, history_len=5, engine_url=engine_url, engine_timeout_s=2.0
    )
    model = HashRecommender(catalog)
    await history.set_many({"cached": ["i1"], "evented": ["i2"], "cold": ["i3"]})
    client = RemoteRecommender(engine_url, catalog, MODEL_VERSION, timeout_s=settings.engine_timeout_s)
    async with open_client(create_app(settings, client)) as api:
        with live_server(create_engine_app(engine_settings, model), port):
            for user in ("cached", "evented"):
                assert (await api.get("/v1/recommend", params={"user_id": user})).json()["source"] == "model"
            assert (await api.get("/health/ready")).json()["status"] == "ready"
        # the engine is gone
        started = time.monotonic()
        hit = (await api.get("/v1/recommend", params={"user_id": "cached"})).json()
        assert hit["source"] == "cache" and hit["degraded"] is None
        assert (
            await api.post("/v1/events", json={"events": [{"user_id": "evented", "item_id": "i7"}]})
        ).status_code == 200
        stale = (await api.get("/v1/recommend", params={"user_id": "evented"})).json()
        assert stale["source"] == "cache" and "model unavailable" in stale["degraded"]
        assert "i7" not in {item["item_id"] for item in stale["items"]}
        cold = (await api.get("/v1/recommend", params={"user_id": "cold"})).json()
        assert cold["source"] == "fallback" and cold["degraded"] == "model unavailable"
        assert all(str(port) not in answer["degraded"] for answer in (stale, cold))  # no internal address
        ranked = await api.post("/v1/rank", json={"user_id": "cold", "candidates": ["i5", "i1"]})
        assert ranked.status_code == 200 and ranked.json()["source"] == "fallback"
        ready = await api.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["model"].startswith("error")
        assert time.monotonic() - started < 5  # refused connections answer at once, no hang
        with live_server(create_engine_app(engine_settings, model), port):  # back
            again = (await api.get("/v1/recommend", params={"user_id": "cold"})).json()
            assert again["source"] == "model"
            ranked = (await api.post("/v1/rank", json={"user_id": "cold", "candidates": ["i5", "i1"]})).json()
            assert ranked["source"] == "model"
            assert (await api.get("/health/ready")).json()["status"] == "ready"
    await client.aclose()


async def test_a_hung_engine_costs_a_request_at_most_the_timeout(
    catalog: Catalog, redis_url: str, history: HistoryStore, engine_settings: Settings
) -> None:
    settings = Settings(redis_url=redis_url, max_k=20, history_len=5, engine_timeout_s=0.5)
    slow = HashRecommender(catalog, delay_s=3.0)
    with live_server(create_engine_app(engine_settings, slow), free_port()) as url:
        client = RemoteRecommender(url, catalog, MODEL_VERSION, timeout_s=settings.engine_timeout_s)
        async with open_client(create_app(settings.model_copy(update={"engine_url": url}), client)) as api:
            await history.set_many({"u1": ["i1"]})
            started = time.monotonic()
            body = (await api.get("/v1/recommend", params={"user_id": "u1", "k": 3})).json()
            assert time.monotonic() - started < 2.0
            assert body["source"] == "fallback" and body["degraded"] == "model unavailable"
        await client.aclose()


async def test_precompute_through_the_engine_service(
    catalog: Catalog, redis_client: redis.Redis, history: HistoryStore, engine_settings: Settings
) -> None:
    model = HashRecommender(catalog)
    users = [(f"u{n}", [f"i{n % 30}", f"i{(n + 1) % 30}"]) for n in range(40)]
    cache = RecommendationCache(redis_client, MODEL_VERSION, ttl_s=600)
    with live_server(create_engine_app(engine_settings, model), free_port()) as url:
        client = RemoteRecommender(url, catalog, MODEL_VERSION, timeout_s=10)
        try:
            summary = await precompute(
                client, Source(users, None), cache, history, k=10, batch_size=16, history_len=5
            )
        finally:
            await client.aclose()
    assert (summary.users, summary.cached) == (40, 40)
    for user_id, items in users:
        entry = await cache.get(user_id)
        assert entry is not None and entry.items == model.top_k(items, 10)
    assert sum(len(call) for call in model.calls) == 40


async def test_a_silent_engine_fails_status_fast_and_calls_at_the_timeout(catalog: Catalog) -> None:
    """A listener that accepts and never answers (a wedged engine): readiness learns it within
    STATUS_TIMEOUT_S, however long ENGINE_TIMEOUT_S is; a request waits ENGINE_TIMEOUT_S."""
    import socket

    from service.engine.client import STATUS_TIMEOUT_S
    from service.engine.protocol import EngineTimeout

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    client = RemoteRecommender(
        f"http://127.0.0.1:{listener.getsockname()[1]}", catalog, MODEL_VERSION, timeout_s=30
    )
    try:
        started = time.monotonic()
        assert "did not answer" in await client.status()
        assert time.monotonic() - started < STATUS_TIMEOUT_S + 1
        client.timeout_s = 0.5
        started = time.monotonic()
        with pytest.raises(EngineTimeout, match=r"within 0\.5s"):
            await client.recommend([["i1"]], 5)
        assert time.monotonic() - started < 2
    finally:
        await client.aclose()
        listener.close()
