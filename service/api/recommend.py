"""The recommend logic, without HTTP: cache-aside over the model, popular items for cold start.

A request is answered from the user's cached top-``max_k`` when there is one: one Redis GET,
since the entry itself says which of its items the user already has. On a miss the user's
history goes through the engine (in this process or the engine service) and the full
top-``max_k`` is cached, so every later request with any ``k`` up to ``max_k`` is a hit. A user
with no usable history gets the catalog's most popular items, which are not cached: they are
cheap and the same for everyone. Nothing here fails a request because a dependency did: with
Redis down the answer is the popularity fallback, with the model down the user's last
invalidated list (stale) or the fallback, each marked ``degraded``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence, Set

from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from model.catalog import Catalog, category_path
from model.recommender import ScoredItem
from service.api.render import Recommendation, ResultRenderer, Source
from service.cache import CachedList, RecommendationCache
from service.engine.protocol import AsyncRecommender
from service.history import HistoryStore, parse_items, usable_history
from service.keys import history_key, times_key
from service.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["Event", "EventsAccepted", "InvalidRequest", "RecommendService", "Source", "UnknownItems"]


class InvalidRequest(ValueError):
    """A request parameter is out of range (``k`` outside 1..max_k, too many candidates)."""


class UnknownItems(ValueError):
    """The request names items the catalog does not have; nothing of it was recorded or ranked."""

    def __init__(self, item_ids: Sequence[str], consequence: str) -> None:
        self.item_ids = list(item_ids)
        shown = ", ".join(repr(i) for i in self.item_ids[:20])
        more = f" and {len(self.item_ids) - 20} more" if len(self.item_ids) > 20 else ""
        super().__init__(f"unknown item id(s): {shown}{more}; {consequence}")


class Event(BaseModel):
    """One interaction: ``user_id`` got ``item_id`` (at ``ts``, seconds since the epoch, if given)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently dropped

    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    # strict: a JSON number (never true/false or a string); finite and not before the epoch
    ts: float | None = Field(None, strict=True, allow_inf_nan=False, ge=0)


class EventsAccepted(BaseModel):
    accepted: int
    users: int


class UserDeleted(BaseModel):
    """What ``DELETE /v1/users/{user_id}`` removed (zeros for an unknown user)."""

    user_id: str
    history_items: int
    cached_lists: int  # the current model version's live and stale lists


# Why an answer is degraded, as API clients see it: a short public reason. The details (the
# engine's address, the exception) go to the log, never into a response.
CACHE_DOWN = "Redis unavailable"
MODEL_DOWN = "model unavailable"
MODEL_DOWN_STALE = "model unavailable; serving the list cached before the latest events"


def _unseen(items: Sequence[ScoredItem], seen: Set[str]) -> list[ScoredItem]:
    return [item for item in items if item.item_id not in seen] if seen else list(items)


def _in_category(items: list[ScoredItem], catalog: Catalog, category: tuple[str, ...]) -> list[ScoredItem]:
    return [item for item in items if catalog[item.item_id].in_category(category)] if category else items


