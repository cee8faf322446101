"""The recommend logic, without HTTP: cache-aside over the model, popular items for cold start.

A request is answered from the user's cached top-``max_k`` when there is one. On a miss the
user's recent history goes through the model (a blocking engine call, run in a worker thread
so the event loop keeps serving cache hits) and the full top-``max_k`` is cached, so every
later request with any ``k`` up to ``max_k`` is a hit. A user with no usable history gets the
catalog's most popular items, which are not cached: they are cheap and the same for everyone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

import anyio
import anyio.to_thread
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from model.catalog import Catalog
from model.recommender import Recommender, ScoredItem
from service.cache import RecommendationCache
from service.history import HistoryStore, parse_items
from service.settings import Settings

logger = logging.getLogger(__name__)

Source = Literal["cache", "model", "fallback"]


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float


class RecommendResult(BaseModel):
    user_id: str
    model_version: str
    source: Source
    items: list[RecommendedItem]
    # Why a user with history got the popularity fallback (Redis or the model unavailable).
    degraded: str | None = None


class InvalidK(ValueError):
    """``k`` is outside 1..max_k (the cache holds max_k items per user)."""


class UnknownItems(ValueError):
    """Events name items the catalog does not have; nothing of the request was recorded."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = list(item_ids)
        shown = ", ".join(repr(i) for i in self.item_ids[:20])
        more = f" and {len(self.item_ids) - 20} more" if len(self.item_ids) > 20 else ""
        super().__init__(f"unknown item id(s): {shown}{more}; no event of this request was recorded")


class Event(BaseModel):
    """One interaction: ``user_id`` got ``item_id`` (at ``ts``, seconds since the epoch, if given)."""

    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    ts: float | None = None


class EventsAccepted(BaseModel):
    accepted: int
    users: int


class EngineTimeout(RuntimeError):
    """The model did not answer within ``engine_timeout_s``."""


def usable_history(history: Sequence[str], catalog: Catalog, history_len: int) -> tuple[list[str], int]:
    """The last ``history_len`` items of ``history`` minus ids the catalog does not know.

    Returns the model input and how many ids were dropped. Precompute and on-demand requests
    share this, so both paths feed the model the same input for the same stored history.
    """
    recent = list(history)[-history_len:] if history_len > 0 else []
    known = [item_id for item_id in recent if item_id in catalog]
    return known, len(recent) - len(known)


def _unseen(items: Sequence[ScoredItem], seen: set[str]) -> list[ScoredItem]:
    return [item for item in items if item.item_id not in seen] if seen else list(items)


