"""What both HTTP apps, the API and the engine service, share: the error body, validation
messages, health, request metrics and ``/metrics``.

Errors always come back as ``{"detail": "<message>"}`` so clients parse one shape.

Request metrics are a small pure-ASGI middleware: prometheus-fastapi-instrumentator resolved
every request's route by matching the path against all routes again and cost a cache hit ~25%
of its time; the router already records the matched route in the ASGI scope, so this
middleware reads it from there. One histogram: latency by method, route template and status
(its ``_count`` is the request counter).
"""

# No ``from __future__ import annotations``: FastAPI evaluates the endpoint annotations.

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"  # 404s are not labelled by their path: that would be unbounded
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ErrorBody(BaseModel):
    detail: str


def error(status_code: int, detail: str) -> JSONResponse:
    """The error response: ``{"detail": detail}`` with ``status_code``."""
    return JSONResponse(status_code=status_code, content=ErrorBody(detail=detail).model_dump())


def is_json(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type, with or without parameters (charset)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def validation_message(exc: RequestValidationError | ValidationError) -> str:
    """FastAPI's error list as one readable line, e.g. ``user_id: Field required``."""
    parts = []
    for problem in exc.errors():
        loc = [str(part) for part in problem.get("loc", ()) if part not in ("query", "body", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def answer_validation_errors(app: FastAPI, *, json_bodies: bool) -> None:
    """Invalid requests get a 422 naming each problem in one line; with ``json_bodies``, a POST
    whose body is not declared JSON gets a 415 saying what to send."""

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if json_bodies and request.method == "POST" and not is_json(request.headers.get("content-type")):
            return error(415, "the request body must be JSON: send Content-Type: application/json")
        return error(422, validation_message(exc))

    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]


class LiveStatus(BaseModel):
    status: Literal["ok"] = "ok"


def pid_field() -> Any:
    """The ``pid`` of a readiness body: a supervisor checks the process that answers is its own."""
    return Field(
        default_factory=os.getpid, description="the serving process (a supervisor checks it is its own)"
    )


def ready_response(body: BaseModel, ready: bool) -> JSONResponse:
    """A readiness answer: 200 when ``ready``, else 503, with ``body`` either way."""
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())


health = APIRouter()


@health.get("/health/live", response_model=LiveStatus)
async def live() -> LiveStatus:
    """The process is up and its event loop answers; says nothing about Redis or the model."""
    return LiveStatus()


class RequestMetrics:
    """Observes each HTTP request's latency into ``genrec_http_request_duration_seconds``."""

    def __init__(
        self, app: ASGIApp, registry: CollectorRegistry, skip_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.skip_paths = skip_paths
        self.latency = Histogram(
            "genrec_http_request_duration_seconds",
            "HTTP request latency by method, route template and status code",
            ["method", "handler", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], Any] = {}  # labels() costs more than observe()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before it starts a response

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            labels = (scope["method"], getattr(route, "path", UNMATCHED), str(status))
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = self.latency.labels(*labels)
            child.observe(time.perf_counter() - started)


def engine_batch_histogram(registry: CollectorRegistry) -> Histogram:
    """Users per engine call: how well concurrent misses batch (API in-process engine, engine service)."""
    return Histogram(
        "genrec_engine_batch_size",
        "Users per engine call (concurrent misses are batched)",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        registry=registry,
    )


def metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving ``registry`` in the Prometheus text format."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def add_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """Serve ``registry`` at ``/metrics`` and observe every other request's latency into it."""
    app.add_route(METRICS_PATH, metrics_endpoint(registry), include_in_schema=False)
    app.add_middleware(RequestMetrics, registry=registry, skip_paths=frozenset({METRICS_PATH}))
