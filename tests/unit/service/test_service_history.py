"""HistoryStore against a real Redis (and a real cluster): a LIST per user, oldest first; the
model input of a history."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from model.catalog import Catalog
from service.history import HistoryStore, usable_history
from service.keys import history_key

pytestmark = pytest.mark.cluster


async def test_unknown_user_has_empty_history(history: HistoryStore) -> None:
    assert await history.get("nobody", 20) == []


async def test_set_many_and_get_last_items(history: HistoryStore, redis_client: redis.Redis) -> None:
    await history.set_many({"u1": ["a", "b", "c", "d"], "u2": ["x"], "u3": []})
    assert await history.get("u1", 20) == ["a", "b", "c", "d"]
    assert await history.get("u1", 2) == ["c", "d"]
    assert await history.get("u1", 0) == []
    assert await history.get("u2", 5) == ["x"]
    assert await history.get("u3", 5) == []
    assert await redis_client.type(history_key("u1")) == b"list"


async def test_set_many_replaces(history: HistoryStore) -> None:
    await history.set_many({"u1": ["a", "b"]})
    await history.set_many({"u1": ["c"]})
    assert await history.get("u1", 10) == ["c"]


async def test_append_keeps_order(history: HistoryStore) -> None:
    await history.append("u1", ["a"])
    await history.append("u1", ["b", "c"])
    await history.append("u1", [])
    assert await history.get("u1", 10) == ["a", "b", "c"]


async def test_max_len_trims_oldest(redis_client: redis.Redis) -> None:
    store = HistoryStore(redis_client, max_len=3)
    await store.set_many({"u1": ["a", "b", "c", "d"]})
    assert await store.get("u1", 10) == ["b", "c", "d"]
    await store.append("u1", ["e"])
    assert await store.get("u1", 10) == ["c", "d", "e"]


def test_usable_history(catalog: Catalog) -> None:
    assert usable_history(["x", "i1", "y", "i2", "i3"], catalog, 4) == (["i1", "i2", "i3"], 1)
    assert usable_history(["i1", "x", "y"], catalog, 2) == ([], 2)
    assert usable_history([], catalog, 4) == ([], 0)
