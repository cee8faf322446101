"""User histories in Redis, the model's input for on-demand recommendations.

Key ``genrec:hist:{user_id}`` is a Redis LIST of item ids, oldest first, so appending an
interaction is one RPUSH and reading the recent past is one LRANGE with a negative start.
Histories are not versioned by model: they are facts about users, not model outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

HISTORY_KEY = "genrec:hist:{user_id}"


def history_key(user_id: str) -> str:
    return HISTORY_KEY.format(user_id=user_id)


class HistoryStore:
    """Reads and writes user histories; ``max_len`` (if set) caps how many items a user keeps."""

    def __init__(self, client: redis.Redis, max_len: int | None = None) -> None:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self._client = client
        self._max_len = max_len

    async def get(self, user_id: str, limit: int) -> list[str]:
        """The last ``limit`` item ids of the user (oldest first); [] for an unknown user."""
        if limit < 1:
            return []
        return parse_items(await self._client.lrange(history_key(user_id), -limit, -1))

    def queue_get(self, pipe: Pipeline, user_id: str, limit: int | None) -> None:
        """Add the read of the last ``limit`` items (None: all) to a pipeline; ``parse_items`` its reply."""
        pipe.lrange(history_key(user_id), -limit if limit else 0, -1)

    async def set_many(self, histories: Mapping[str, Sequence[str]]) -> None:
        """Replace the histories of many users in one round trip (an atomic MULTI per call)."""
        if not histories:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            for user_id, items in histories.items():
                key = history_key(user_id)
                pipe.delete(key)
                kept = list(items)[-self._max_len :] if self._max_len else list(items)
                if kept:
                    pipe.rpush(key, *kept)
            await pipe.execute()

    async def append_many(
        self, new_items: Mapping[str, Sequence[str]], *, also: Callable[[Pipeline], None] | None = None
    ) -> None:
        """Append to many users' histories and queue ``also``'s writes (the invalidation of their
        now-stale cached lists) in one MULTI: either every write lands or none does."""
        if not new_items:
            return
        async with self._client.pipeline(transaction=True) as pipe:
            for user_id, item_ids in new_items.items():
                if not item_ids:
                    continue
                key = history_key(user_id)
                pipe.rpush(key, *item_ids)
                if self._max_len:
                    pipe.ltrim(key, -self._max_len, -1)
            if also is not None:
                also(pipe)
            await pipe.execute()

    async def append(self, user_id: str, item_ids: Sequence[str]) -> None:
        """Record new interactions of one user (oldest first), trimming to ``max_len`` when set."""
        await self.append_many({user_id: item_ids})

    async def get_all(self, user_id: str) -> list[str]:
        """Everything the store keeps for the user, oldest first."""
        return parse_items(await self._client.lrange(history_key(user_id), 0, -1))


def parse_items(raw: Sequence[bytes | str]) -> list[str]:
    return [_text(item) for item in raw]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