class RecommendService:
    """Answers "top-k items for this user" from the cache, the model, or the popularity fallback."""

    def __init__(
        self,
        recommender: AsyncRecommender,
        cache: RecommendationCache,
        history: HistoryStore,
        settings: Settings,
    ) -> None:
        if cache.model_version != recommender.model_version:
            raise ValueError(f"cache is for {cache.model_version!r}, model is {recommender.model_version!r}")
        self.recommender = recommender
        self.catalog = recommender.catalog
        self.cache = cache
        self.history = history
        self.settings = settings
        self.renderer = ResultRenderer(self.catalog, recommender.model_version)

    @property
    def model_version(self) -> str:
        return self.recommender.model_version

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise InvalidRequest(f"k must be between 1 and {self.settings.max_k}, got {k}")

    def category_of(self, category: str | None) -> tuple[str, ...]:
        """The ``category=`` filter as a category path (``()``: none); InvalidRequest when no
        item of this catalog is in it."""
        if category is None:
            return ()
        wanted = category_path(category)
        if not wanted:
            raise InvalidRequest("category: empty")
        if not self.catalog.has_categories:
            raise InvalidRequest("category: this model's catalog has no categories")
        if not self.catalog.knows_category(wanted):
            raise InvalidRequest(f"category: no item is in {category!r}")
        return wanted

    def render(self, result: Recommendation, subject: str = "user_id") -> bytes:
        """The ``RecommendResult`` JSON of ``result`` (``SimilarItemsResult`` with "item_id")."""
        return self.renderer.render(result, subject)

    async def recommend(
        self,
        user_id: str,
        k: int,
        *,
        exclude_seen: bool = True,
        exclude: frozenset[str] = frozenset(),
        category: tuple[str, ...] = (),
    ) -> Recommendation:
        """Top-``k`` for ``user_id``; raises only InvalidRequest.

        With ``exclude_seen`` items already in the user's history are left out, and so are the
        ``exclude`` ids and, with a ``category`` (see :meth:`category_of`), the items outside
        it; the cache holds ``list_len`` (MAX_K + CACHE_EXTRA) items so that the list keeps
        ``k`` unless the filters remove more than CACHE_EXTRA of them. The popularity fallback
        applies the same filters and always keeps ``k`` where the catalog has that many.
        """
        self.check_k(k)

        def served(items: Sequence[ScoredItem], skip: Set[str]) -> list[ScoredItem]:
            return _in_category(_unseen(items, skip), self.catalog, category)[:k]

        try:
            cached = await self.cache.get(user_id)
            if cached is not None:
                return Recommendation(user_id, "cache", served(cached.visible(exclude_seen), exclude))
            history, stale = await self._history_and_stale(user_id)
        except RedisError as exc:
            logger.warning("Redis unavailable (%r): popular items for user %s", exc, user_id)
            return self._popular(user_id, k, exclude, category, degraded=CACHE_DOWN)
        seen = (set(history) if exclude_seen else set()) | exclude
        known, skipped = usable_history(history, self.catalog, self.settings.history_len)
        if skipped:
            logger.info("user %s: skipped %d history item(s) unknown to the catalog", user_id, skipped)
        if not known:
            return self._popular(user_id, k, seen, category)
        try:
            [top] = await self.recommender.recommend([known], self.settings.list_len)
        except Exception as exc:  # a timeout, a failed or unreachable engine: answer anyway
            logger.error("model unavailable for user %s: %s", user_id, exc)
            if stale is not None:
                return Recommendation(user_id, "cache", served(stale.items, seen), MODEL_DOWN_STALE)
            return self._popular(user_id, k, seen, category, degraded=MODEL_DOWN)
        entry = CachedList.of(top, history)
        try:
            await self.cache.put_unless_history_changed(user_id, entry, history_key(user_id), len(history))
        except RedisError as exc:
            logger.warning("could not cache the list of user %s: %r", user_id, exc)
        return Recommendation(user_id, "model", served(entry.visible(exclude_seen), exclude))

    async def _history_and_stale(self, user_id: str) -> tuple[list[str], CachedList | None]:
        """The user's whole history and last invalidated list, in one round trip (miss path only)."""
        async with self.cache.client.pipeline(transaction=False) as pipe:
            self.history.queue_get(pipe, user_id, None)
            self.cache.queue_get_stale(pipe, user_id)
            raw_history, raw_stale = await pipe.execute()
        return parse_items(raw_history), await self.cache.parse_stale(user_id, raw_stale)

    async def rank(self, user_id: str, candidates: Sequence[str]) -> Recommendation:
        """``candidates`` ordered for ``user_id`` by the model, best first, each once.

        Raises InvalidRequest (none, or more than ``rank_max_candidates``) and UnknownItems.
        A user without usable history, or an unavailable Redis or model, gets the candidates in
        popularity order (``source`` "fallback", ``degraded`` saying why when it is a fault).
        """
        distinct = list(dict.fromkeys(candidates))
        if not 1 <= len(distinct) <= self.settings.rank_max_candidates:
            raise InvalidRequest(
                f"candidates must hold 1..{self.settings.rank_max_candidates} distinct items, "
                f"got {len(distinct)}"
            )
        unknown = [item_id for item_id in distinct if item_id not in self.catalog]
        if unknown:
            raise UnknownItems(unknown, "nothing was ranked")
        by_popularity = sorted(distinct, key=lambda i: -self.catalog[i].popularity)
        popular = [ScoredItem(i, float(self.catalog[i].popularity)) for i in by_popularity]
        try:
            history = await self.history.get(user_id, self.settings.history_len)
        except RedisError as exc:
            logger.warning("Redis unavailable (%r): popularity order for user %s", exc, user_id)
            return Recommendation(user_id, "fallback", popular, degraded=CACHE_DOWN)
        known, _ = usable_history(history, self.catalog, self.settings.history_len)
        if not known:
            return Recommendation(user_id, "fallback", popular)
        try:
            [ranked] = await self.recommender.rank([(known, distinct)])
        except Exception as exc:
            logger.error("model unavailable to rank for user %s: %s", user_id, exc)
            return Recommendation(user_id, "fallback", popular, degraded=MODEL_DOWN)
        return Recommendation(user_id, "model", ranked)

    def _popular(
        self,
        user_id: str,
        k: int,
        seen: Set[str],
        category: tuple[str, ...] = (),
        degraded: str | None = None,
    ) -> Recommendation:
        popular = [
            ScoredItem(item_id=item.item_id, score=float(item.popularity))
            for item in self.catalog.most_popular(k, exclude=seen, category=category)
        ]
        return Recommendation(user_id, "fallback", popular, degraded)

    async def similar(self, item_id: str, k: int) -> Recommendation:
        """Items like ``item_id``: the model's top-``k`` for a history of that one item, the item
        itself left out; cached per item like user lists. The answer's ``user_id`` is the item.

        Raises InvalidRequest and UnknownItems. With Redis or the model down the answer is the
        popularity fallback, marked degraded.
        """
        self.check_k(k)
        if item_id not in self.catalog:
            raise UnknownItems([item_id], "no list for an item outside the catalog")
        try:
            cached = await self.cache.get_similar(item_id)
        except RedisError as exc:
            logger.warning("Redis unavailable (%r): popular items like %s", exc, item_id)
            return self._popular(item_id, k, {item_id}, degraded=CACHE_DOWN)
        if cached is not None:
            return Recommendation(item_id, "cache", cached.visible(True)[:k])
        try:
            [top] = await self.recommender.recommend([[item_id]], self.settings.list_len)
        except Exception as exc:
            logger.error("model unavailable for items like %s: %s", item_id, exc)
            return self._popular(item_id, k, {item_id}, degraded=MODEL_DOWN)
        entry = CachedList.of(top, [item_id])
        try:
            await self.cache.put_similar(item_id, entry)
        except RedisError as exc:
            logger.warning("could not cache the items like %s: %r", item_id, exc)
        return Recommendation(item_id, "model", entry.visible(True)[:k])

    async def forget_user(self, user_id: str) -> UserDeleted:
        """Delete the user's history and cached lists in one transaction (a privacy request).

        Lists of earlier model versions are not looked for (that needs a keyspace scan); they
        expire within CACHE_TTL_S. A list being computed meanwhile is not written back: its
        write checks the history's length, which is now 0.
        """
        async with self.cache.client.pipeline(transaction=True) as pipe:
            pipe.llen(history_key(user_id))
            pipe.delete(history_key(user_id), times_key(user_id))
            self.cache.queue_forget(pipe, user_id)
            items, _, lists = await pipe.execute()
        logger.info("user %s deleted: %d history items, %d cached lists", user_id, items, lists)
        return UserDeleted(user_id=user_id, history_items=int(items), cached_lists=int(lists))

    async def record_events(self, events: Sequence[Event]) -> EventsAccepted:
        """Append the events to their users' histories and invalidate those users' cached lists,
        in one transaction (per user on a Redis Cluster, see ``HistoryStore.append_many``);
        all-or-nothing: any unknown item rejects the whole request.

        Each event goes into its user's history at its time (``ts``, or now when it has none),
        after the entries not later than it, so a late-arriving event still lands in order.
        """
        unknown = sorted({e.item_id for e in events if e.item_id not in self.catalog})
        if unknown:
            raise UnknownItems(unknown, "no event of this request was recorded")
        now = time.time()
        per_user: dict[str, list[str | tuple[str, float]]] = {}
        for event in events:  # an event without ts happened now; the store orders by time
            per_user.setdefault(event.user_id, []).append(
                (event.item_id, now if event.ts is None else event.ts)
            )
        await self.history.append_many(per_user, also=self.cache.queue_invalidate)
        return EventsAccepted(accepted=len(events), users=len(per_user))
