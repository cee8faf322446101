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
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError
from starlette.routing import Route

from model.recommender import Recommender
from service.cache import RecommendationCache
from service.docs import add_local_docs
from service.engine.connect import connect
from service.engine.protocol import AsyncRecommender
from service.engine.runner import LocalRecommender
from service.history import HistoryStore
from service.http import (
    ErrorBody,
    add_metrics,
    answer_validation_errors,
    engine_batch_histogram,
    error,
    health,
    pid_field,
    ready_response,
    validation_message,
)
from service.recommend import (
    CACHE_DOWN,
    Event,
    EventsAccepted,
    InvalidRequest,
    RecommendService,
    UnknownItems,
    UserDeleted,
)
from service.redis_client import ping, redis_client
from service.render import RecommendResult, SimilarItemsResult, Source
from service.request_id import RequestIdMiddleware
from service.settings import Settings, get_settings
from service.ui import add_ui

logger = logging.getLogger(__name__)

USER_ID_MAX_LEN = 256
MAX_EVENTS = 1000
MAX_EXCLUDE = 100  # item ids one request may filter out
MAX_BATCH_USERS = 100  # users per POST /v1/recommend:batch: a few engine batches at most
API_VERSION = "v1"


class ReadyStatus(BaseModel):
    # "degraded": Redis answers but the engine does not; /recommend still answers (cached, stale
    # or popular lists), so the instance stays in rotation (200).
    status: Literal["ready", "degraded", "not ready"]
    redis: str
    model: str
    model_version: str | None
    pid: int = pid_field()


class RecommendQuery(BaseModel):
    """The query of ``GET /recommend``."""

    user_id: str = Field(min_length=1, max_length=USER_ID_MAX_LEN, description="the user")
    k: int | None = Field(default=None, description="list length, 1..MAX_K (default DEFAULT_K)")
    exclude_seen: bool = Field(default=True, description="leave out items already in the user's history")
    exclude: str | None = Field(
        default=None,
        max_length=MAX_EXCLUDE * 257,
        description=f"comma-separated item ids to leave out (up to {MAX_EXCLUDE}; unknown ids are ignored)",
    )
    category: str | None = Field(
        default=None,
        max_length=1024,
        description="only items in this category or one below it, as a path broadest level first "
        '("Office Electronics, Telephones & Accessories"; case-insensitive); 422 when no item is in it',
    )

    def excluded(self) -> frozenset[str]:
        ids = frozenset(i for i in (self.exclude or "").split(",") if i)
        if len(ids) > MAX_EXCLUDE:
            raise InvalidRequest(f"exclude: at most {MAX_EXCLUDE} item ids, got {len(ids)}")
        return ids