class ModelRunner:
    """Runs the blocking, non-thread-safe recommender off the event loop, one engine call at a time,
    micro-batching concurrent requests and coalescing identical ones.

    Requests that arrive while the engine is busy wait in a queue; when it frees up, they all
    go in ONE engine call (up to ``max_batch``), which is how a constrained beam search is cheap
    per user. Concurrent requests with the same (history, k) share one answer, queued or already
    being computed, so a burst of misses for one user costs one generation. A caller that times
    out gets EngineTimeout; the engine call it was part of still finishes and serves the others.
    """

    def __init__(self, recommender: Recommender, timeout_s: float | None, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.recommender = recommender
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self.on_batch: Callable[[int], None] | None = None  # observer: size of each engine call
        # Unanswered requests by (history, k): queued or in the running engine call. Only the
        # queued ones are in ``_queue``, in arrival order.
        self._unanswered: dict[tuple[tuple[str, ...], int], asyncio.Future[list[ScoredItem]]] = {}
        self._queue: dict[tuple[tuple[str, ...], int], asyncio.Future[list[ScoredItem]]] = {}
        # Held across the worker-thread call, which is never abandoned (callers wait on shielded
        # futures), so engine calls cannot overlap.
        self._engine_lock = asyncio.Lock()
        self._drains: set[asyncio.Task[None]] = set()

    async def run(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        """``recommender.recommend(histories, k)``, batched with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        futures = []
        for history in histories:
            key = (tuple(history), k)
            future = self._unanswered.get(key)
            if future is None or future.done():
                future = self._unanswered[key] = self._queue[key] = loop.create_future()
                future.add_done_callback(functools.partial(self._forget, key))
                drain = loop.create_task(self._drain())
                self._drains.add(drain)  # the loop keeps only weak references to tasks
                drain.add_done_callback(self._drains.discard)
            futures.append(future)
        try:
            with anyio.fail_after(self.timeout_s):
                return list(await asyncio.gather(*(asyncio.shield(f) for f in futures)))
        except TimeoutError as exc:
            raise EngineTimeout(f"the model did not answer within {self.timeout_s}s") from exc

    def _forget(self, key: tuple[tuple[str, ...], int], future: asyncio.Future[list[ScoredItem]]) -> None:
        if self._unanswered.get(key) is future:
            del self._unanswered[key]

    async def _drain(self) -> None:
        """Take up to ``max_batch`` queued requests of one k and run them as one engine call."""
        async with self._engine_lock:
            if not self._queue:
                return
            k = next(iter(self._queue))[1]
            batch = [(key, f) for key, f in self._queue.items() if key[1] == k][: self.max_batch]
            for key, _ in batch:
                del self._queue[key]
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await anyio.to_thread.run_sync(
                    self.recommender.recommend, [key[0] for key, _ in batch], k
                )
            except Exception as exc:  # every waiter of this call learns why
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


class RecommendService:
    """Answers "top-k items for this user" from the cache, the model, or the popularity fallback."""

    def __init__(
        self,
        recommender: Recommender,
        cache: RecommendationCache,
        history: HistoryStore,
        settings: Settings,
        runner: ModelRunner | None = None,
    ) -> None:
        if cache.model_version != recommender.model_version:
            raise ValueError(f"cache is for {cache.model_version!r}, model is {recommender.model_version!r}")
        self.recommender = recommender
        self.catalog = recommender.catalog
        self.cache = cache
        self.history = history
        self.settings = settings
        self.runner = runner or ModelRunner(
            recommender, settings.engine_timeout_s, max_batch=settings.engine_config().max_batch or 1
        )

    @property
    def model_version(self) -> str:
        return self.recommender.model_version

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise InvalidK(f"k must be between 1 and {self.settings.max_k}, got {k}")

    async def recommend(self, user_id: str, k: int, *, exclude_seen: bool = True) -> RecommendResult:
        """Top-``k`` for ``user_id``; raises only InvalidK.

        With ``exclude_seen`` items already in the user's history are left out, so the list can
        be shorter than ``k`` when the history overlaps the cached top-``max_k``. When Redis or
        the model fails, the answer is the popularity fallback with ``degraded`` saying why:
        a recommendation service should bend, not break.
        """
        self.check_k(k)
        try:
            history, cached = await self._read(user_id, exclude_seen)
        except RedisError as exc:
            logger.warning("Redis unavailable (%r): popular items for user %s", exc, user_id)
            return self._popular(user_id, k, set(), degraded=f"Redis unavailable: {exc}")
        seen = set(history) if exclude_seen else set()
        if cached is not None:
            return self._result(user_id, "cache", _unseen(cached, seen)[:k])

        known, skipped = usable_history(history, self.catalog, self.settings.history_len)
        if skipped:
            logger.info("user %s: skipped %d history item(s) unknown to the catalog", user_id, skipped)
        if not known:
            return self._popular(user_id, k, seen)
        try:
            [top] = await self.runner.run([known], self.settings.max_k)
        except Exception as exc:  # a timeout or a failed engine call: answer anyway
            logger.error("model unavailable for user %s: %s", user_id, exc)
            return self._popular(user_id, k, seen, degraded=f"model unavailable: {exc}")
        try:
            await self.cache.put(user_id, top)
        except RedisError as exc:
            logger.warning("could not cache the list of user %s: %r", user_id, exc)
        return self._result(user_id, "model", _unseen(top, seen)[:k])

    async def _read(self, user_id: str, whole_history: bool) -> tuple[list[str], list[ScoredItem] | None]:
        """The user's history (all of it, or the model's window) and cached list in ONE round trip
        on one connection: the cache-hit path costs what a single GET costs."""
        async with self.cache.client.pipeline(transaction=False) as pipe:
            self.history.queue_get(pipe, user_id, None if whole_history else self.settings.history_len)
            self.cache.queue_get(pipe, user_id)
            raw_history, raw_cached = await pipe.execute()
        return parse_items(raw_history), await self.cache.parse(user_id, raw_cached)

    def _popular(self, user_id: str, k: int, seen: set[str], degraded: str | None = None) -> RecommendResult:
        popular = [
            ScoredItem(item_id=item.item_id, score=float(item.popularity))
            for item in self.catalog.most_popular(k + len(seen))
        ]
        return self._result(user_id, "fallback", _unseen(popular, seen)[:k], degraded=degraded)

    async def record_events(self, events: Sequence[Event]) -> EventsAccepted:
        """Append the events to their users' histories and drop those users' cached lists, in one
        transaction; all-or-nothing: any unknown item rejects the whole request (UnknownItems).

        Per user, events with a timestamp are ordered by it, events without keep request order
        after them.
        """
        unknown = sorted({e.item_id for e in events if e.item_id not in self.catalog})
        if unknown:
            raise UnknownItems(unknown)
        per_user: dict[str, list[str]] = {}
        ordered = sorted(events, key=lambda e: math.inf if e.ts is None else e.ts)  # stable
        for event in ordered:
            per_user.setdefault(event.user_id, []).append(event.item_id)
        await self.history.append_many(per_user, delete_keys=[self.cache.key(u) for u in per_user])
        return EventsAccepted(accepted=len(events), users=len(per_user))

    def _result(
        self, user_id: str, source: Source, items: Sequence[ScoredItem], degraded: str | None = None
    ) -> RecommendResult:
        # Built without re-validation: every value comes from the catalog or the engine (or a
        # cache entry that parsed), and this runs on every cache hit.
        rendered: list[RecommendedItem] = []
        for scored in items:
            item = self.catalog.get(scored.item_id)
            if item is None:  # a cached list from a catalog this model version should not have
                logger.warning("user %s: dropping item %r unknown to the catalog", user_id, scored.item_id)
                continue
            rendered.append(
                RecommendedItem.model_construct(
                    item_id=item.item_id, title=item.title, score=float(scored.score)
                )
            )
        return RecommendResult.model_construct(
            user_id=user_id,
            model_version=self.model_version,
            source=source,
            items=rendered,
            degraded=degraded,
        )
