"""Prometheus request metrics as a small pure-ASGI middleware, and the /metrics endpoint.

prometheus-fastapi-instrumentator resolved every request's route by matching the path
against all routes again and cost a cache hit ~25% of its time; the router already records
the matched route in the ASGI scope, so this middleware reads it from there. One histogram:
latency by method, route template and status (its ``_count`` is the request counter).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "unmatched"  # 404s are not labelled by their path: that would be unbounded
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