class BatchRecommendQuery(BaseModel):
    """The body of ``POST /v1/recommend:batch``."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_LEN)]] = Field(
        min_length=1, max_length=MAX_BATCH_USERS, description=f"1..{MAX_BATCH_USERS} users"
    )
    k: int | None = Field(default=None, description="list length, 1..MAX_K (default DEFAULT_K)")
    exclude_seen: bool = Field(default=True, description="leave out items already in each user's history")


class BatchRecommendResult(BaseModel):
    results: list[RecommendResult] = Field(description="one per requested user, in request order")


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
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class RankQuery(BaseModel):
    """The body of ``POST /rank``."""

    user_id: str = Field(min_length=1, max_length=USER_ID_MAX_LEN)
    candidates: list[str] = Field(min_length=1, description="catalog item ids to order for the user")


class Unauthorized(Exception):
    """The request lacks the configured API key."""


class ModelNotLoaded(Exception):
    """Startup has not finished loading the model (or failed to)."""


def create_app(
    settings: Settings | None = None, recommender: Recommender | AsyncRecommender | None = None
) -> FastAPI:
    """Build the app. Tests inject a ``recommender`` (a blocking one is run in process); otherwise
    the lifespan connects to the engine service at ENGINE_URL, or loads the bundle in process.
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
    batch_sizes = engine_batch_histogram(registry)

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
            ) as model:
                if isinstance(model, LocalRecommender):
                    model.on_batch = batch_sizes.observe
                cache = RecommendationCache(client, model.model_version, settings.cache_ttl_s)
                app.state.service = RecommendService(model, cache, HistoryStore(client), settings)
                logger.info(
                    "genrec started: model %s, %d catalog items, max_k %d, cache TTL %ds, engine %s",
                    model.model_version,
                    len(model.catalog),
                    settings.max_k,
                    settings.cache_ttl_s,
                    settings.engine_url or "in process",
                )
                yield
        finally:
            app.state.service = None
            await client.aclose()

    app = FastAPI(
        title="genrec",
        summary="LLM generative recommender",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by add_local_docs
        redoc_url=None,
        openapi_url=None,
    )

    answer_validation_errors(app, json_bodies=True)

    @app.exception_handler(RedisError)
    async def on_rediserror(_: Request, exc: RedisError) -> JSONResponse:
        logger.error("Redis error: %r", exc)
        return error(503, f"{CACHE_DOWN}: try again")

    def reply_with(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return error(status, str(exc))

        return handler

    for failure, status in (
        (InvalidRequest, 422),
        (UnknownItems, 422),
        (Unauthorized, 401),
        (ModelNotLoaded, 503),
    ):
        app.add_exception_handler(failure, reply_with(status))

    api_key_header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description="needed when API_KEY is set"
    )

    def authorize(key: str | None) -> None:
        expected = settings.api_key
        if expected is not None and (key is None or not secrets.compare_digest(key, expected)):
            raise Unauthorized("missing or wrong X-API-Key header")

    async def check_api_key(key: Annotated[str | None, Depends(api_key_header)]) -> None:
        authorize(key)

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

    async def recommend(request: Request) -> Response:
        """The user's top-k: `source` says whether it came from the cache, the model or the
        popularity fallback (users without usable history, or `degraded` ones)."""
        # The hot path, served as a plain Starlette route (see below): no dependency injection,
        # the query parsed by one model validation, the API key checked here, the body
        # rendered by ResultRenderer.
        if settings.api_key is not None:
            authorize(request.headers.get("x-api-key"))
        try:
            # parsed as Starlette's QueryParams would (last value wins), without building one
            raw = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
            query = RecommendQuery.model_validate(dict(raw))
        except ValidationError as exc:
            return error(422, validation_message(exc))
        service = await service_of(request)
        k = settings.default_k if query.k is None else query.k
        result = await service.recommend(
            query.user_id,
            k,
            exclude_seen=query.exclude_seen,
            exclude=query.excluded(),
            category=service.category_of(query.category),
        )
        served_by[result.source].inc()
        return Response(service.render(result), media_type="application/json")

    # Documented (schema, auth, errors) through the router, but served by plain Starlette routes
    # inserted in front of the app's routes (below): they skip FastAPI's per-request dependency
    # solving, ~20% of a cache hit.
    api.add_api_route(
        "/recommend",
        recommend,
        methods=["GET"],
        response_model=RecommendResult,
        openapi_extra={"parameters": query_parameters(RecommendQuery)},
    )

    @api.post("/recommend:batch", response_model=BatchRecommendResult)
    async def recommend_batch(service: Service, query: BatchRecommendQuery) -> Response:
        """Top-k for many users in one call, each answered as `GET /v1/recommend` would answer it
        (cache, model or fallback); the users' cache misses reach the engine together."""
        k = settings.default_k if query.k is None else query.k
        service.check_k(k)
        results = await asyncio.gather(
            *(service.recommend(user_id, k, exclude_seen=query.exclude_seen) for user_id in query.user_ids)
        )
        for result in results:
            served_by[result.source].inc()
        body = b'{"results":[' + b",".join(service.render(result) for result in results) + b"]}"
        return Response(body, media_type="application/json")

    @api.post("/rank", response_model=RecommendResult)
    async def rank(service: Service, query: RankQuery) -> Response:
        """Order the given candidates for the user by the model's score (the log-probability of
        each candidate's semantic ID, as ``/recommend`` scores it), best first, each once.
        Any unknown candidate is a 422 naming it. Users without usable history, or with Redis or
        the model unavailable, get the candidates in popularity order (``source`` "fallback")."""
        result = await service.rank(query.user_id, query.candidates)
        return Response(service.render(result), media_type="application/json")

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

    @api.delete("/users/{user_id}", response_model=UserDeleted)
    async def delete_user(
        service: Service, user_id: Annotated[str, Path(min_length=1, max_length=USER_ID_MAX_LEN)]
    ) -> UserDeleted:
        """Delete the user's history and cached lists (a privacy request); later requests for the
        user get popular items until new events arrive. Idempotent."""
        return await service.forget_user(user_id)

    @api.get(
        "/items/{item_id}/similar", response_model=SimilarItemsResult, responses={404: {"model": ErrorBody}}
    )
    async def similar_items(
        service: Service,
        item_id: Annotated[str, Path(min_length=1, max_length=256)],
        k: Annotated[int | None, Query(description="list length, 1..MAX_K (default DEFAULT_K)")] = None,
    ) -> Response:
        """Items like this one, by the model: its top-k for a history of this one item (the item
        left out), cached per item and model version; 404 for an item outside the catalog."""
        try:
            result = await service.similar(item_id, settings.default_k if k is None else k)
        except UnknownItems as exc:
            return error(404, str(exc))
        served_by[result.source].inc()
        return Response(service.render(result, "item_id"), media_type="application/json")

    @api.get("/items/{item_id}", response_model=ItemInfo, responses={404: {"model": ErrorBody}})
    async def item(
        service: Service, item_id: Annotated[str, Path(min_length=1, max_length=256)]
    ) -> ItemInfo | JSONResponse:
        """A catalog item: title, semantic ID and training-split popularity."""
        found = service.catalog.get(item_id)
        if found is None:
            return error(404, f"item {item_id!r} is not in the catalog of model {service.model_version}")
        return ItemInfo(
            item_id=found.item_id,
            title=found.title,
            semantic_id=service.catalog.scheme.format(found.sid),
            popularity=found.popularity,
        )

    app.include_router(api, prefix=f"/{API_VERSION}")
    app.include_router(api, include_in_schema=False)  # the unversioned paths of earlier releases
    for path in (f"/{API_VERSION}/recommend", "/recommend"):
        app.router.routes.insert(0, Route(path, recommend, methods=["GET"]))

    app.include_router(health)

    @app.get("/health/ready", response_model=ReadyStatus, responses={503: {"model": ReadyStatus}})
    async def ready(request: Request) -> JSONResponse:
        """Redis and the engine checked separately. 200 "ready" when both answer, 200 "degraded"
        when only the engine does not (requests are still answered), 503 "not ready" when Redis
        does not answer or the model is not loaded; the body names the part that failed."""
        service: RecommendService | None = request.app.state.service
        redis_status = await ping(request.app.state.redis, settings.redis_timeout_s)
        model_status = "not loaded" if service is None else await service.recommender.status()
        if redis_status != "ok" or service is None:
            status: Literal["ready", "degraded", "not ready"] = "not ready"
        else:
            status = "ready" if model_status == "ok" else "degraded"
        body = ReadyStatus(
            status=status,
            redis=redis_status,
            model=model_status,
            model_version=service.model_version if service is not None else None,
        )
        return ready_response(body, status != "not ready")

    docs_need_key = settings.api_key is not None and not settings.docs_public
    add_local_docs(app, authorize if docs_need_key else None)
    add_ui(app)
    add_metrics(app, registry)
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
