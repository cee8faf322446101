"""In-test stand-ins for the model side: a small catalog and a deterministic recommender.

The real vLLM engine is covered by the integration tests; here the model only has to honour
the ``Recommender`` contract (k distinct catalog items per history, best first).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import httpx
import redis
from fastapi import FastAPI
from redis.asyncio.cluster import RedisCluster

from model.catalog import Catalog, CatalogItem
from model.recommender import RankRequest, Recommender, ScoredItem
from model.semantic_id import SidScheme
from service.engine.connect import engine_max_batch
from service.engine.runner import LocalRecommender
from service.redis_client import RedisClient, parse_cluster_url
from service.settings import Settings

NUM_ITEMS = 30
MODEL_VERSION = "test-v1"
SCHEME = SidScheme((4, 4, 2))


# item i's category is CATEGORIES[i % 3]
CATEGORIES = ("Beauty, Skin Care", "Beauty, Hair Care", "Tools")


def make_catalog(num_items: int = NUM_ITEMS) -> Catalog:
    """Items ``i0..i{n-1}`` with unique semantic IDs, distinct popularity (i0 most popular) and
    a category (CATEGORIES, by ``i % 3``)."""
    items = [
        CatalogItem(
            item_id=f"i{i}",
            title=f"Item {i}",
            sid=(i // 8, (i // 2) % 4, i % 2),
            popularity=100 - i,
            category=CATEGORIES[i % 3],
        )
        for i in range(num_items)
    ]
    return Catalog(SCHEME, items)


class HashRecommender:
    """Ranks every catalog item by a hash of (history, item): deterministic, history-dependent.

    Records each call's histories (``calls``; ranking requests in ``rank_calls``), and fails
    loudly if called from two threads at once (the real engine is not thread-safe).
    ``delay_s`` makes calls slow, for timeout tests.
    """

    def __init__(self, catalog: Catalog, model_version: str = MODEL_VERSION, delay_s: float = 0.0) -> None:
        self._catalog = catalog
        self._model_version = model_version
        self.delay_s = delay_s
        self.calls: list[list[list[str]]] = []
        self.rank_calls: list[list[tuple[list[str], list[str]]]] = []
        self._busy = threading.Lock()

    @property
    def model_version(self) -> str:
        return self._model_version

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def top_k(self, history: Sequence[str], k: int) -> list[ScoredItem]:
        """The ``k`` best items for one history: what ``recommend`` returns for it (no call recorded)."""
        seed = "|".join(history)

        def key(item_id: str) -> int:
            return int.from_bytes(hashlib.sha256(f"{seed}#{item_id}".encode()).digest()[:8], "big")

        ranked = sorted((item.item_id for item in self._catalog), key=key)[:k]
        return [ScoredItem(item_id=item_id, score=-0.5 * (rank + 1)) for rank, item_id in enumerate(ranked)]

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        with self._exclusive():
            self.calls.append([list(h) for h in histories])
            self._delay()
            return [self.top_k(history, k) for history in histories]

    def rank(self, requests: Sequence[RankRequest]) -> list[list[ScoredItem]]:
        """Each request's candidates (deduplicated) with the score ``recommend`` gives them, best first.

        Scores are those of the full-catalog ranking, so a candidate in a history's top-K has
        the same score in both, as with the real engine. Unknown candidates raise ValueError.
        """
        unknown = list(dict.fromkeys(c for _, cands in requests for c in cands if c not in self._catalog))
        if unknown:
            raise ValueError(f"candidates not in the catalog: {unknown}")
        with self._exclusive():
            self.rank_calls.append([(list(h), list(c)) for h, c in requests])
            self._delay()
            results = []
            for history, candidates in requests:
                score = {s.item_id: s.score for s in self.top_k(history, len(self._catalog))}
                unique = list(dict.fromkeys(candidates))
                results.append(sorted((ScoredItem(c, score[c]) for c in unique), key=lambda s: -s.score))
            return results

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Fail loudly if two threads are inside the (not thread-safe) engine at once."""
        if not self._busy.acquire(blocking=False):
            raise AssertionError("recommender called concurrently from two threads")
        try:
            yield
        finally:
            self._busy.release()

    def _delay(self) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)


@asynccontextmanager
async def open_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app with its lifespan running (ASGITransport alone skips it)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://genrec.test") as client,
    ):
        yield client


def run_locally(recommender: Recommender, settings: Settings) -> LocalRecommender:
    """``recommender`` run in process as the API runs it: its engine timeout and batch size."""
    return LocalRecommender(recommender, settings.engine_timeout_s, engine_max_batch(settings))


def sync_client(url: str) -> redis.Redis | redis.RedisCluster:
    """A blocking client for ``url``, a Redis server or a ``redis+cluster://`` cluster (for code
    that runs in a worker thread, as the engine does)."""
    cluster = parse_cluster_url(url)
    if cluster is None:
        return redis.Redis.from_url(url)
    return redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in cluster.nodes])


async def command_calls(client: RedisClient, command: str) -> int:
    """How many times Redis ran ``command`` (lower case, e.g. "exec"), over every master of a cluster."""
    if isinstance(client, RedisCluster):
        per_node = await client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        stats = list(per_node.values())
    else:
        stats = [await client.info("commandstats")]
    return sum(int(node.get(f"cmdstat_{command}", {}).get("calls", 0)) for node in stats)
