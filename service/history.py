"""User histories in Redis, the model's input for on-demand recommendations.

Key ``genrec:hist:{user_id}`` is a Redis LIST of item ids, oldest first, so appending an
interaction is one RPUSH and reading the recent past is one LRANGE with a negative start.
Histories are not versioned by model: they are facts about users, not model outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

HISTORY_KEY = "genrec:hist:{user_id}"

# KEYS: history keys; ARGV: each user's source history as a JSON array, then max_len (0: none).
# Pushes in chunks (Lua's unpack has a stack limit); returns the users whose different stored
# history was kept.
SEED_SCRIPT = """
local max_len = tonumber(ARGV[#ARGV])
local kept = 0
local function push(key, items, from)
  for i = from, #items, 1000 do
    redis.call('RPUSH', key, unpack(items, i, math.min(i + 999, #items)))
  end
end
for k, key in ipairs(KEYS) do
  local items = cjson.decode(ARGV[k])
  local stored = redis.call('LRANGE', key, 0, -1)
  local n = #stored
  local prefix = n <= #items
  if prefix then
    for i = 1, n do
      if stored[i] ~= items[i] then prefix = false; break end
    end
  end
  if prefix then
    push(key, items, n + 1)
    if max_len > 0 then redis.call('LTRIM', key, -max_len, -1) end
  else
    kept = kept + 1
  end
end
return kept
"""


def history_key(user_id: str) -> str:
    return HISTORY_KEY.format(user_id=user_id)


class HistoryStore:
    """Reads and writes user histories; ``max_len`` (if set) caps how many items a user keeps."""

    def __init__(self, client: redis.Redis, max_len: int | None = None) -> None:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self._client = client
        self._max_len = max_len
        self._seed_script = client.register_script(SEED_SCRIPT)

    async def get(self, user_id: str, limit: int) -> list[str]:
        """The last ``limit`` item ids of the user (oldest first); [] for an unknown user."""
        if limit < 1:
            return []
        return parse_items(await self._client.lrange(history_key(user_id), -limit, -1))

    def queue_get(self, pipe: Pipeline, user_id: str, limit: int | None) -> None:
        """Add the read of the last ``limit`` items (None: all) to a pipeline; ``parse_items`` its reply."""
        pipe.lrange(history_key(user_id), -limit if limit else 0, -1)

    async def set_many(self, histories: Mapping[str, Sequence[str]]) -> None:
        """Replace the histories of many users in one round trip (an atomic MULTI per call).

        Tests and tools only: a batch job must merge (:meth:`seed_many`), never replace, or it
        would erase the events the API accepted.
        """
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

    async def seed_many(self, histories: Mapping[str, Sequence[str]]) -> int:
        """Merge a batch source's histories (a file, a dataset) into the store, atomically.

        The rule (README, "Precompute"): a user without a stored history gets the file's; a
        stored history that is a prefix of the file's is extended by the rest of it; any other
        stored history (the API's events went beyond or elsewhere than the file) is kept as it
        is. So a batch job never shortens a history nor drops an event the API accepted, and
        running it twice changes nothing. One Lua script per call: an event landing meanwhile
        is ordered entirely before or after the merge. Returns how many users kept a stored
        history that differs from the source's.
        """
        if not histories:
            return 0
        users = list(histories)
        # compare against what the store would keep of the source (its last max_len items)
        args = [
            json.dumps(
                list(histories[user_id])[-self._max_len :] if self._max_len else list(histories[user_id])
            )
            for user_id in users
        ]
        kept = await self._seed_script(
            keys=[history_key(user_id) for user_id in users], args=[*args, self._max_len or 0]
        )
        return int(kept)

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
