"""The FastAPI app end to end over ASGI, on the real Redis, with the in-test recommender."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from service_fakes import HashRecommender, open_client

from service.api.app import create_app
from service.history import HistoryStore
from service.local.redis_server import free_port
from service.settings import Settings


async def test_recommend_model_then_cache(client: httpx.AsyncClient, history: HistoryStore) -> None:
    await history.set_many({"u1": ["i1", "i2"]})
    response = await client.get("/recommend", params={"user_id": "u1", "k": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "u1"
    assert body["source"] == "model"
    assert body["model_version"] == "test-v1"
    items = body["items"]
    assert len(items) == 7 and len({item["item_id"] for item in items}) == 7
    assert all(item["title"].startswith("Item ") and isinstance(item["score"], float) for item in items)

    again = await client.get("/recommend", params={"user_id": "u1", "k": 7})
    assert again.json()["source"] == "cache"
    assert again.json()["items"] == items


async def test_default_k(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get("/recommend", params={"user_id": "stranger"})
    assert response.status_code == 200
    assert len(response.json()["items"]) == settings.default_k


async def test_unknown_user_gets_the_fallback(client: httpx.AsyncClient) -> None:
    body = (await client.get("/recommend", params={"user_id": "stranger", "k": 3})).json()
    assert body["source"] == "fallback"
    assert [item["item_id"] for item in body["items"]] == ["i0", "i1", "i2"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"user_id": "u1", "k": 0}, "k must be between 1 and 20"),
        ({"user_id": "u1", "k": 21}, "k must be between 1 and 20"),
        ({"user_id": "u1", "k": "ten"}, "k: Input should be a valid integer"),
        ({"k": 5}, "user_id: Field required"),
        ({"user_id": ""}, "user_id: String should have at least 1 character"),
        ({"user_id": "u" * 257}, "user_id: String should have at most 256 characters"),
    ],
)
async def test_bad_requests_are_422_with_a_message(
    client: httpx.AsyncClient, params: dict[str, object], message: str
) -> None:
    response = await client.get("/recommend", params=params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert message in detail


async def test_health(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready", "redis": "ok", "model": "ok", "model_version": "test-v1", "pid": os.getpid()
    }  # fmt: skip


async def test_metrics_count_sources(client: httpx.AsyncClient, history: HistoryStore) -> None:
    await history.set_many({"u1": ["i5"]})
    for user_id in ("u1", "u1", "stranger"):
        await client.get("/recommend", params={"user_id": user_id})
    text = (await client.get("/metrics")).text
    assert 'genrec_recommendations_total{source="model"} 1.0' in text
    assert 'genrec_recommendations_total{source="cache"} 1.0' in text
    assert 'genrec_recommendations_total{source="fallback"} 1.0' in text
    assert "genrec_engine_batch_size_count 1.0" in text
    # latency by route template (the cache-hit path's own middleware), /metrics not counted
    assert (
        'genrec_http_request_duration_seconds_count{handler="/recommend",method="GET",status="200"} 3.0'
        in text
    )
    assert "/metrics" not in text
    await client.get("/v1/items/i3")
    await client.get("/no/such/path")
    text = (await client.get("/metrics")).text
    assert 'handler="/v1/items/{item_id}",method="GET",status="200"' in text
    assert 'handler="unmatched",method="GET",status="404"' in text


async def test_unreachable_redis_is_not_ready(recommender: HashRecommender) -> None:
    closed = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_s=0.5)
    async with open_client(create_app(closed, recommender)) as http:
        assert (await http.get("/health/live")).status_code == 200
        ready = await http.get("/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready"
        assert body["redis"].startswith("error")
        assert body["model"] == "ok"
        response = await http.get("/recommend", params={"user_id": "u1", "k": 3})
        assert response.status_code == 200  # degraded, not down
        body = response.json()
        assert body["source"] == "fallback"
        assert body["degraded"].startswith("Redis unavailable")
        assert [item["item_id"] for item in body["items"]] == ["i0", "i1", "i2"]
        events = await http.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i1"}]})
        assert events.status_code == 503  # refused, so the client knows to retry: nothing is lost
        assert events.json()["detail"].startswith("Redis unavailable")


async def test_missing_redis_url_fails_startup_clearly(recommender: HashRecommender) -> None:
    app = create_app(Settings(redis_url=None), recommender)
    with pytest.raises(RuntimeError, match="REDIS_URL is not set"):
        async with app.router.lifespan_context(app):
            pass


async def test_an_exhausted_connection_pool_degrades_instead_of_failing(
    redis_url: str, recommender: HashRecommender, history: HistoryStore
) -> None:
    """Past REDIS_MAX_CONNECTIONS a command fails fast (retried once); the request still answers."""
    await history.set_many({f"u{n}": ["i1"] for n in range(20)})
    settings = Settings(redis_url=redis_url, max_k=20, redis_max_connections=1)
    async with open_client(create_app(settings, recommender)) as http:
        responses = await asyncio.gather(
            *(http.get("/v1/recommend", params={"user_id": f"u{n % 20}"}) for n in range(40))
        )
    assert {r.status_code for r in responses} == {200}
    sources = {r.json()["source"] for r in responses}
    assert sources <= {"cache", "model", "fallback"} and "model" in sources
