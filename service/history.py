"""User histories in Redis, the model's input for on-demand recommendations.

Key ``genrec:{<user>}:hist`` (``service.keys``) is a Redis LIST of item ids, oldest first, so
reading the recent past is one LRANGE with a negative start. ``genrec:{<user>}:hist_ts`` is the
LIST of their times (seconds since the epoch), entry for entry: an event is inserted after the
last entry not later than it, so one that arrives late (``ts`` 1 after ``ts`` 300) still lands
in time order. Entries written without a time (a seeded histories file) count as time 0, the
oldest. Histories are not versioned by model: they are facts about users, not model outputs.

A write over many users is one transaction (or script) on a single Redis. On a Redis Cluster
it is one per hash slot (``service.redis_client.slot_groups``): each user's writes stay atomic,
but two users of one call may land apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence

from model.catalog import Catalog
from service.keys import history_key, times_key
from service.redis_client import (
    RedisClient,
    RedisPipeline,
    for_each_group,
    queue_script,
    slot_groups,
)

# Chunked RPUSH of items[from..]: Lua's unpack has a stack limit.
_PUSH = """
local function push(key, items, from)
  for i = from, #items, 1000 do
    redis.call('RPUSH', key, unpack(items, i, math.min(i + 999, #items)))
  end
end
"""

# KEYS: history, times; ARGV: max_len (0: none), then item, ts pairs in time order.
INSERT_SCRIPT = (
    _PUSH
    + """
local hist, times = KEYS[1], KEYS[2]
local max_len = tonumber(ARGV[1])
local n = redis.call('LLEN', hist)
local t = redis.call('LLEN', times)
if t > n then redis.call('LTRIM', times, t - n, -1) end
for _ = 1, n - t do redis.call('LPUSH', times, '0') end  -- untimed (seeded) entries: time 0
for i = 2, #ARGV, 2 do
  local ts = tonumber(ARGV[i + 1])
  local pos = n  -- after the last entry not later than ts
  while pos > 0 and tonumber(redis.call('LINDEX', times, pos - 1)) > ts do pos = pos - 1 end
  if pos == n then
    redis.call('RPUSH', hist, ARGV[i])
    redis.call('RPUSH', times, ARGV[i + 1])
  else
    local later_items = redis.call('LRANGE', hist, pos, -1)
    local later_times = redis.call('LRANGE', times, pos, -1)
    if pos == 0 then
      redis.call('DEL', hist, times)
    else
      redis.call('LTRIM', hist, 0, pos - 1)
      redis.call('LTRIM', times, 0, pos - 1)
    end
    redis.call('RPUSH', hist, ARGV[i])
    redis.call('RPUSH', times, ARGV[i + 1])
    push(hist, later_items, 1)
    push(times, later_times, 1)
  end
  n = n + 1
end
if max_len > 0 then
  redis.call('LTRIM', hist, -max_len, -1)
  redis.call('LTRIM', times, -max_len, -1)
end
return n
"""
)

# KEYS: history and times key of each user; ARGV: each user's source history as a JSON array,
# then max_len (0: none). Returns the users whose different stored history was kept. Items it
# appends take the time of the last timed entry (the file has none), keeping the times aligned.
SEED_SCRIPT = (
    _PUSH
    + """
local max_len = tonumber(ARGV[#ARGV])
local kept = 0
for k = 1, #KEYS, 2 do
  local hist, times = KEYS[k], KEYS[k + 1]
  local items = cjson.decode(ARGV[(k + 1) / 2])
  local stored = redis.call('LRANGE', hist, 0, -1)
  local n = #stored
  local prefix = n <= #items
  if prefix then
    for i = 1, n do
      if stored[i] ~= items[i] then prefix = false; break end
    end
  end
  if prefix then
    push(hist, items, n + 1)
    local t = redis.call('LLEN', times)
    if t > 0 then
      local last = redis.call('LINDEX', times, -1)
      for _ = t + 1, #items do redis.call('RPUSH', times, last) end
    end
    if max_len > 0 then
      redis.call('LTRIM', hist, -max_len, -1)
      redis.call('LTRIM', times, -max_len, -1)
    end
  else
    kept = kept + 1
  end
end
return kept
"""
)


class HistoryStore:
    """Reads and writes user histories; ``max_len`` (if set) caps how many items a user keeps."""

    def __init__(self, client: RedisClient, max_len: int | None = None) -> None:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self._client = client
        self._max_len = max_len
        self._seed_script = client.register_script(SEED_SCRIPT)
        self._insert_script = client.register_script(INSERT_SCRIPT)

    def _capped(self, items: Sequence[str]) -> list[str]:
        """What the store keeps of ``items``: the last ``max_len`` of them, when set."""
        return list(items)[-self._max_len :] if self._max_len else list(items)

    async def get(self, user_id: str, limit: int) -> list[str]:
        """The last ``limit`` item ids of the user (oldest first); [] for an unknown user."""
        if limit < 1:
            return []
        return parse_items(await self._client.lrange(history_key(user_id), -limit, -1))

    def queue_get(self, pipe: RedisPipeline, user_id: str, limit: int | None) -> None:
        """Add the read of the last ``limit`` items (None: all) to a pipeline; ``parse_items`` its reply."""
        pipe.lrange(history_key(user_id), -limit if limit else 0, -1)

    async def set_many(self, histories: Mapping[str, Sequence[str]]) -> None:
        """Replace the histories of many users in one round trip (an atomic MULTI per call, per
        hash slot on a cluster).

        Tests and tools only: a batch job must merge (:meth:`seed_many`), never replace, or it
        would erase the events the API accepted.
        """

        async def write(users: list[str]) -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                for user_id in users:
                    key = history_key(user_id)
                    pipe.delete(key, times_key(user_id))
                    kept = self._capped(histories[user_id])
                    if kept:
                        pipe.rpush(key, *kept)
                await pipe.execute()

        await for_each_group(slot_groups(self._client, histories, history_key), write)

    async def seed_many(self, histories: Mapping[str, Sequence[str]]) -> int:
        """Merge a batch source's histories (a file, a dataset) into the store, atomically.

        The rule (README, "Precompute"): a user without a stored history gets the file's; a
        stored history that is a prefix of the file's is extended by the rest of it; any other
        stored history (the API's events went beyond or elsewhere than the file) is kept as it
        is. So a batch job never shortens a history nor drops an event the API accepted, and
        running it twice changes nothing. One Lua script per call (per hash slot on a cluster):
        an event landing meanwhile is ordered entirely before or after the merge of its user.
        Returns how many users kept a stored history that differs from the source's.
        """

        async def merge(users: list[str]) -> int:
            # compare against what the store would keep of the source (its last max_len items)
            args = [json.dumps(self._capped(histories[user_id])) for user_id in users]
            keys = [key for user_id in users for key in (history_key(user_id), times_key(user_id))]
            return int(await self._seed_script(keys=keys, args=[*args, self._max_len or 0]))

        return sum(await for_each_group(slot_groups(self._client, histories, history_key), merge))

    async def append_many(
        self,
        new_items: Mapping[str, Sequence[str | tuple[str, float]]],
        *,
        also: Callable[[RedisPipeline, Sequence[str]], None] | None = None,
    ) -> None:
        """Record many users' interactions and queue ``also``'s writes for those users (the
        invalidation of their now-stale cached lists) in one MULTI: either every write lands or
        none does. On a cluster that holds per hash slot, so per user: a failure part-way can
        leave some users' interactions recorded (with their lists invalidated) and not others'.

        Each interaction is an item id (now) or ``(item_id, ts)``; each goes in at its time, after
        the entries not later than it (see the module docstring).
        """
        now = time.time()
        timed = {
            user_id: sorted(
                ((i, now) if isinstance(i, str) else i for i in interactions), key=lambda e: e[1]
            )  # stable: equal times keep their order
            for user_id, interactions in new_items.items()
        }

        async def write(users: list[str]) -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                for user_id in users:
                    if not timed[user_id]:
                        continue
                    args: list[str | int | float] = [self._max_len or 0]
                    for item_id, ts in timed[user_id]:
                        args += [item_id, repr(float(ts))]
                    await queue_script(
                        pipe, self._insert_script, [history_key(user_id), times_key(user_id)], args
                    )
                if also is not None:
                    also(pipe, users)
                await pipe.execute()

        await for_each_group(slot_groups(self._client, timed, history_key), write)

    async def append(self, user_id: str, item_ids: Sequence[str]) -> None:
        """Record new interactions of one user (oldest first, now), trimming to ``max_len`` when set."""
        await self.append_many({user_id: item_ids})

    async def get_times(self, user_id: str) -> list[float]:
        """The times of the user's entries (0 for untimed ones), aligned with :meth:`get_all`."""
        n = await self._client.llen(history_key(user_id))
        times = [float(t) for t in await self._client.lrange(times_key(user_id), 0, -1)][-n:] if n else []
        return [0.0] * (n - len(times)) + times

    async def get_all(self, user_id: str) -> list[str]:
        """Everything the store keeps for the user, oldest first."""
        return parse_items(await self._client.lrange(history_key(user_id), 0, -1))


def parse_items(raw: Sequence[bytes | str]) -> list[str]:
    return [as_text(item) for item in raw]


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (clients without ``decode_responses`` answer bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def usable_history(history: Sequence[str], catalog: Catalog, history_len: int) -> tuple[list[str], int]:
    """The last ``history_len`` items of ``history`` minus ids the catalog does not know.

    Returns the model input and how many ids were dropped. Precompute and on-demand requests
    share this, so both paths feed the model the same input for the same stored history.
    """
    recent = list(history)[-history_len:] if history_len > 0 else []
    known = [item_id for item_id in recent if item_id in catalog]
    return known, len(recent) - len(known)
