"""In-test stand-ins for the model side: a small catalog and a deterministic recommender.

The real vLLM engine is covered by the integration tests; here the model only has to honour
the ``Recommender`` contract (k distinct catalog items per history, best first).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from model.catalog import Catalog, CatalogItem
from model.recommender import ScoredItem
from model.semantic_id import SidScheme

NUM_ITEMS = 30
MODEL_VERSION = "test-v1"
SCHEME = SidScheme((4, 4, 2))


def make_catalog(num_items: int = NUM_ITEMS) -> Catalog:
    """Items ``i0..i{n-1}`` with unique semantic IDs and distinct popularity (i0 most popular)."""
    items = [
        CatalogItem(
            item_id=f"i{i}",
            title=f"Item {i}",
            sid=(i // 8, (i // 2) % 4, i % 2),
            popularity=100 - i,
        )
        for i in range(num_items)
    ]
    return Catalog(SCHEME, items)


class HashRecommender:
    """Ranks every catalog item by a hash of (history, item): deterministic, history-dependent.

    Records each call's histories, and fails loudly if called from two threads at once (the
    real engine is not thread-safe). ``delay_s`` makes calls slow, for timeout tests.
    """

    def __init__(self, catalog: Catalog, model_version: str = MODEL_VERSION, delay_s: float = 0.0) -> None:
        self._catalog = catalog
        self._model_version = model_version
        self.delay_s = delay_s
        self.calls: list[list[list[str]]] = []
        self._busy = threading.Lock()

    @property
    def model_version(self) -> str:
        return self._model_version

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def rank(self, history: Sequence[str], k: int) -> list[ScoredItem]:
        seed = "|".join(history)

        def key(item_id: str) -> int:
            return int.from_bytes(hashlib.sha256(f"{seed}#{item_id}".encode()).digest()[:8], "big")

        ranked = sorted((item.item_id for item in self._catalog), key=key)[:k]
        return [ScoredItem(item_id=item_id, score=-0.5 * (rank + 1)) for rank, item_id in enumerate(ranked)]

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[ScoredItem]]:
        if not self._busy.acquire(blocking=False):
            raise AssertionError("recommender called concurrently from two threads")
        try:
            self.calls.append([list(h) for h in histories])
            if self.delay_s:
                time.sleep(self.delay_s)
            return [self.rank(history, k) for history in histories]
        finally:
            self._busy.release()


@asynccontextmanager
async def open_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app with its lifespan running (ASGITransport alone skips it)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://genrec.test") as client,
    ):
        yield client
