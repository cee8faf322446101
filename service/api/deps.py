"""What the API's routes get from their app: the RecommendService, the API-key check, the metrics.

``create_app`` puts the settings and the metrics on ``app.state``; its lifespan adds the Redis
client and the RecommendService (None until the model is loaded).
"""

# No ``from __future__ import annotations``: FastAPI evaluates the dependency annotations.

import secrets
from typing import Annotated, get_args

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry, Counter

from service.api.recommend import RecommendService
from service.api.render import Source
from service.http import engine_batch_histogram


class Unauthorized(Exception):
    """The request lacks the configured API key."""


class ModelNotLoaded(Exception):
    """Startup has not finished loading the model (or failed to)."""


def authorize(expected: str | None, key: str | None) -> None:
    """Unauthorized unless ``key`` is the ``expected`` API key (or none is configured)."""
    if expected is not None and (key is None or not secrets.compare_digest(key, expected)):
        raise Unauthorized("missing or wrong X-API-Key header")


def check_key(request: Request) -> None:
    """The API-key check of a route served without dependencies (``routes.DirectRoute``)."""
    expected: str | None = request.app.state.settings.api_key
    if expected is not None:
        authorize(expected, request.headers.get("x-api-key"))


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed when API_KEY is set")


async def check_api_key(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    """The dependency every API route gets when API_KEY is set (none at all otherwise: every
    dependency costs the hot path time)."""
    authorize(request.app.state.settings.api_key, key)


async def service_of(request: Request) -> RecommendService:  # async: sync ones run in a thread pool
    service: RecommendService | None = request.app.state.service
    if service is None:
        raise ModelNotLoaded("the model is not loaded")
    return service


Service = Annotated[RecommendService, Depends(service_of)]


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        served = Counter(
            "genrec_recommendations",
            "Recommendation responses by source: cache hit, model on a cache miss, popularity fallback",
            ["source"],
            registry=self.registry,
        )
        self.served = {source: served.labels(source=source) for source in get_args(Source)}
        self.recorded = Counter(
            "genrec_events", "Interactions accepted by POST /events", registry=self.registry
        )
        self.batch_sizes = engine_batch_histogram(self.registry)


def metrics_of(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics
