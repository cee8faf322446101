"""The HTTP face of the service, assembled: routes, error handlers, docs, UI, metrics, middleware.

The API lives under ``/v1`` (also served unversioned, hidden from the schema, for old
clients). The app owns the process-wide parts (one Redis client, one recommender) through its
lifespan; everything request-shaped lives in ``RecommendService``. Errors always come back as
``{"detail": "<message>"}`` so clients parse one shape. With ``API_KEY`` set, every API
endpoint needs ``X-API-Key``; health probes and metrics stay open.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from model.recommender import Recommender
from service.api.deps import ApiMetrics, ModelNotLoaded, Unauthorized, authorize, check_api_key
from service.api.docs import add_local_docs
from service.api.recommend import CACHE_DOWN, InvalidRequest, RecommendService, UnknownItems
from service.api.routes import ERRORS, RESOURCES, readiness
from service.api.ui import add_ui
from service.cache import RecommendationCache
from service.engine.connect import connect
from service.engine.protocol import AsyncRecommender
from service.engine.runner import LocalRecommender
from service.history import HistoryStore
from service.http import add_metrics, answer_validation_errors, error, health
from service.redis_client import ping, redis_client
from service.request_id import RequestIdMiddleware
from service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

API_VERSION = "v1"
# What each of the service's own errors answers (RedisError has a handler of its own).
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (InvalidRequest, 422),
    (UnknownItems, 422),
    (Unauthorized, 401),
    (ModelNotLoaded, 503),
)


def create_app(
    settings: Settings | None = None, recommender: Recommender | AsyncRecommender | None = None
) -> FastAPI:
    """Build the app. Tests inject a ``recommender`` (a blocking one is run in process); otherwise
    the lifespan connects to the engine service at ENGINE_URL, or loads the bundle in process.
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="genrec",
        summary="LLM generative recommender",
        lifespan=functools.partial(lifespan, recommender=recommender),
        docs_url=None,  # served from local assets by add_local_docs
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics = ApiMetrics()
    answer_validation_errors(app, json_bodies=True)
    app.add_exception_handler(RedisError, on_redis_error)
    for failure, status in ERROR_STATUS:
        app.add_exception_handler(failure, reply_with(status))

    # No key configured: no dependency at all (every dependency costs the hot path time).
    guard = [Depends(check_api_key)] if settings.api_key is not None else []
    for router in RESOURCES:
        app.include_router(router, prefix=f"/{API_VERSION}", dependencies=guard, responses=ERRORS)
        # the unversioned paths of earlier releases
        app.include_router(router, dependencies=guard, responses=ERRORS, include_in_schema=False)
    app.include_router(health)
    app.include_router(readiness)

    docs_need_key = settings.api_key is not None and not settings.docs_public
    add_local_docs(app, functools.partial(authorize, settings.api_key) if docs_need_key else None)
    add_ui(app)
    add_metrics(app, metrics.registry)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestIdMiddleware)  # outermost: every response carries the id
    return app


@asynccontextmanager
async def lifespan(app: FastAPI, recommender: Recommender | AsyncRecommender | None) -> AsyncIterator[None]:
    """One Redis client and one recommender for the process (``recommender`` when given, else
    the one ``service.engine.connect`` chooses); the RecommendService once both are there."""
    settings: Settings = app.state.settings
    if settings.redis_url is None:
        raise RuntimeError(
            "REDIS_URL is not set: point it at a Redis server, or use `genrec serve`, "
            "which starts an embedded one"
        )
    client = redis_client(settings.redis_url, settings.redis_timeout_s, settings.redis_max_connections)
    app.state.redis = client
    app.state.service = None
    try:
        redis_status = await ping(client, settings.redis_timeout_s)
        if redis_status != "ok":
            logger.warning("Redis not reachable at startup (%s); see /health/ready", redis_status)
        async with connect(
            settings,
            recommender,
            timeout_s=settings.engine_timeout_s,
            remote_timeout_s=settings.engine_timeout_s,
            must_answer=False,
        ) as connected:
            if isinstance(connected, LocalRecommender):
                connected.on_batch = app.state.metrics.batch_sizes.observe
            cache = RecommendationCache(client, connected.model_version, settings.cache_ttl_s)
            app.state.service = RecommendService(connected, cache, HistoryStore(client), settings)
            logger.info(
                "genrec started: model %s, %d catalog items, max_k %d, cache TTL %ds, engine %s",
                connected.model_version,
                len(connected.catalog),
                settings.max_k,
                settings.cache_ttl_s,
                settings.engine_url or "in process",
            )
            yield
    finally:
        app.state.service = None
        await client.aclose()


async def on_redis_error(_: Request, exc: Exception) -> JSONResponse:
    logger.error("Redis error: %r", exc)
    return error(503, f"{CACHE_DOWN}: try again")


def reply_with(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """An exception handler answering ``status`` with the exception's message."""

    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return error(status, str(exc))

    return handler
