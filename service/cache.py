"""Each user's precomputed top-K in Redis, the fast path of ``GET /recommend``.

Key ``genrec:{<user>}:<model_version>:topk`` (``service.keys``) holds ``{"items": [[item_id, score], ...],
"seen": [position, ...]}``, best first, with a TTL. ``seen`` marks the items that were already
in the user's history when the list was computed: any new interaction invalidates the entry
(see ``HistoryStore.append_many``), so while the entry exists those marks are current and a
cache hit with ``exclude_seen`` is ONE Redis GET, with no history read.

The model version is part of the key, so a newly deployed model never serves lists computed
by its predecessor; the old keys simply expire. An invalidated entry is not thrown away: it
moves to ``genrec:{<user>}:<model_version>:stale`` (same TTL), which the service serves,
marked degraded, when the model cannot answer. Both share the user's hash tag with the history,
so the invalidation fits in the events' transaction on a Redis Cluster too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from model.recommender import ScoredItem
from service.keys import similar_key, stale_key, topk_key
from service.redis_client import RedisClient, RedisPipeline

logger = logging.getLogger(__name__)

# KEYS: history list, top-K key; ARGV: expected history length, entry, TTL seconds.
PUT_IF_HISTORY_LEN = """
if redis.call('LLEN', KEYS[1]) == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class CachedList:
    """A user's cached top-K and which of its items the user already had."""

    items: list[ScoredItem]
    seen: frozenset[int] = frozenset()  # positions in ``items``

    @classmethod
    def of(cls, items: Sequence[ScoredItem], history: Iterable[str]) -> CachedList:
        had = set(history)
        return cls(list(items), frozenset(n for n, item in enumerate(items) if item.item_id in had))

    def visible(self, exclude_seen: bool) -> list[ScoredItem]:
        """The list as served: without the items the user already had when ``exclude_seen``."""
        if not exclude_seen or not self.seen:
            return self.items
        return [item for n, item in enumerate(self.items) if n not in self.seen]


def encode_entry(entry: CachedList) -> str:
    return json.dumps(
        {"items": [[item.item_id, item.score] for item in entry.items], "seen": sorted(entry.seen)},
        separators=(",", ":"),
    )


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite score {name}")


def decode_entry(raw: bytes | str) -> CachedList:
    """Parse an entry; ValueError/KeyError/TypeError for anything else (old formats included).

    On the hot path: NaN/Infinity are refused by the parser itself, and items are checked in
    the one pass that builds them.
    """
    entry = json.loads(raw, parse_constant=_reject_constant)
    items = []
    for item_id, score in entry["items"]:
        if type(item_id) is not str or type(score) not in (float, int):
            raise TypeError(f"malformed item {item_id!r}: {score!r}")
        items.append(ScoredItem(item_id, float(score)))
    seen = frozenset(entry["seen"])
    if any(type(n) is not int or not 0 <= n < len(items) for n in seen):
        raise ValueError("seen position outside the list")
    return CachedList(items, seen)


class RecommendationCache:
    """Get/put of per-user top-K lists for one model version."""

    def __init__(self, client: RedisClient, model_version: str, ttl_s: int) -> None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self._client = client
        self.model_version = model_version
        self.ttl_s = ttl_s
        self._put_if_len = client.register_script(PUT_IF_HISTORY_LEN)

    def key(self, user_id: str) -> str:
        return topk_key(self.model_version, user_id)

    def stale_key(self, user_id: str) -> str:
        return stale_key(self.model_version, user_id)

    @property
    def client(self) -> RedisClient:
        return self._client

    async def get(self, user_id: str) -> CachedList | None:
        """The cached list, or None on a miss (or an unreadable entry, which is dropped)."""
        return await self.parse(user_id, await self._client.get(self.key(user_id)))

    def queue_get_stale(self, pipe: RedisPipeline, user_id: str) -> None:
        """Add the read of the user's last invalidated list to a pipeline; ``parse_stale`` its reply."""
        pipe.get(self.stale_key(user_id))

    async def parse(self, user_id: str, raw: bytes | str | None) -> CachedList | None:
        return await self._parse(self.key(user_id), raw)

    async def parse_stale(self, user_id: str, raw: bytes | str | None) -> CachedList | None:
        return await self._parse(self.stale_key(user_id), raw)

    async def _parse(self, key: str, raw: bytes | str | None) -> CachedList | None:
        if raw is None:
            return None
        try:
            return decode_entry(raw)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("dropping corrupt cache entry %s: %r", key, exc)
            await self._client.delete(key)
            return None

    async def put(self, user_id: str, entry: CachedList) -> None:
        await self._client.set(self.key(user_id), encode_entry(entry), ex=self.ttl_s)

    async def put_unless_history_changed(
        self, user_id: str, entry: CachedList, history_key: str, history_len: int
    ) -> bool:
        """``put``, but only while the history the list was computed from is unchanged (its
        length: events only append). An event that lands while the model runs has invalidated
        the entry already, and must not be undone by a list without its item."""
        written = await self._put_if_len(
            keys=[history_key, self.key(user_id)], args=[history_len, encode_entry(entry), self.ttl_s]
        )
        return bool(written)

    async def put_many(self, entries: Mapping[str, CachedList]) -> None:
        """Write many users' lists in ONE pipelined round trip (one per node on a cluster; no
        MULTI: entries are independent)."""
        if not entries:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            self.queue_put_many(pipe, entries)
            await pipe.execute()

    def queue_put_many(self, pipe: RedisPipeline, entries: Mapping[str, CachedList]) -> None:
        """Add the writes of ``put_many`` to a pipeline (to commit them with other writes)."""
        for user_id, entry in entries.items():
            pipe.set(self.key(user_id), encode_entry(entry), ex=self.ttl_s)

    def queue_invalidate(self, pipe: RedisPipeline, user_ids: Iterable[str]) -> None:
        """Add the invalidation of the users' lists to a pipeline: each live list becomes the
        user's stale list (kept for degraded answers, with its remaining TTL) and stops being hit."""
        for user_id in user_ids:
            pipe.copy(self.key(user_id), self.stale_key(user_id), replace=True)
            pipe.delete(self.key(user_id))

    async def invalidate(self, user_id: str) -> None:
        """Drop the user's list, e.g. after new interactions make it stale."""
        async with self._client.pipeline(transaction=True) as pipe:
            self.queue_invalidate(pipe, [user_id])
            await pipe.execute()

    def queue_forget(self, pipe: RedisPipeline, user_id: str) -> None:
        """Add the deletion of the user's live and stale lists to a pipeline (a privacy request)."""
        pipe.delete(self.key(user_id), self.stale_key(user_id))

    def similar_key(self, item_id: str) -> str:
        """Items like an item: the model's list for a history of that one item (no user, no invalidation)."""
        return similar_key(self.model_version, item_id)

    async def get_similar(self, item_id: str) -> CachedList | None:
        key = self.similar_key(item_id)
        return await self._parse(key, await self._client.get(key))

    async def put_similar(self, item_id: str, entry: CachedList) -> None:
        await self._client.set(self.similar_key(item_id), encode_entry(entry), ex=self.ttl_s)
