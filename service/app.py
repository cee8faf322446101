"""The HTTP face of the service: recommendations, events, histories, items, health, metrics.

The API lives under ``/v1`` (also served unversioned, hidden from the schema, for old
clients). The app owns the process-wide parts (one Redis client, one recommender) through its
lifespan; everything request-shaped lives in ``RecommendService``. Errors always come back as
``{"detail": "<message>"}`` so clients parse one shape. With ``API_KEY`` set, every API
endpoint needs ``X-API-Key``; health probes and metrics stay open.
"""

# No ``from __future__ import annotations`` here: FastAPI evaluates endpoint annotations, and
# those refer to names local to create_app.

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Literal, get_args

import redis.asyncio as redis
from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from pydantic import BaseModel, Field, ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from model.recommender import Recommender
from service.cache import RecommendationCache
from service.history import HistoryStore
from service.recommend import (
    Event,
    EventsAccepted,
    InvalidK,
    RecommendResult,
    RecommendService,
    Source,
    UnknownItems,
)
from service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

USER_ID_MAX_LEN = 256
MAX_EVENTS = 1000
METRICS_PATH = "/metrics"
API_VERSION = "v1"


class LiveStatus(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyStatus(BaseModel):
    status: Literal["ready", "not ready"]
    redis: str
    model: str
    model_version: str | None


class ErrorBody(BaseModel):
    detail: str


class RecommendQuery(BaseModel):
    """The query of ``GET /recommend``."""

    user_id: str = Field(min_length=1, max_length=USER_ID_MAX_LEN, description="the user")
    k: int | None = Field(default=None, description="list length, 1..MAX_K (default DEFAULT_K)")
    exclude_seen: bool = Field(default=True, description="leave out items already in the user's history")


def query_parameters(model: type[BaseModel]) -> list[dict[str, object]]:
    """OpenAPI query parameters for a model an endpoint validates itself."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": field.pop("description", ""),
            "schema": field,
        }
        for name, field in schema["properties"].items()
    ]


class HistoryItem(BaseModel):
    item_id: str
    title: str | None  # None for an id the current catalog no longer has


class UserHistory(BaseModel):
    user_id: str
    items: list[HistoryItem]


class ItemInfo(BaseModel):
    item_id: str
    title: str
    semantic_id: str
    popularity: int


class EventBatch(BaseModel):
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class Unauthorized(Exception):
    """The request lacks the configured API key."""


class ModelNotLoaded(Exception):
    """Startup has not finished loading the model (or failed to)."""


def _error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=ErrorBody(detail=detail).model_dump())


def _validation_message(exc: RequestValidationError | ValidationError) -> str:
    """FastAPI's error list as one readable line, e.g. ``user_id: Field required``."""
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "body", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    settings: Settings | None = None,
    recommender: Recommender | None = None,
    *,
    ready_message: str | None = None,
) -> FastAPI:
    """Build the app. ``recommender`` is injected by tests; otherwise the lifespan loads the bundle.

    ``ready_message`` is logged once startup has finished (the CLI's "try this curl" line).
    """
    settings = settings or get_settings()
    registry = CollectorRegistry()
    served = Counter(
        "genrec_recommendations",
        "Recommendation responses by source: cache hit, model on a cache miss, popularity fallback",
        ["source"],
        registry=registry,
    )
    served_by = {source: served.labels(source=source) for source in get_args(Source)}
    recorded = Counter("genrec_events", "Interactions accepted by POST /events", registry=registry)
    batch_sizes = Histogram(
        "genrec_engine_batch_size",
        "Users per engine call on the miss path (concurrent misses are batched)",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        registry=registry,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.redis_url is None:
            raise RuntimeError(
                "REDIS_URL is not set: point it at a Redis server, or use `genrec serve`, "
                "which starts an embedded one"
            )
        client = redis_client(settings.redis_url, settings.redis_timeout_s, settings.redis_max_connections)
        app.state.redis = client
        app.state.service = None
        owned: Recommender | None = None  # loaded here, so stopped here
        try:
            redis_status = await _ping(client, settings.redis_timeout_s)
            if redis_status != "ok":
                logger.warning("Redis not reachable at startup (%s); see /health/ready", redis_status)
            if recommender is None:
                owned = _load(settings)
            model = recommender or owned
            assert model is not None
            cache = RecommendationCache(client, model.model_version, settings.cache_ttl_s)
            history = HistoryStore(client)
            app.state.service = RecommendService(model, cache, history, settings)
            app.state.service.runner.on_batch = batch_sizes.observe
            logger.info(
                "genrec started: model %s, %d catalog items, max_k %d, cache TTL %ds",
                model.model_version,
                len(model.catalog),
                settings.max_k,
                settings.cache_ttl_s,
            )
            if ready_message:
                logger.info("%s", ready_message)
            yield
        finally:
            app.state.service = None
            await client.aclose()
            close = getattr(owned, "close", None)
            if callable(close):
                close()

    app = FastAPI(title="genrec", summary="LLM generative recommender", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(RedisError)
    async def on_redis_error(_: Request, exc: RedisError) -> JSONResponse:
        logger.error("Redis error: %r", exc)
        return _error(503, f"Redis unavailable: {exc}")

    def reply_with(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return _error(status, str(exc))

        return handler

    for error, status in ((InvalidK, 422), (UnknownItems, 422), (Unauthorized, 401), (ModelNotLoaded, 503)):
        app.add_exception_handler(error, reply_with(status))

    api_key_header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description="needed when API_KEY is set"
    )

    async def check_api_key(key: Annotated[str | None, Depends(api_key_header)]) -> None:
        expected = settings.api_key
        if expected is not None and (key is None or not secrets.compare_digest(key, expected)):
            raise Unauthorized("missing or wrong X-API-Key header")

    async def service_of(request: Request) -> RecommendService:  # async: sync ones run in a thread pool
        service: RecommendService | None = request.app.state.service
        if service is None:
            raise ModelNotLoaded("the model is not loaded")
        return service

    Service = Annotated[RecommendService, Depends(service_of)]
    errors: dict[int | str, dict[str, object]] = {status: {"model": ErrorBody} for status in (401, 422, 503)}
    # No key configured: no dependency at all (every dependency costs the hot path time).
    guard = [Depends(check_api_key)] if settings.api_key is not None else []
    api = APIRouter(dependencies=guard, responses=errors)

    @api.get(
        "/recommend",
        response_model=RecommendResult,
        openapi_extra={"parameters": query_parameters(RecommendQuery)},
    )
    async def recommend(request: Request) -> Response:
        """The user's top-k: ``source`` says whether it came from the cache, the model or the
        popularity fallback (users without usable history, or ``degraded`` ones).

        The hot path: query parsed by one model validation, no dependency injection, the
        response serialised once (FastAPI's per-parameter machinery cost ~40% of a cache hit).
        """
        try:
            query = RecommendQuery.model_validate(request.query_params)
        except ValidationError as exc:
            return _error(422, _validation_message(exc))
        service = await service_of(request)
        k = settings.default_k if query.k is None else query.k
        result = await service.recommend(query.user_id, k, exclude_seen=query.exclude_seen)
        served_by[result.source].inc()
        return Response(result.model_dump_json(), media_type="application/json")

    @api.post("/events", response_model=EventsAccepted)
    async def events(
        service: Service,
        batch: Annotated[EventBatch, Body(description=f"1..{MAX_EVENTS} interactions")],
    ) -> EventsAccepted:
        """Append interactions to the users' histories and invalidate their cached lists, all or
        nothing: any unknown item id rejects the request with 422 naming it."""
        accepted = await service.record_events(batch.events)
        recorded.inc(accepted.accepted)
        return accepted

    @api.get("/users/{user_id}/history", response_model=UserHistory)
    async def user_history(
        service: Service,
        user_id: Annotated[str, Path(min_length=1, max_length=USER_ID_MAX_LEN)],
        limit: Annotated[int, Query(ge=1, le=1000, description="most recent items")] = 50,
    ) -> UserHistory:
        """The user's stored history, oldest first (empty for an unknown user)."""
        ids = await service.history.get(user_id, limit)
        known = {i: item.title for i in ids if (item := service.catalog.get(i)) is not None}
        items = [HistoryItem(item_id=i, title=known.get(i)) for i in ids]
        return UserHistory(user_id=user_id, items=items)

    @api.get("/items/{item_id}", response_model=ItemInfo, responses={404: {"model": ErrorBody}})
    async def item(
        service: Service, item_id: Annotated[str, Path(min_length=1, max_length=256)]
    ) -> ItemInfo | JSONResponse:
        """A catalog item: title, semantic ID and training-split popularity."""
        found = service.catalog.get(item_id)
        if found is None:
            return _error(404, f"item {item_id!r} is not in the catalog of model {service.model_version}")
        return ItemInfo(
            item_id=found.item_id,
            title=found.title,
            semantic_id=service.catalog.scheme.format(found.sid),
            popularity=found.popularity,
        )

    app.include_router(api, prefix=f"/{API_VERSION}")
    app.include_router(api, include_in_schema=False)  # the unversioned paths of earlier releases

    @app.get("/health/live", response_model=LiveStatus)
    async def live() -> LiveStatus:
        """The process is up and its event loop answers; says nothing about Redis or the model."""
        return LiveStatus()

    @app.get("/health/ready", response_model=ReadyStatus, responses={503: {"model": ReadyStatus}})
    async def ready(request: Request) -> JSONResponse:
        """Ready only when Redis answers PING and the model is loaded; 503 names the part that is not."""
        service: RecommendService | None = request.app.state.service
        redis_status = await _ping(request.app.state.redis, settings.redis_timeout_s)
        model_status = "ok" if service is not None else "not loaded"
        is_ready = redis_status == "ok" and service is not None
        body = ReadyStatus(
            status="ready" if is_ready else "not ready",
            redis=redis_status,
            model=model_status,
            model_version=service.model_version if service is not None else None,
        )
        return JSONResponse(status_code=200 if is_ready else 503, content=body.model_dump())

    # Latency by handler/method/status only: the default set also measures request and
    # response sizes, which costs every request and tells little here.
    instrumentator = Instrumentator(registry=registry, excluded_handlers=[METRICS_PATH])
    instrumentator.add(metrics.latency(registry=registry)).add(metrics.requests(registry=registry))
    instrumentator.instrument(app).expose(app, endpoint=METRICS_PATH, include_in_schema=False)
    return app


def redis_client(url: str, timeout_s: float, max_connections: int) -> redis.Redis:
    """A client that retries a failed command once after a short backoff and reconnects on its
    own once Redis is back; bounded by ``timeout_s`` per attempt, so a dead Redis costs a
    request at most ~2 timeouts, never a hang. Past ``max_connections`` concurrent commands a
    request waits (up to ``timeout_s``) for a free connection instead of failing."""
    pool: redis.BlockingConnectionPool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


async def _ping(client: redis.Redis, timeout_s: float) -> str:
    """ "ok", or why Redis did not answer PING within ``timeout_s``."""
    try:
        await asyncio.wait_for(client.ping(), timeout=timeout_s)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"error: {str(exc) or type(exc).__name__}"
    return "ok"


def _load(settings: Settings) -> Recommender:
    from service.engine import load_recommender

    return load_recommender(settings)
