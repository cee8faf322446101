"""Fixtures for the service tests: the real Redis, a small catalog, the in-test recommender, the app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis
from service_fakes import MODEL_VERSION, HashRecommender, make_catalog, open_client, run_locally

from model.catalog import Catalog
from service.api.app import create_app
from service.api.recommend import RecommendService
from service.cache import RecommendationCache
from service.history import HistoryStore
from service.settings import Settings


@pytest.fixture
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture
def recommender(catalog: Catalog) -> HashRecommender:
    return HashRecommender(catalog)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, max_k=20, default_k=10, history_len=5, cache_ttl_s=600)


@pytest.fixture
def cache(redis_client: redis.Redis, settings: Settings) -> RecommendationCache:
    return RecommendationCache(redis_client, MODEL_VERSION, settings.cache_ttl_s)


@pytest.fixture
def history(redis_client: redis.Redis) -> HistoryStore:
    return HistoryStore(redis_client)


@pytest.fixture
def service(
    recommender: HashRecommender, cache: RecommendationCache, history: HistoryStore, settings: Settings
) -> RecommendService:
    return RecommendService(run_locally(recommender, settings), cache, history, settings)


@pytest.fixture
async def client(
    redis_client: redis.Redis, settings: Settings, recommender: HashRecommender
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app on the real Redis, with the in-test recommender injected."""
    async with open_client(create_app(settings, recommender)) as http:
        yield http
