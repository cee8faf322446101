"""A ``Recommender`` in this process as an ``AsyncRecommender``: ``LocalRecommender``.

Used by ``genrec serve`` without ENGINE_URL, by the engine service itself and by precompute;
the other ``AsyncRecommender`` is ``service.engine.client.RemoteRecommender``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from model.catalog import Catalog
from model.recommender import RankRequest, Recommender, ScoredItem
from service.engine.protocol import AsyncRecommender, EngineTimeout

logger = logging.getLogger(__name__)

T = TypeVar("T")


def as_async(
    recommender: Recommender | AsyncRecommender, timeout_s: float | None, max_batch: int
) -> AsyncRecommender:
    """``recommender`` itself if it is async, else a ``LocalRecommender`` running it."""
    if isinstance(recommender, AsyncRecommender):
        return recommender
    return LocalRecommender(recommender, timeout_s, max_batch)


class LocalRecommender:
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
        # futures and tasks), so engine calls cannot overlap.
        self._engine_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def model_version(self) -> str:
        return self.recommender.model_version

    @property
    def catalog(self) -> Catalog:
        return self.recommender.catalog

    async def status(self) -> str:
        return "ok"

    async def aclose(self) -> None:
        """Nothing to release: whoever built the recommender stops it."""

    async def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        """``recommender.recommend(histories, k)``, batched with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        futures = []
        for history in histories:
            key = (tuple(history), k)
            future = self._unanswered.get(key)
            if future is None or future.done():
                future = self._unanswered[key] = self._queue[key] = loop.create_future()
                future.add_done_callback(functools.partial(self._forget, key))
                self._spawn(self._drain())
            futures.append(future)
        shielded = (asyncio.shield(future) for future in futures)
        answers: asyncio.Future[list[list[ScoredItem]]] = asyncio.gather(*shielded)
        lists = await self._wait(answers)
        return lists

    async def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]:
        """``recommender.rank(requests)`` as one engine call (ranking requests are not coalesced:
        their candidate lists rarely repeat)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[list[ScoredItem]]] = loop.create_future()

        async def call() -> None:
            async with self._engine_lock:
                try:
                    answer.set_result(await anyio.to_thread.run_sync(self.recommender.rank, requests))
                except Exception as exc:
                    answer.set_exception(exc)

        self._spawn(call())
        return await self._wait(asyncio.shield(answer))

    async def _wait(self, awaitable: asyncio.Future[T]) -> T:
        try:
            with anyio.fail_after(self.timeout_s):
                return await awaitable
        except TimeoutError as exc:
            raise EngineTimeout(f"the model did not answer within {self.timeout_s}s") from exc

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

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
