"""The engine service: the model behind HTTP, shared by every API replica and job.

``genrec engine`` runs this app. It owns the one vLLM engine of the process and a
``LocalRecommender`` in front of it, so concurrent requests from all API processes (and the
precompute job) are micro-batched into shared engine calls and identical ones coalesced. The
API talks to it through ``service.engine.client.RemoteRecommender``; cache hits never get here.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the endpoint annotations.

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from model.recommender import Recommender, ScoredItem
from service.engine.connect import load_recommender, stop_recommender
from service.engine.protocol import ENGINE_API, EngineInfo, RankBody, RankedLists, RecommendBody
from service.engine.runner import LocalRecommender
from service.http import (
    ErrorBody,
    add_metrics,
    answer_validation_errors,
    engine_batch_histogram,
    error,
    health,
    pid_field,
    ready_response,
)
from service.settings import Settings, get_settings

logger = logging.getLogger(__name__)


class EngineReady(BaseModel):
    status: Literal["ready", "not ready"]
    model_version: str | None
    pid: int = pid_field()


def create_engine_app(settings: Settings | None = None, recommender: Recommender | None = None) -> FastAPI:
    """Build the engine service; ``recommender`` is injected by tests, else the bundle is loaded."""
    settings = settings or get_settings()
    registry = CollectorRegistry()
    batch_sizes = engine_batch_histogram(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.recommender = None
        owned = load_recommender(settings) if recommender is None else None
        model = recommender or owned
        assert model is not None
        config = settings.engine_config()
        # No timeout here: the API's client has its own, and an engine call it gave up on still
        # finishes and serves the requests batched with it.
        local = LocalRecommender(model, timeout_s=None, max_batch=config.max_batch or 1)
        local.on_batch = batch_sizes.observe
        app.state.recommender = local
        app.state.info = EngineInfo(
            model_version=model.model_version,
            catalog_items=len(model.catalog),
            beam_width=config.beam_width,
            max_batch=config.max_batch,
        )
        logger.info("genrec engine ready: model %s, %d items", model.model_version, len(model.catalog))
        try:
            yield
        finally:
            app.state.recommender = None
            stop_recommender(owned)

    app = FastAPI(title="genrec engine", summary="constrained top-K and ranking over HTTP", lifespan=lifespan)
    answer_validation_errors(app, json_bodies=False)
    app.include_router(engine)
    app.include_router(health)
    app.include_router(readiness)
    add_metrics(app, registry)
    return app


engine = APIRouter(prefix=ENGINE_API)
readiness = APIRouter()
ERRORS: dict[int | str, dict[str, object]] = {422: {"model": ErrorBody}}


def _recommender(request: Request) -> LocalRecommender:
    local: LocalRecommender = request.app.state.recommender  # set before the server takes requests
    return local


def _answer(local: LocalRecommender, lists: list[list[ScoredItem]]) -> Response:
    body = RankedLists(
        model_version=local.model_version,
        lists=[[(item.item_id, item.score) for item in row] for row in lists],
    )
    return Response(body.model_dump_json(), media_type="application/json")


@engine.get("/info", response_model=EngineInfo)
async def info(request: Request) -> EngineInfo:
    """The model version and catalog this engine serves (the API checks them)."""
    _recommender(request)
    result: EngineInfo = request.app.state.info
    return result


@engine.post("/recommend", response_model=RankedLists, responses=ERRORS)
async def recommend(request: Request, body: RecommendBody) -> Response:
    """Top-``k`` per history, batched with every other request in flight."""
    local = _recommender(request)
    try:
        return _answer(local, await local.recommend(body.histories, body.k))
    except ValueError as exc:  # k beyond the beam width, and the like
        return error(422, str(exc))


@engine.post("/rank", response_model=RankedLists, responses=ERRORS)
async def rank(request: Request, body: RankBody) -> Response:
    """Each request's candidates ordered by the model, best first."""
    local = _recommender(request)
    try:
        return _answer(local, await local.rank(body.requests))
    except ValueError as exc:  # unknown candidates
        return error(422, str(exc))


@readiness.get("/health/ready", response_model=EngineReady, responses={503: {"model": EngineReady}})
async def ready(request: Request) -> JSONResponse:
    """Ready once the model is loaded (the lifespan finishes only then)."""
    local: LocalRecommender | None = request.app.state.recommender
    body = EngineReady(
        status="ready" if local is not None else "not ready",
        model_version=local.model_version if local is not None else None,
    )
    return ready_response(body, local is not None)
