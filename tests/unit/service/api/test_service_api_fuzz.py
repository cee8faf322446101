"""Schemathesis over the app's OpenAPI schema (real Redis, in-test recommender): no input the
schema admits, or nearly admits, makes any endpoint answer 5xx."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from service_fakes import HashRecommender, make_catalog
from starlette.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402


def test_no_input_makes_a_server_error(redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url, max_k=20, default_k=10), HashRecommender(make_catalog()))
    with TestClient(app):  # runs the lifespan: Redis client and service in place
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/recommend", "/v1/events", "/v1/items/{item_id}"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
            def fuzz(case: object) -> None:
                case.call_and_validate(checks=[not_a_server_error])  # type: ignore[attr-defined]

            fuzz()
