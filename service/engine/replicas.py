"""Several engine services behind one ``AsyncRecommender``: ``ENGINE_URL=http://a:8001,http://b:8001``.

Each request goes to the healthy replica with the fewest requests outstanding from this
process (least outstanding requests: a slow or busy replica gets less). A replica that cannot
be reached, or answers with an error or another model version, is taken out and the request is
retried on the next one, so stopping one replica fails no request while another is up. A
replica that is out is asked for its status again at most every ``recheck_s`` and put back once
it answers "ok" with this model version: every replica must serve the catalog's version.
Timeouts are not retried elsewhere: a slow answer is not a dead replica, and retrying it would
double the load on an already busy pool.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from model.catalog import Catalog
from model.recommender import RankRequest, ScoredItem
from service.engine.client import EngineUnavailable, RemoteRecommender

logger = logging.getLogger(__name__)

T = TypeVar("T")
RECHECK_S = 2.0
ATTEMPTS = 2  # tries of one replica per request


def engine_urls(value: str) -> list[str]:
    """The engine services ENGINE_URL names: one URL, or several separated by commas."""
    urls = [url.strip() for url in value.split(",") if url.strip()]
    if not urls:
        raise ValueError("ENGINE_URL names no URL")
    return urls


class ReplicaPool:
    """``AsyncRecommender`` over ``replicas`` (same catalog and model version)."""

    def __init__(self, replicas: Sequence[RemoteRecommender], recheck_s: float = RECHECK_S) -> None:
        if not replicas:
            raise ValueError("a replica pool needs at least one replica")
        self.replicas = list(replicas)
        self.catalog: Catalog = replicas[0].catalog
        self.model_version: str = replicas[0].model_version
        self.recheck_s = recheck_s
        self.outstanding = [0] * len(replicas)
        self.served = [0] * len(replicas)  # answers per replica, for metrics and tests
        self._out_since: dict[int, float] = {}

    async def status(self) -> str:
        """ "ok" while some replica answers with this model version (the others are out), else why not."""
        errors = []
        for index, replica in enumerate(self.replicas):
            status = await replica.status()
            if status == "ok":
                self._out_since.pop(index, None)
            else:
                self._take_out(index, status)
                errors.append(f"{replica.url}: {status}")
        if len(errors) == len(self.replicas):
            return "error: no engine replica is ready (" + "; ".join(errors) + ")"
        return "ok"

    async def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        return await self._call(lambda replica: replica.recommend(histories, k))

    async def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]:
        return await self._call(lambda replica: replica.rank(requests))

    async def aclose(self) -> None:
        for replica in self.replicas:
            await replica.aclose()

    async def _call(self, request: Callable[[RemoteRecommender], Awaitable[T]]) -> T:
        """``request`` on the least busy healthy replica, then on the next while they fail.

        Each replica gets up to ``ATTEMPTS`` tries per request, healthy ones first: a dropped
        keep-alive connection on the last healthy replica is retried rather than failing the
        request, and with every replica out each is still tried before giving up.
        """
        tries: Counter[int] = Counter()
        failure: EngineUnavailable | None = None
        while (index := await self._pick(tries)) is not None:
            tries[index] += 1
            self.outstanding[index] += 1
            try:
                answer = await request(self.replicas[index])
            except EngineUnavailable as exc:
                self._take_out(index, str(exc))
                failure = exc
                continue
            finally:
                self.outstanding[index] -= 1
            self._out_since.pop(index, None)  # it answered: whatever took it out has passed
            self.served[index] += 1
            return answer
        raise failure or EngineUnavailable("no engine replica is available")

    async def _pick(self, tries: Counter[int]) -> int | None:
        """The replica to try next: a healthy one with the fewest outstanding requests, else
        (all out) any with tries left. Out ones whose recheck is due are asked first and come
        back when they answer "ok"."""
        await self._recheck()
        left = [i for i in range(len(self.replicas)) if tries[i] < ATTEMPTS]
        healthy = [i for i in left if i not in self._out_since]
        candidates = healthy or left
        return min(candidates, key=lambda i: (tries[i], self.outstanding[i])) if candidates else None

    async def _recheck(self) -> None:
        now = time.monotonic()
        for index, since in list(self._out_since.items()):
            if now - since < self.recheck_s:
                continue
            self._out_since[index] = now  # one recheck at a time, however many requests wait
            if await self.replicas[index].status() == "ok" and index in self._out_since:
                del self._out_since[index]
                logger.info("engine replica %s is back", self.replicas[index].url)

    def _take_out(self, index: int, reason: str) -> None:
        if index not in self._out_since:
            logger.warning("engine replica %s taken out: %s", self.replicas[index].url, reason)
        self._out_since[index] = time.monotonic()
