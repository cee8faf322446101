"""The API's endpoints, one module-level router per resource; ``create_app`` mounts them.

Each router is included under ``/v1`` and again unversioned (hidden from the schema, for old
clients), with the API-key dependency when API_KEY is set. ``GET /recommend``, the hot path,
is a ``DirectRoute``: declared and documented like the others, served without FastAPI's
per-request dependency solving.
"""

# No ``from __future__ import annotations``: FastAPI evaluates endpoint annotations.

import asyncio
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match, request_response
from starlette.types import Receive, Scope, Send

from service.api.deps import Service, check_key, metrics_of, service_of
from service.api.recommend import EventsAccepted, RecommendService, UnknownItems, UserDeleted
from service.api.render import RecommendResult, SimilarItemsResult
from service.api.schemas import (
    MAX_EVENTS,
    USER_ID_MAX_LEN,
    BatchRecommendQuery,
    BatchRecommendResult,
    EventBatch,
    HistoryItem,
    ItemInfo,
    RankQuery,
    ReadyStatus,
    RecommendQuery,
    UserHistory,
)
from service.http import ErrorBody, error, ready_response, validation_message
from service.redis_client import ping

ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (401, 422, 503)}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
SERVED_METHODS = {"GET", "HEAD"}  # of a DirectRoute: HEAD answered as GET, as by a Starlette route


class DirectRoute(APIRoute):
    """A route FastAPI documents from its declaration (query model, responses, security), served
    as a plain Starlette endpoint: no per-request dependency solving, ~20% of a cache hit.

    The endpoint takes ``(request, query)``: the query string parsed as Starlette's QueryParams
    would (last value wins) into the model of its ``query`` parameter in one validation, after
    the API-key check the router's dependency does on other routes. HEAD is answered as GET,
    as a Starlette route answers it.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.query_model: type[BaseModel] = get_args(
            inspect.signature(endpoint).parameters["query"].annotation
        )[0]
        self.app = request_response(self.serve)

    async def serve(self, request: Request) -> Response:
        check_key(request)
        raw = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        try:
            query = self.query_model.model_validate(dict(raw))
        except ValidationError as exc:
            return error(422, validation_message(exc))
        response: Response = await self.endpoint(request, query)
        return response

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.PARTIAL and scope["method"] in SERVED_METHODS:  # HEAD
            match = Match.FULL
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in SERVED_METHODS:
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(SERVED_METHODS)})
        await self.app(scope, receive, send)


recommendations = APIRouter()
events = APIRouter()
users = APIRouter()
items = APIRouter()
readiness = APIRouter()


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def recommend(request: Request, query: Annotated[RecommendQuery, Query()]) -> Response:
    """The user's top-k: `source` says whether it came from the cache, the model or the
    popularity fallback (users without usable history, or `degraded` ones)."""
    service = await service_of(request)
    k = service.settings.default_k if query.k is None else query.k
    result = await service.recommend(
        query.user_id,
        k,
        exclude_seen=query.exclude_seen,
        exclude=query.excluded(),
        category=service.category_of(query.category),
    )
    metrics_of(request).served[result.source].inc()
    return _json(service.render(result))


recommendations.add_api_route(
    "/recommend", recommend, methods=["GET"], response_model=RecommendResult, route_class_override=DirectRoute
)


@recommendations.post("/recommend:batch", response_model=BatchRecommendResult)
async def recommend_batch(request: Request, service: Service, query: BatchRecommendQuery) -> Response:
    """Top-k for many users in one call, each answered as `GET /v1/recommend` would answer it
    (cache, model or fallback); the users' cache misses reach the engine together."""
    k = service.settings.default_k if query.k is None else query.k
    service.check_k(k)
    results = await asyncio.gather(
        *(service.recommend(user_id, k, exclude_seen=query.exclude_seen) for user_id in query.user_ids)
    )
    served = metrics_of(request).served
    for result in results:
        served[result.source].inc()
    return _json(b'{"results":[' + b",".join(service.render(result) for result in results) + b"]}")


@recommendations.post("/rank", response_model=RecommendResult)
async def rank(service: Service, query: RankQuery) -> Response:
    """Order the given candidates for the user by the model's score (the log-probability of
    each candidate's semantic ID, as ``/recommend`` scores it), best first, each once.
    Any unknown candidate is a 422 naming it. Users without usable history, or with Redis or
    the model unavailable, get the candidates in popularity order (``source`` "fallback")."""
    return _json(service.render(await service.rank(query.user_id, query.candidates)))


@events.post("/events", response_model=EventsAccepted, name="events")
async def post_events(
    request: Request,
    service: Service,
    batch: Annotated[EventBatch, Body(description=f"1..{MAX_EVENTS} interactions")],
) -> EventsAccepted:
    """Append interactions to the users' histories and invalidate their cached lists, all or
    nothing: any unknown item id rejects the request with 422 naming it."""
    accepted = await service.record_events(batch.events)
    metrics_of(request).recorded.inc(accepted.accepted)
    return accepted


UserId = Annotated[str, Path(min_length=1, max_length=USER_ID_MAX_LEN)]
ItemId = Annotated[str, Path(min_length=1, max_length=256)]


@users.get("/users/{user_id}/history", response_model=UserHistory)
async def user_history(
    service: Service,
    user_id: UserId,
    limit: Annotated[int, Query(ge=1, le=1000, description="most recent items")] = 50,
) -> UserHistory:
    """The user's stored history, oldest first (empty for an unknown user)."""
    ids = await service.history.get(user_id, limit)
    known = {i: item.title for i in ids if (item := service.catalog.get(i)) is not None}
    return UserHistory(user_id=user_id, items=[HistoryItem(item_id=i, title=known.get(i)) for i in ids])


@users.delete("/users/{user_id}", response_model=UserDeleted)
async def delete_user(service: Service, user_id: UserId) -> UserDeleted:
    """Delete the user's history and cached lists (a privacy request); later requests for the
    user get popular items until new events arrive. Idempotent."""
    return await service.forget_user(user_id)


@items.get("/items/{item_id}/similar", response_model=SimilarItemsResult, responses=NOT_FOUND)
async def similar_items(
    request: Request,
    service: Service,
    item_id: ItemId,
    k: Annotated[int | None, Query(description="list length, 1..MAX_K (default DEFAULT_K)")] = None,
) -> Response:
    """Items like this one, by the model: its top-k for a history of this one item (the item
    left out), cached per item and model version; 404 for an item outside the catalog."""
    try:
        result = await service.similar(item_id, service.settings.default_k if k is None else k)
    except UnknownItems as exc:
        return error(404, str(exc))
    metrics_of(request).served[result.source].inc()
    return _json(service.render(result, "item_id"))


@items.get("/items/{item_id}", response_model=ItemInfo, responses=NOT_FOUND)
async def item(service: Service, item_id: ItemId) -> ItemInfo | JSONResponse:
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


@readiness.get("/health/ready", response_model=ReadyStatus, responses={503: {"model": ReadyStatus}})
async def ready(request: Request) -> JSONResponse:
    """Redis and the engine checked separately. 200 "ready" when both answer, 200 "degraded"
    when only the engine does not (requests are still answered), 503 "not ready" when Redis
    does not answer or the model is not loaded; the body names the part that failed."""
    service: RecommendService | None = request.app.state.service
    redis_status = await ping(request.app.state.redis, request.app.state.settings.redis_timeout_s)
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


RESOURCES = (recommendations, events, users, items)  # mounted under /v1, and unversioned
