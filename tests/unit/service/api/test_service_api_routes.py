"""The v1 API over ASGI on the real Redis: events, histories, items, rank, exclude_seen, the API key.

The tests marked ``cluster`` run again on a real three-master Redis Cluster (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx
import pytest
from service_fakes import HashRecommender, open_client

from service.api.app import create_app
from service.cache import RecommendationCache
from service.history import HistoryStore
from service.local.redis_server import EmbeddedRedis
from service.settings import Settings


@pytest.mark.cluster
async def test_events_append_history_and_invalidate_the_cached_list(
    client: httpx.AsyncClient, history: HistoryStore, cache: RecommendationCache
) -> None:
    await history.set_many({"u1": ["i1"]})
    first = (await client.get("/v1/recommend", params={"user_id": "u1"})).json()
    assert first["source"] == "model"
    assert await cache.get("u1") is not None

    events = [
        {"user_id": "u1", "item_id": "i4", "ts": 20.0},
        {"user_id": "u1", "item_id": "i3", "ts": 10.0},
        {"user_id": "u2", "item_id": "i7"},
    ]
    response = await client.post("/v1/events", json={"events": events})
    assert response.status_code == 200
    assert response.json() == {"accepted": 3, "users": 2}
    assert await history.get_all("u1") == ["i1", "i3", "i4"]  # ordered by ts
    assert await history.get_all("u2") == ["i7"]
    assert await cache.get("u1") is None  # the old list is no longer served as fresh

    again = (await client.get("/v1/recommend", params={"user_id": "u1"})).json()
    assert again["source"] == "model"
    assert again["items"] != first["items"]


@pytest.mark.cluster
async def test_unknown_items_reject_the_whole_batch_and_record_nothing(
    client: httpx.AsyncClient, history: HistoryStore
) -> None:
    events = [{"user_id": "u1", "item_id": "i2"}, {"user_id": "u1", "item_id": "nope"}]
    response = await client.post("/v1/events", json={"events": events})
    assert response.status_code == 422
    assert "unknown item id(s): 'nope'" in response.json()["detail"]
    assert await history.get_all("u1") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": []}, "events: List should have at least 1 item"),
        ({"events": [{"user_id": "", "item_id": "i1"}]}, "events.0.user_id: String should have at least 1"),
        ({"events": [{"user_id": "u1"}]}, "events.0.item_id: Field required"),
        ({"events": [{"user_id": "u1", "item_id": "i1", "ts": "yesterday"}]}, "events.0.ts"),
        ({}, "events: Field required"),
    ],
)
async def test_bad_event_bodies_are_422_with_a_message(
    client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    response = await client.post("/v1/events", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"events": [{"user_id": "u1", "item_id": "i1", "ts": NaN}]}', "events.0.ts"),
        ('{"events": [{"user_id": "u1", "item_id": "i1", "ts": Infinity}]}', "events.0.ts"),
        ('{"events": [{"user_id": "u1", "item_id": "i1", "ts": true}]}', "events.0.ts"),
        ('{"events": [{"user_id": "u1", "item_id": "i1", "ts": -5}]}', "events.0.ts"),
        ('{"events": [{"user_id": "u1", "item_id": "i1", "tss": 5}]}', "events.0.tss: Extra inputs"),
        ('{"events": [{"user_id": "u1", "item_id": "i1"}], "user": "u1"}', "user: Extra inputs"),
    ],
)
async def test_loose_event_values_and_unknown_fields_are_refused(
    client: httpx.AsyncClient, history: HistoryStore, raw: str, message: str
) -> None:
    response = await client.post("/v1/events", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert await history.get_all("u1") == []  # nothing recorded


async def test_integer_timestamps_are_accepted(client: httpx.AsyncClient) -> None:
    raw = '{"events": [{"user_id": "u1", "item_id": "i1", "ts": 1700000000}]}'
    response = await client.post("/v1/events", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_declared_json_gets_415_saying_so(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    raw = '{"events": [{"user_id": "u1", "item_id": "i1"}]}'
    response = await client.post("/v1/events", content=raw, headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]


@pytest.mark.cluster
async def test_recommend_excludes_seen_items_unless_asked_not_to(
    client: httpx.AsyncClient, history: HistoryStore
) -> None:
    top = (await client.get("/v1/recommend", params={"user_id": "u9", "k": 5, "exclude_seen": False})).json()
    assert top["source"] == "fallback"
    seen = [item["item_id"] for item in top["items"][:2]]
    await history.set_many({"u9": seen})
    for source in ("model", "cache"):
        body = (await client.get("/v1/recommend", params={"user_id": "u9", "k": 20})).json()
        assert body["source"] == source
        ids = [item["item_id"] for item in body["items"]]
        assert not set(ids) & set(seen)
    with_seen = (
        await client.get("/v1/recommend", params={"user_id": "u9", "k": 20, "exclude_seen": False})
    ).json()
    assert len(with_seen["items"]) == 20
    # The fallback skips seen items too and still returns k: i0 is older than the history
    # window (5 items, none in the catalog), so the model has nothing to go on.
    await history.set_many({"u8": ["i0", *(f"retired{n}" for n in range(5))]})
    fallback = (await client.get("/v1/recommend", params={"user_id": "u8", "k": 3})).json()
    assert fallback["source"] == "fallback"
    assert [item["item_id"] for item in fallback["items"]] == ["i1", "i2", "i3"]


@pytest.mark.cluster
async def test_user_history_and_items(client: httpx.AsyncClient, history: HistoryStore) -> None:
    await history.set_many({"u1": ["i3", "retired", "i5"]})
    body = (await client.get("/v1/users/u1/history")).json()
    assert body == {
        "user_id": "u1",
        "items": [
            {"item_id": "i3", "title": "Item 3"},
            {"item_id": "retired", "title": None},
            {"item_id": "i5", "title": "Item 5"},
        ],
    }
    assert (await client.get("/v1/users/u1/history", params={"limit": 1})).json()["items"] == [
        {"item_id": "i5", "title": "Item 5"}
    ]
    assert (await client.get("/v1/users/nobody/history")).json()["items"] == []

    item = (await client.get("/v1/items/i9")).json()
    assert item == {"item_id": "i9", "title": "Item 9", "semantic_id": "<a_1><b_0><c_1>", "popularity": 91}
    missing = await client.get("/v1/items/nope")
    assert missing.status_code == 404
    assert "'nope' is not in the catalog" in missing.json()["detail"]


async def test_unversioned_paths_still_answer_but_only_v1_is_documented(client: httpx.AsyncClient) -> None:
    assert (await client.get("/recommend", params={"user_id": "x"})).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/v1/recommend", "/v1/events", "/v1/users/{user_id}/history", "/v1/items/{item_id}"} <= set(paths)
    assert "/recommend" not in paths


async def test_api_key_guards_the_api_but_not_health_or_metrics(
    settings: Settings, recommender: HashRecommender
) -> None:
    guarded = settings.model_copy(update={"api_key": "s3cret"})
    async with open_client(create_app(guarded, recommender)) as http:
        for headers in ({}, {"X-API-Key": "wrong"}):
            response = await http.get("/v1/recommend", params={"user_id": "u1"}, headers=headers)
            assert response.status_code == 401
            assert response.json() == {"detail": "missing or wrong X-API-Key header"}
        ok = await http.get("/v1/recommend", params={"user_id": "u1"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        posted = await http.post("/v1/events", json={"events": [{"user_id": "u", "item_id": "i1"}]})
        assert posted.status_code == 401
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200


@pytest.mark.cluster
async def test_a_crashed_engine_degrades_to_the_fallback(
    settings: Settings, history: HistoryStore, recommender: HashRecommender
) -> None:
    class Crashing(HashRecommender):
        def recommend(self, histories, k):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA error: device lost")

    async with open_client(create_app(settings, Crashing(recommender.catalog))) as http:
        await history.set_many({"u1": ["i0", "i1"]})
        body = (await http.get("/v1/recommend", params={"user_id": "u1", "k": 3})).json()
        assert body["source"] == "fallback"
        assert body["degraded"] == "model unavailable"  # the exception goes to the log, not to clients
        assert all(item["score"] is None for item in body["items"])  # popularity order, unscored
        assert [item["item_id"] for item in body["items"]] == ["i2", "i3", "i4"]  # seen ones skipped


async def test_redis_restart_mid_traffic_degrades_then_recovers(recommender: HashRecommender) -> None:
    """A real Redis killed and restarted on the same port under steady traffic: no request fails,
    the outage shows as fallback answers and readiness, and service resumes on its own."""
    server = EmbeddedRedis()
    url = server.start()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    settings = Settings(redis_url=url, redis_timeout_s=0.5, max_k=20, default_k=5)
    try:
        async with open_client(create_app(settings, recommender)) as http:
            posted = await http.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i3"}]})
            assert posted.status_code == 200

            async def sources(n: int) -> list[str]:
                out = []
                for _ in range(n):
                    response = await http.get("/v1/recommend", params={"user_id": "u1"})
                    assert response.status_code == 200
                    out.append(response.json()["source"])
                return out

            assert await sources(3) == ["model", "cache", "cache"]
            server.stop()
            assert set(await sources(3)) == {"fallback"}
            assert (await http.get("/health/ready")).status_code == 503
            server.start(port)  # an empty Redis: the history written before is gone with it
            await asyncio.sleep(0.1)
            assert (await http.get("/health/ready")).status_code == 200
            assert set(await sources(2)) == {"fallback"}  # no history yet: the ordinary cold start
            posted = await http.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i3"}]})
            assert posted.status_code == 200
            assert await sources(2) == ["model", "cache"]
    finally:
        server.stop()


@pytest.mark.cluster
async def test_rank_orders_the_candidates_by_the_model(
    client: httpx.AsyncClient, history: HistoryStore, recommender: HashRecommender
) -> None:
    await history.set_many({"u1": ["i1", "i2"]})
    candidates = ["i9", "i3", "i17", "i3", "i25"]
    response = await client.post("/v1/rank", json={"user_id": "u1", "candidates": candidates})
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "model" and body["model_version"] == recommender.model_version
    expected = recommender.rank([(["i1", "i2"], ["i9", "i3", "i17", "i25"])])[0]
    assert [(i["item_id"], i["score"]) for i in body["items"]] == [(s.item_id, s.score) for s in expected]
    assert all(item["title"] == f"Item {item['item_id'][1:]}" for item in body["items"])
    assert recommender.rank_calls[-1] == [(["i1", "i2"], ["i9", "i3", "i17", "i25"])]  # duplicates collapsed


async def test_rank_without_history_is_popularity_order(client: httpx.AsyncClient) -> None:
    body = (
        await client.post("/v1/rank", json={"user_id": "stranger", "candidates": ["i9", "i2", "i5"]})
    ).json()
    assert body["source"] == "fallback" and body["degraded"] is None
    assert [i["item_id"] for i in body["items"]] == ["i2", "i5", "i9"]  # i0 is the most popular


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user_id": "u1", "candidates": ["i1", "nope", "gone"]}, "unknown item id(s): 'nope', 'gone'"),
        ({"user_id": "u1", "candidates": []}, "candidates: List should have at least 1 item"),
        (
            {"user_id": "u1", "candidates": [f"i{n % 30}" for n in range(200)] + ["x"]},
            "unknown item id(s): 'x'",
        ),
        ({"candidates": ["i1"]}, "user_id: Field required"),
    ],
)
async def test_rank_rejects_bad_input_with_a_message(
    client: httpx.AsyncClient, body: dict[str, object], message: str, recommender: HashRecommender
) -> None:
    response = await client.post("/v1/rank", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert recommender.rank_calls == []


async def test_rank_caps_the_candidate_count(redis_url: str, recommender: HashRecommender) -> None:
    settings = Settings(redis_url=redis_url, max_k=20, rank_max_candidates=3)
    async with open_client(create_app(settings, recommender)) as http:
        response = await http.post("/v1/rank", json={"user_id": "u1", "candidates": ["i1", "i2", "i3", "i4"]})
        assert response.status_code == 422
        assert "1..3 distinct items, got 4" in response.json()["detail"]


async def test_score_is_the_model_log_probability_or_null(
    client: httpx.AsyncClient, history: HistoryStore
) -> None:
    await history.set_many({"u1": ["i0", "i1"]})
    modelled = (await client.get("/v1/recommend", params={"user_id": "u1", "k": 5})).json()
    assert modelled["source"] == "model"
    scores = [item["score"] for item in modelled["items"]]
    assert all(isinstance(score, float) and score <= 0 for score in scores)  # log-probabilities
    assert scores == sorted(scores, reverse=True)
    cold = (await client.get("/v1/recommend", params={"user_id": "nobody", "k": 5})).json()
    assert cold["source"] == "fallback" and [item["score"] for item in cold["items"]] == [None] * 5
    ranked = (await client.post("/v1/rank", json={"user_id": "nobody", "candidates": ["i3", "i1"]})).json()
    assert ranked["source"] == "fallback" and all(item["score"] is None for item in ranked["items"])


async def test_docs_are_served_from_local_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()  # nothing loaded from the internet
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = await client.get(f"/docs/assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 1000
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/recommend"]["get"]
    assert "hot path" not in operation.get("description", "").lower()  # no implementation notes


@pytest.mark.parametrize(("docs_public", "status"), [(False, 401), (True, 200)])
async def test_with_an_api_key_the_docs_follow_docs_public(
    settings: Settings, recommender: HashRecommender, docs_public: bool, status: int
) -> None:
    guarded = settings.model_copy(update={"api_key": "s3cret", "docs_public": docs_public})
    async with open_client(create_app(guarded, recommender)) as http:
        for path in ("/docs", "/openapi.json"):
            assert (await http.get(path)).status_code == status
            assert (await http.get(path, headers={"X-API-Key": "s3cret"})).status_code == 200


@pytest.mark.cluster
async def test_delete_user_removes_history_and_lists(
    client: httpx.AsyncClient, history: HistoryStore, cache: RecommendationCache
) -> None:
    await history.set_many({"u1": ["i0", "i1"], "u2": ["i3"]})
    assert (await client.get("/v1/recommend", params={"user_id": "u1"})).json()["source"] == "model"
    await client.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i5"}]})  # -> stale list
    assert (await client.get("/v1/recommend", params={"user_id": "u1"})).json()["source"] == "model"
    response = await client.delete("/v1/users/u1")
    assert response.status_code == 200
    assert response.json() == {"user_id": "u1", "history_items": 3, "cached_lists": 2}
    assert await history.get_all("u1") == []
    assert await cache.get("u1") is None
    assert await cache.client.exists(cache.stale_key("u1")) == 0
    assert (await client.get("/v1/recommend", params={"user_id": "u1"})).json()["source"] == "fallback"
    assert await history.get_all("u2") == ["i3"]  # nobody else touched
    again = await client.delete("/v1/users/u1")
    assert again.json() == {"user_id": "u1", "history_items": 0, "cached_lists": 0}


async def test_every_response_carries_a_request_id_that_reaches_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from service.request_id import RequestIdFilter

    fresh = await client.get("/v1/recommend", params={"user_id": "u1"})
    made = fresh.headers["x-request-id"]
    assert len(made) == 32
    other = await client.get("/v1/recommend", params={"user_id": "u1"})
    assert other.headers["x-request-id"] != made
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    echoed = await client.delete("/v1/users/u7", headers={"X-Request-ID": "client-abc.123"})
    assert echoed.headers["x-request-id"] == "client-abc.123"
    deleted = [r for r in caplog.records if "user u7 deleted" in r.getMessage()]
    assert [r.request_id for r in deleted] == ["client-abc.123"]  # type: ignore[attr-defined]
    bad = await client.get("/health/live", headers={"X-Request-ID": "x" * 500})
    assert len(bad.headers["x-request-id"]) == 32  # an unusable id is replaced, not echoed
    error = await client.get("/v1/recommend")  # a 422 has one too
    assert error.status_code == 422 and "x-request-id" in error.headers


async def test_cors_is_off_by_default_and_a_setting(settings: Settings, recommender: HashRecommender) -> None:
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    async with open_client(create_app(settings, recommender)) as http:
        plain = await http.get("/health/live", headers={"Origin": "https://shop.example"})
        assert "access-control-allow-origin" not in plain.headers
    allowed = settings.model_copy(update={"cors_origins": ["https://shop.example"]})
    async with open_client(create_app(allowed, recommender)) as http:
        response = await http.options("/v1/recommend", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        hit = await http.get("/health/live", headers={"Origin": "https://shop.example"})
        assert "X-Request-ID" in hit.headers["access-control-expose-headers"]
        other = await http.options("/v1/recommend", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.cluster
async def test_batch_recommend_answers_each_user_as_the_single_endpoint_does(
    client: httpx.AsyncClient, history: HistoryStore
) -> None:
    await history.set_many({"u1": ["i0", "i1"], "u2": ["i3"]})
    body = {"user_ids": ["u1", "nobody", "u2", "u1"], "k": 4}
    response = await client.post("/v1/recommend:batch", json=body)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["user_id"] for r in results] == ["u1", "nobody", "u2", "u1"]
    assert results[1]["source"] == "fallback"
    for result in results:
        single = (await client.get("/v1/recommend", params={"user_id": result["user_id"], "k": 4})).json()
        assert [i["item_id"] for i in result["items"]] == [i["item_id"] for i in single["items"]]
        assert len(result["items"]) <= 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user_ids": []}, "user_ids: List should have at least 1 item"),
        ({"user_ids": ["u"] * 101}, "user_ids: List should have at most 100"),
        ({"user_ids": ["u"], "k": 0}, "k must be between 1 and"),
        ({"user_ids": [""]}, "user_ids.0"),
        ({"user_ids": ["u"], "users": 1}, "users: Extra inputs"),
    ],
)
async def test_batch_recommend_refuses_bad_bodies(
    client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    response = await client.post("/v1/recommend:batch", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


@pytest.mark.cluster
async def test_similar_items_come_from_the_model_and_are_cached(
    client: httpx.AsyncClient, recommender: HashRecommender, cache: RecommendationCache
) -> None:
    first = await client.get("/v1/items/i3/similar", params={"k": 5})
    assert first.status_code == 200
    body = first.json()
    assert body["item_id"] == "i3" and body["source"] == "model"
    ids = [item["item_id"] for item in body["items"]]
    expected = [i.item_id for i in recommender.top_k(["i3"], 20) if i.item_id != "i3"][:5]
    assert ids == expected and "i3" not in ids
    assert all(isinstance(item["score"], float) for item in body["items"])
    assert await cache.get_similar("i3") is not None
    again = (await client.get("/v1/items/i3/similar", params={"k": 5})).json()
    assert again["source"] == "cache" and [i["item_id"] for i in again["items"]] == ids
    assert (await client.get("/v1/items/nope/similar")).status_code == 404
    assert (await client.get("/v1/items/i3/similar", params={"k": 0})).status_code == 422


@pytest.mark.cluster
async def test_exclude_filters_every_source_and_k_survives_the_filters(
    client: httpx.AsyncClient, history: HistoryStore, settings: Settings
) -> None:
    await history.set_many({"u1": [f"i{n}" for n in range(5)]})
    full = (await client.get("/v1/recommend", params={"user_id": "u1", "k": 10})).json()
    assert full["source"] == "model" and len(full["items"]) == 10  # 5 seen items did not cost any
    drop = [item["item_id"] for item in full["items"][:3]]
    for attempt in ("cache", "cache"):
        body = (
            await client.get("/v1/recommend", params={"user_id": "u1", "k": 10, "exclude": ",".join(drop)})
        ).json()
        assert body["source"] == attempt
        ids = [item["item_id"] for item in body["items"]]
        assert len(ids) == 10 and not set(ids) & set(drop)
        assert ids[:7] == [item["item_id"] for item in full["items"][3:]]
    cold = (await client.get("/v1/recommend", params={"user_id": "new", "k": 3, "exclude": "i0,i1"})).json()
    assert cold["source"] == "fallback"
    assert not {"i0", "i1"} & {item["item_id"] for item in cold["items"]} and len(cold["items"]) == 3
    too_many = ",".join(f"i{n}" for n in range(101))
    refused = await client.get("/v1/recommend", params={"user_id": "u1", "exclude": too_many})
    assert refused.status_code == 422 and "at most 100" in refused.json()["detail"]


async def test_category_filters_every_source_by_path_prefix(
    client: httpx.AsyncClient, history: HistoryStore
) -> None:
    def ids(body: dict[str, object]) -> list[str]:
        return [item["item_id"] for item in body["items"]]  # type: ignore[attr-defined, index]

    await history.set_many({"u1": ["i0", "i1"]})
    full = (await client.get("/v1/recommend", params={"user_id": "u1", "k": 20})).json()
    beauty = {f"i{n}" for n in range(30) if n % 3 != 2}  # "Beauty, Skin Care" and "Beauty, Hair Care"
    for source in ("cache", "cache"):  # the first request filled the cache
        params = {"user_id": "u1", "k": 20, "category": "beauty"}
        body = (await client.get("/v1/recommend", params=params)).json()
        assert body["source"] == source
        assert set(ids(body)) <= beauty
        kept = [i for i in ids(full) if i in beauty]
        assert ids(body)[: len(kept)] == kept  # order kept ...
        assert len(ids(body)) > len(kept)  # ... and the cache's CACHE_EXTRA items fill in
    hair = (
        await client.get("/v1/recommend", params={"user_id": "u1", "k": 5, "category": "Beauty, hair care"})
    ).json()
    assert ids(hair) and all(int(i[1:]) % 3 == 1 for i in ids(hair))
    # the popularity fallback keeps k within the category
    cold = (await client.get("/v1/recommend", params={"user_id": "new", "k": 4, "category": "Tools"})).json()
    assert cold["source"] == "fallback" and ids(cold) == ["i2", "i5", "i8", "i11"]
    bad_categories = (("Toys", "no item is in 'Toys'"), ("Beauty, Tools", "no item is in"), (" , ", "empty"))
    for bad, message in bad_categories:
        refused = await client.get("/v1/recommend", params={"user_id": "u1", "category": bad})
        assert refused.status_code == 422 and message in refused.json()["detail"], refused.text


@pytest.mark.cluster
async def test_a_late_event_lands_in_time_order_against_the_stored_history(
    client: httpx.AsyncClient, history: HistoryStore
) -> None:
    async def post(*events: dict[str, object]) -> None:
        response = await client.post("/v1/events", json={"events": list(events)})
        assert response.status_code == 200, response.text

    await post({"user_id": "u1", "item_id": "i1", "ts": 100}, {"user_id": "u1", "item_id": "i2", "ts": 300})
    await post({"user_id": "u1", "item_id": "i3", "ts": 1})  # arrives last, happened first
    await post({"user_id": "u1", "item_id": "i4", "ts": 200})
    await post({"user_id": "u1", "item_id": "i5"})  # no ts: now
    assert await history.get_all("u1") == ["i3", "i1", "i4", "i2", "i5"]
    times = await history.get_times("u1")
    assert times[:4] == [1.0, 100.0, 200.0, 300.0] and times[4] > 1_700_000_000
    shown = (await client.get("/v1/users/u1/history")).json()["items"]
    assert [item["item_id"] for item in shown] == ["i3", "i1", "i4", "i2", "i5"]


@pytest.mark.cluster
async def test_seeded_entries_are_the_oldest_and_stay_aligned(redis_client: object) -> None:
    capped = HistoryStore(redis_client, max_len=4)  # type: ignore[arg-type]
    await capped.seed_many({"u": ["a", "b"]})
    await capped.append_many({"u": [("c", 50.0)]})
    await capped.seed_many({"u": ["a", "b"]})  # the file again: stored history kept (has c)
    await capped.append_many({"u": [("d", 10.0), ("e", 60.0)]})
    assert await capped.get_all("u") == ["b", "d", "c", "e"]  # capped at 4, the oldest dropped
    assert await capped.get_times("u") == [0.0, 10.0, 50.0, 60.0]


@pytest.mark.cluster
@pytest.mark.parametrize("user_id", ["a}b", "}", "{x}", "100%7D", "{", "%"])
async def test_user_ids_with_braces_and_percent_signs_work_end_to_end(
    client: httpx.AsyncClient, cache: RecommendationCache, user_id: str
) -> None:
    """Such ids are escaped inside the hash tag (service/keys.py), never refused, and never mixed
    up with another user's keys ("100%7D" and "100}" are different users)."""
    other = user_id.replace("%7D", "}")
    events = [{"user_id": user_id, "item_id": "i1"}, {"user_id": "u2", "item_id": "i2"}]
    assert (await client.post("/v1/events", json={"events": events})).status_code == 200
    assert (await client.get("/v1/recommend", params={"user_id": user_id})).json()["source"] == "model"
    assert (await client.get("/v1/recommend", params={"user_id": user_id})).json()["source"] == "cache"
    posted = await client.post("/v1/events", json={"events": [{"user_id": user_id, "item_id": "i3"}]})
    assert posted.status_code == 200
    assert await cache.get(user_id) is None  # invalidated, in the events' own transaction
    history = (await client.get(f"/v1/users/{quote(user_id, safe='')}/history")).json()
    assert [item["item_id"] for item in history["items"]] == ["i1", "i3"]
    if other != user_id:
        assert (await client.get("/v1/recommend", params={"user_id": other})).json()["source"] == "fallback"
    deleted = await client.delete(f"/v1/users/{quote(user_id, safe='')}")
    assert deleted.json() == {"user_id": user_id, "history_items": 2, "cached_lists": 1}
