"""Each user's precomputed top-K in Redis, the fast path of ``GET /recommend``.

Key ``genrec:{model_version}:topk:{user_id}`` holds a JSON list of ``{"item_id", "score"}``,
best first, with a TTL. The model version is part of the key, so a newly deployed model
never serves lists computed by its predecessor; the old keys simply expire.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from model.recommender import ScoredItem

logger = logging.getLogger(__name__)

TOPK_KEY = "genrec:{model_version}:topk:{user_id}"


def topk_key(model_version: str, user_id: str) -> str:
    return TOPK_KEY.format(model_version=model_version, user_id=user_id)


def encode_items(items: Sequence[ScoredItem]) -> str:
    return json.dumps([{"item_id": item.item_id, "score": item.score} for item in items])


def decode_items(raw: bytes | str) -> list[ScoredItem]:
    entries = json.loads(raw)
    return [ScoredItem(item_id=str(entry["item_id"]), score=float(entry["score"])) for entry in entries]


class RecommendationCache:
    """Get/put of per-user top-K lists for one model version."""

    def __init__(self, client: redis.Redis, model_version: str, ttl_s: int) -> None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self._client = client
        self.model_version = model_version
        self.ttl_s = ttl_s

    def key(self, user_id: str) -> str:
        return topk_key(self.model_version, user_id)

    @property
    def client(self) -> redis.Redis:
        return self._client

    async def get(self, user_id: str) -> list[ScoredItem] | None:
        """The cached list, or None on a miss (or an unreadable entry, which is dropped)."""
        return await self.parse(user_id, await self._client.get(self.key(user_id)))

    def queue_get(self, pipe: Pipeline, user_id: str) -> None:
        """Add the read of ``get`` to a pipeline; ``parse`` its reply."""
        pipe.get(self.key(user_id))

    async def parse(self, user_id: str, raw: bytes | str | None) -> list[ScoredItem] | None:
        if raw is None:
            return None
        try:
            return decode_items(raw)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("dropping corrupt cache entry %s: %r", self.key(user_id), exc)
            await self.invalidate(user_id)
            return None

    async def put(self, user_id: str, items: Sequence[ScoredItem]) -> None:
        await self._client.set(self.key(user_id), encode_items(items), ex=self.ttl_s)

    async def put_many(self, lists: Mapping[str, Sequence[ScoredItem]]) -> None:
        """Write many users' lists in ONE pipelined round trip (no MULTI: entries are independent)."""
        if not lists:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id, items in lists.items():
                pipe.set(self.key(user_id), encode_items(items), ex=self.ttl_s)
            await pipe.execute()

    async def invalidate(self, user_id: str) -> None:
        """Drop the user's list, e.g. after new interactions make it stale."""
        await self._client.delete(self.key(user_id))
