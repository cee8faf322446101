"""connect: the one place a recommender is chosen (given, in process, or the engine service)."""

from __future__ import annotations

import pytest
from service_fakes import HashRecommender

from service.engine.connect import connect
from service.engine.runner import LocalRecommender
from service.settings import Settings


async def test_a_given_blocking_recommender_runs_locally_and_is_not_stopped(
    recommender: HashRecommender,
) -> None:
    settings = Settings(engine_max_batch=8)
    async with connect(settings, recommender, timeout_s=3.0, remote_timeout_s=9.0, must_answer=False) as got:
        assert isinstance(got, LocalRecommender)
        # the API's wait and the engine's configured batch
        assert (got.recommender, got.timeout_s, got.max_batch) == (recommender, 3.0, 8)


async def test_a_given_async_recommender_is_used_as_it_is(recommender: HashRecommender) -> None:
    local = LocalRecommender(recommender, timeout_s=None, max_batch=2)
    async with connect(Settings(), local, timeout_s=1.0, remote_timeout_s=1.0, must_answer=True) as got:
        assert got is local


async def test_without_engine_url_the_bundle_is_loaded_here_and_stopped_after(
    monkeypatch: pytest.MonkeyPatch, recommender: HashRecommender
) -> None:
    stopped: list[object] = []
    monkeypatch.setattr("service.engine.connect.load_recommender", lambda settings: recommender)
    monkeypatch.setattr("service.engine.connect.stop_recommender", stopped.append)
    async with connect(
        Settings(), timeout_s=None, remote_timeout_s=1.0, max_batch=5, must_answer=True
    ) as got:
        assert isinstance(got, LocalRecommender)
        assert (got.recommender, got.timeout_s, got.max_batch) == (recommender, None, 5)
        assert stopped == []
    assert stopped == [recommender]
